//! Loading documents on a session: by id and by ids, per session kind (a lightweight
//! session always queries, an identity session answers repeats from its map, a
//! dirty-tracked session hands out the documents it tracks), and their metadata.

use std::sync::Arc;

use marten_core::concurrency::VersionOf;
use marten_core::session::Tracked;
use marten_core::{DocumentMetadata, Error, Result};

use super::{DirtyTracking, IdentityMap, Lightweight, Session, Tracking};
use crate::connection::Conn;
use crate::documents::load::{self, check_id, Loaded};
use crate::documents::{serialize, PgDocument};
use crate::store::DocumentStore;

impl<K: Tracking> Session<K> {
    /// Reads the stored version and last-modified time of a document.
    pub async fn metadata<D: PgDocument>(
        &mut self,
        id: &D::Id,
    ) -> Result<Option<DocumentMetadata<VersionOf<D>>>> {
        metadata_on::<D>(&self.store, &mut self.conn, id).await
    }

    async fn fetch<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<Loaded<D>>> {
        self.store.ensure::<D>().await?;
        let loaded = self
            .conn
            .run(&self.store, async |c| load::load_one::<D>(c, id).await)
            .await?;
        if let Some(l) = &loaded {
            self.remember(l);
        }
        Ok(loaded)
    }

    async fn fetch_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<Loaded<D>>> {
        self.store.ensure::<D>().await?;
        let loaded = self
            .conn
            .run(&self.store, async |c| load::load_many::<D>(c, ids).await)
            .await?;
        for l in &loaded {
            self.remember(l);
        }
        Ok(loaded)
    }

    fn remember<D: PgDocument>(&mut self, loaded: &Loaded<D>) {
        let state = self.state.doc_state::<D>();
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

fn decode_json<D: PgDocument>(id: &D::Id, json: &[u8]) -> Result<D> {
    serde_json::from_slice(json).map_err(|source| Error::Deserialize {
        document_type: D::DOCUMENT_TYPE,
        id: id.to_string(),
        source,
    })
}

impl Session<Lightweight> {
    /// Loads a document by id (one query every time).
    pub async fn load<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<D>> {
        Ok(self.fetch::<D>(id).await?.map(|l| l.doc))
    }

    /// Loads the documents with the given ids that exist.
    pub async fn load_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<D>> {
        Ok(self
            .fetch_many::<D>(ids)
            .await?
            .into_iter()
            .map(|l| l.doc)
            .collect())
    }
}

impl Session<IdentityMap> {
    /// Loads a document by id; a second load of the same id (or of a stored document) is
    /// answered from the identity map without a query.
    pub async fn load<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<D>> {
        check_id::<D>(id)?;
        if let Some(json) = self.state.doc_state::<D>().identity.get(id).cloned() {
            return decode_json::<D>(id, &json).map(Some);
        }
        Ok(self.fetch::<D>(id).await?.map(|l| l.doc))
    }

    /// Loads several documents, querying only for ids not yet in the identity map.
    pub async fn load_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<D>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.state.doc_state::<D>().identity.get(id).cloned() {
                Some(json) => out.push(decode_json::<D>(id, &json)?),
                None => missing.push(id.clone()),
            }
        }
        out.extend(
            self.fetch_many::<D>(&missing)
                .await?
                .into_iter()
                .map(|l| l.doc),
        );
        Ok(out)
    }
}

impl Session<DirtyTracking> {
    /// Takes a loaded document into the tracker, with its serialization as the snapshot
    /// changes are compared with.
    fn track<D: PgDocument>(&mut self, loaded: Loaded<D>) -> Result<()> {
        let snapshot = serialize(&loaded.doc)?;
        let tracked = Tracked {
            doc: loaded.doc,
            snapshot,
        };
        self.state
            .doc_state::<D>()
            .tracked
            .insert(loaded.id, tracked);
        Ok(())
    }

    /// Loads a document into the session and lends it out: change it in place and
    /// `save_changes` writes it. A second load of the same id makes no query.
    pub async fn load<D: PgDocument>(&mut self, id: &D::Id) -> Result<Option<&mut D>> {
        check_id::<D>(id)?;
        if !self.state.doc_state::<D>().tracked.contains_key(id) {
            let Some(loaded) = self.fetch::<D>(id).await? else {
                return Ok(None);
            };
            self.track(loaded)?;
        }
        Ok(self
            .state
            .doc_state::<D>()
            .tracked
            .get_mut(id)
            .map(|t| &mut t.doc))
    }

    /// Loads several documents into the session (see [`load`](Self::load)).
    pub async fn load_many<D: PgDocument>(&mut self, ids: &[D::Id]) -> Result<Vec<&mut D>> {
        let missing: Vec<D::Id> = {
            let tracked = &self.state.doc_state::<D>().tracked;
            ids.iter()
                .filter(|id| !tracked.contains_key(*id))
                .cloned()
                .collect()
        };
        for loaded in self.fetch_many::<D>(&missing).await? {
            self.track(loaded)?;
        }
        let wanted: std::collections::HashSet<&D::Id> = ids.iter().collect();
        Ok(self
            .state
            .doc_state::<D>()
            .tracked
            .iter_mut()
            .filter(|(id, _)| wanted.contains(id))
            .map(|(_, t)| &mut t.doc)
            .collect())
    }

    /// A tracked document, without a query.
    pub fn get_mut<D: PgDocument>(&mut self, id: &D::Id) -> Option<&mut D> {
        self.state
            .doc_state::<D>()
            .tracked
            .get_mut(id)
            .map(|t| &mut t.doc)
    }
}

/// Reads the stored version and last-modified time of a document on `conn`.
pub(super) async fn metadata_on<D: PgDocument>(
    store: &DocumentStore,
    conn: &mut Conn,
    id: &D::Id,
) -> Result<Option<DocumentMetadata<VersionOf<D>>>> {
    store.ensure::<D>().await?;
    conn.run(store, async |c| load::metadata::<D>(c, id).await)
        .await
}
