//! The database names each document type takes (its table, its indexes and its
//! duplicated columns) as PostgreSQL stores them, cut to 63 bytes, and the claims a store
//! keeps on them: a store refuses a second type that would share one of them, where it
//! would otherwise read (and fail to deserialize) or overwrite the first type's rows.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};

use marten_core::{Error, Result};
use rustc_hash::FxHashMap;

use crate::tables::documents::{full_text_index_name, gin_index_name, index_name};
use crate::tables::event_ddl::{TENANT_TX_SEQ_INDEX, TX_SEQ_INDEX};
use crate::tables::INTERNAL_TABLES;

/// PostgreSQL's identifier limit in bytes (`NAMEDATALEN - 1`); longer names are cut.
const MAX_IDENTIFIER: usize = 63;

/// The tables and indexes marten creates for itself, which no document may take.
const INTERNAL: [&str; 9] = {
    let t = INTERNAL_TABLES;
    [
        t[0],
        t[1],
        t[2],
        t[3],
        t[4],
        t[5],
        t[6],
        TX_SEQ_INDEX,
        TENANT_TX_SEQ_INDEX,
    ]
};

/// Who owns marten's own tables, in errors.
const INTERNAL_OWNER: &str = "marten (its event store, daemon and HiLo tables)";

/// `name` as PostgreSQL stores it: cut to 63 bytes at a character boundary.
pub(crate) fn truncated(name: &str) -> &str {
    let mut end = name.len().min(MAX_IDENTIFIER);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The names one document type takes.
#[derive(Debug)]
pub(crate) struct DocumentNames {
    /// `std::any::type_name` of the type.
    type_name: &'static str,
    /// The table, as statements name it.
    table: &'static str,
    /// Schema-wide names (the table and its indexes), truncated.
    relations: Vec<String>,
    /// A name two of the type's own indexes or columns would share, if any.
    own_conflict: Option<String>,
}

impl DocumentNames {
    fn of<D: marten_core::Document>() -> Self {
        let table = D::TABLE_NAME;
        // The primary key's name is chosen by PostgreSQL, which avoids taken names.
        let mut relations = vec![table.to_owned()];
        relations.extend(D::INDEXES.iter().map(|ix| index_name(table, ix)));
        if D::GIN_INDEX {
            relations.push(gin_index_name(table));
        }
        if D::FULL_TEXT.is_some() {
            relations.push(full_text_index_name(table));
        }
        let columns = D::INDEXES.iter().map(|ix| ix.column.to_owned());
        let mut own_conflict = None;
        let mut seen = std::collections::HashSet::new();
        let mut kept = Vec::with_capacity(relations.len());
        for name in relations {
            let name = truncated(&name).to_owned();
            if seen.insert(name.clone()) {
                kept.push(name);
            } else {
                own_conflict.get_or_insert(name);
            }
        }
        let mut seen_columns = std::collections::HashSet::new();
        for column in columns {
            let column = truncated(&column).to_owned();
            if !seen_columns.insert(column.clone()) {
                own_conflict.get_or_insert(format!("{table}.{column}"));
            }
        }
        DocumentNames {
            type_name: std::any::type_name::<D>(),
            table,
            relations: kept,
            own_conflict,
        }
    }
}

// Fx: a `TypeId` is already a hash, and the lookup runs on every write.
type Registry = RwLock<FxHashMap<TypeId, &'static DocumentNames>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// Records the names of `D` (computed once per type) for [`Claims::claim`], which knows
/// a type only by its `TypeId`.
pub(crate) fn register<D: marten_core::Document>() {
    let id = TypeId::of::<D>();
    let known = registry()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .contains_key(&id);
    if !known {
        registry()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert_with(|| Box::leak(Box::new(DocumentNames::of::<D>())));
    }
}

/// The table of a document type known by its `TypeId` (from [`register`]).
pub(crate) fn table_of(type_id: TypeId) -> Option<&'static str> {
    registry()
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&type_id)
        .map(|names| names.table)
}

/// The names a store's document types have taken: name -> (type, its Rust name).
#[derive(Debug)]
pub(crate) struct Claims(Mutex<HashMap<String, (TypeId, &'static str)>>);

impl Claims {
    /// Claims for a new store: marten's own tables, then each of `types` in turn (the
    /// first of two types that share a name keeps it, the second is an error).
    pub(crate) fn new(types: impl IntoIterator<Item = TypeId>) -> Result<Self> {
        let owner = (TypeId::of::<Claims>(), INTERNAL_OWNER);
        let claims = Claims(Mutex::new(
            INTERNAL.iter().map(|n| ((*n).to_owned(), owner)).collect(),
        ));
        for type_id in types {
            claims.claim(type_id)?;
        }
        Ok(claims)
    }

    /// Claims the names of a document type (known from [`register`]; other types, like
    /// the event tables, claim nothing). Fails, claiming nothing, when another type has
    /// one of them or two of the type's own names collide.
    pub(crate) fn claim(&self, type_id: TypeId) -> Result<()> {
        let found = registry()
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&type_id)
            .copied();
        let Some(names) = found else {
            return Ok(());
        };
        if let Some(name) = &names.own_conflict {
            return Err(Error::NameConflict {
                first: names.type_name,
                second: names.type_name,
                name: name.clone(),
            });
        }
        let mut claims = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for name in &names.relations {
            if let Some((owner, first)) = claims.get(name) {
                if *owner != type_id {
                    return Err(Error::NameConflict {
                        first,
                        second: names.type_name,
                        name: name.clone(),
                    });
                }
            }
        }
        for name in &names.relations {
            claims.insert(name.clone(), (type_id, names.type_name));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::truncated;

    #[test]
    fn names_are_cut_to_63_bytes_at_a_character_boundary() {
        assert_eq!(truncated("short"), "short");
        let long = "a".repeat(70);
        assert_eq!(truncated(&long).len(), 63);
        // 62 ASCII bytes then a two-byte character: cut before it.
        let multi = format!("{}é", "a".repeat(62));
        assert_eq!(truncated(&multi), "a".repeat(62));
    }
}
