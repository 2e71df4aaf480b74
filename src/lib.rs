#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

extern crate self as marten;

pub use marten_core::concurrency;
pub use marten_core::{
    ConcurrencyMode, DatabaseError, Document, DocumentId, DocumentMetadata, Error, IdKey,
    Rejection, RejectionKind, Result,
};
pub use marten_derive::Document;
pub use marten_pg::{
    AutoCreate, DirtyTrackedSession, DirtyTracking, DocumentStore, DocumentStoreBuilder,
    IdentityMap, IdentitySession, Lightweight, LightweightSession, PgDocument, QuerySession,
    Session, SessionOptions, Tracking,
};

/// The storage types a document's concurrency mode selects (see the README, "Modes as
/// types").
pub mod storage {
    pub use marten_pg::{
        DocumentStorage, NumericStorage, OffStorage, OptimisticStorage, WriteKind,
    };
}

/// Everything a typical program needs: `use marten::prelude::*;`.
pub mod prelude {
    pub use crate::{
        AutoCreate, Document, DocumentStore, Error, IdentitySession, LightweightSession,
        QuerySession, SessionOptions,
    };
    pub use uuid::Uuid;
}

/// Re-exports of dependencies users' types need.
pub use {serde, serde_json, time, uuid};

/// Paths used by code that `#[derive(Document)]` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use marten_core::concurrency;
    pub use marten_core::{Document, DocumentId};
    pub use marten_pg::{
        DocumentStorage, NumericStorage, OffStorage, OptimisticStorage, PgDocument,
    };
    pub use std::sync::OnceLock;

    /// Fails to compile, at the id field's type, when it is not a supported id type.
    pub fn assert_document_id<T: DocumentId>() {}
}
