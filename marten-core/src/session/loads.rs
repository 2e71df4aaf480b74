//! Loading documents on a session: by id and by ids, per session kind (a lightweight
//! session always queries, an identity session answers repeats from its map, a
//! dirty-tracked session hands out the documents it tracks), and their metadata.

use std::collections::HashSet;
use std::sync::Arc;

use super::backend::{Backend, DocumentBackend, Loaded};
use super::kinds::{DirtyTracking, IdentityMap, Lightweight, Tracking};
use super::parts::Session;
use super::state::Tracked;
use super::writes::check_id;
use crate::concurrency::VersionOf;
use crate::{Document, DocumentMetadata, Error, Result};

impl<B: Backend, K: Tracking> Session<B, K> {
    /// Reads the stored version and last-modified time of a document, and whether it is
    /// marked deleted (a soft-deleted type's marked document has metadata too).
    pub async fn metadata<D: Document>(
        &mut self,
        id: &D::Id,
    ) -> Result<Option<DocumentMetadata<VersionOf<D>>>>
    where
        B: DocumentBackend<D>,
    {
        let parts = self.parts_mut();
        B::metadata(&parts.store, &mut parts.conn, id).await
    }

    async fn fetch<D: Document>(&mut self, id: &D::Id) -> Result<Option<Loaded<D>>>
    where
        B: DocumentBackend<D>,
    {
        let parts = self.parts_mut();
        let loaded = B::load(&parts.store, &mut parts.conn, id).await?;
        if let Some(l) = &loaded {
            self.remember(l);
        }
        Ok(loaded)
    }

    async fn fetch_many<D: Document>(&mut self, ids: &[D::Id]) -> Result<Vec<Loaded<D>>>
    where
        B: DocumentBackend<D>,
    {
        let parts = self.parts_mut();
        let loaded = B::load_many(&parts.store, &mut parts.conn, ids).await?;
        for l in &loaded {
            self.remember(l);
        }
        Ok(loaded)
    }

    /// Remembers a loaded document's version and, with an identity map, its JSON.
    fn remember<D: Document>(&mut self, loaded: &Loaded<D>)
    where
        B: DocumentBackend<D>,
    {
        let state = self.parts_mut().state.doc_state::<D>();
        if let Some(v) = loaded.version {
            state.versions.insert(loaded.id.clone(), v);
        }
        if K::IDENTITY {
            state
                .identity
                .insert(loaded.id.clone(), Arc::from(loaded.json.as_slice()));
        }
    }
}

fn decode_json<D: Document>(id: &D::Id, json: &[u8]) -> Result<D> {
    serde_json::from_slice(json).map_err(|source| Error::Deserialize {
        document_type: D::DOCUMENT_TYPE,
        id: id.to_string(),
        source,
    })
}

impl<B: Backend> Session<B, Lightweight> {
    /// Loads a document by id (one query every time).
    pub async fn load<D: Document>(&mut self, id: &D::Id) -> Result<Option<D>>
    where
        B: DocumentBackend<D>,
    {
        Ok(self.fetch::<D>(id).await?.map(|l| l.doc))
    }

    /// Loads the documents with the given ids that exist.
    pub async fn load_many<D: Document>(&mut self, ids: &[D::Id]) -> Result<Vec<D>>
    where
        B: DocumentBackend<D>,
    {
        let loaded = self.fetch_many::<D>(ids).await?;
        Ok(loaded.into_iter().map(|l| l.doc).collect())
    }
}

impl<B: Backend> Session<B, IdentityMap> {
    /// Loads a document by id; a second load of the same id (or of a stored document) is
    /// answered from the identity map without a query.
    pub async fn load<D: Document>(&mut self, id: &D::Id) -> Result<Option<D>>
    where
        B: DocumentBackend<D>,
    {
        check_id::<D>(id)?;
        let known = self
            .parts_mut()
            .state
            .doc_state::<D>()
            .identity
            .get(id)
            .cloned();
        if let Some(json) = known {
            return decode_json::<D>(id, &json).map(Some);
        }
        Ok(self.fetch::<D>(id).await?.map(|l| l.doc))
    }

    /// Loads several documents, querying only for ids not yet in the identity map. Each
    /// existing document comes once, however often its id is given (as in every session).
    pub async fn load_many<D: Document>(&mut self, ids: &[D::Id]) -> Result<Vec<D>>
    where
        B: DocumentBackend<D>,
    {
        let mut out = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        let mut seen: HashSet<&D::Id> = HashSet::with_capacity(ids.len());
        for id in ids {
            if !seen.insert(id) {
                continue;
            }
            match self
                .parts_mut()
                .state
                .doc_state::<D>()
                .identity
                .get(id)
                .cloned()
            {
                Some(json) => out.push(decode_json::<D>(id, &json)?),
                None => missing.push(id.clone()),
            }
        }
        let loaded = self.fetch_many::<D>(&missing).await?;
        out.extend(loaded.into_iter().map(|l| l.doc));
        Ok(out)
    }
}

impl<B: Backend> Session<B, DirtyTracking> {
    /// Takes a loaded document into the tracker, with its serialization as the snapshot
    /// changes are compared with.
    fn track<D: Document>(&mut self, loaded: Loaded<D>) -> Result<()>
    where
        B: DocumentBackend<D>,
    {
        let snapshot = B::serialize(&loaded.doc)?;
        let tracked = Tracked {
            doc: loaded.doc,
            snapshot,
        };
        let state = self.parts_mut().state.doc_state::<D>();
        state.tracked.insert(loaded.id, tracked);
        Ok(())
    }

    /// Loads a document into the session and lends it out: change it in place and
    /// `save_changes` writes it. A second load of the same id makes no query.
    pub async fn load<D: Document>(&mut self, id: &D::Id) -> Result<Option<&mut D>>
    where
        B: DocumentBackend<D>,
    {
        check_id::<D>(id)?;
        if !self
            .parts_mut()
            .state
            .doc_state::<D>()
            .tracked
            .contains_key(id)
        {
            let Some(loaded) = self.fetch::<D>(id).await? else {
                return Ok(None);
            };
            self.track(loaded)?;
        }
        Ok(self.get_mut::<D>(id))
    }

    /// Loads several documents into the session (see [`load`](Self::load)).
    pub async fn load_many<D: Document>(&mut self, ids: &[D::Id]) -> Result<Vec<&mut D>>
    where
        B: DocumentBackend<D>,
    {
        let missing: Vec<D::Id> = {
            let tracked = &self.parts_mut().state.doc_state::<D>().tracked;
            ids.iter()
                .filter(|id| !tracked.contains_key(*id))
                .cloned()
                .collect()
        };
        for loaded in self.fetch_many::<D>(&missing).await? {
            self.track(loaded)?;
        }
        let wanted: HashSet<&D::Id> = ids.iter().collect();
        let tracked = &mut self.parts_mut().state.doc_state::<D>().tracked;
        Ok(tracked
            .iter_mut()
            .filter(|(id, _)| wanted.contains(id))
            .map(|(_, t)| &mut t.doc)
            .collect())
    }

    /// A tracked document, without a query.
    pub fn get_mut<D: Document>(&mut self, id: &D::Id) -> Option<&mut D>
    where
        B: DocumentBackend<D>,
    {
        let tracked = &mut self.parts_mut().state.doc_state::<D>().tracked;
        tracked.get_mut(id).map(|t| &mut t.doc)
    }
}
