//! Backend-neutral core of marten.
//!
//! This crate holds what every backend shares: the [`Document`] trait that
//! `#[derive(Document)]` implements, the concurrency modes as zero-sized types
//! ([`concurrency`]), document ids ([`DocumentId`]), document metadata and the
//! [`Error`] type. It knows nothing about SQL.

#![warn(missing_docs)]

pub mod aggregate;
pub mod concurrency;
mod document;
mod error;
mod event;
mod id;
mod metadata;
#[doc(hidden)]
pub mod newtype;
pub mod patch;
pub mod projection;
pub mod query;
pub mod session;
mod stream;
pub mod subscription;
mod tag;
pub mod tenant;

pub use aggregate::{Aggregate, AggregateId, Apply, ApplyError, Identities};
pub use concurrency::ConcurrencyMode;
pub use document::{Document, IndexSpec, SoftDeleted};
pub use error::{
    ConflictKind, DatabaseError, Error, Rejection, RejectionKind, Result, SchemaDifference,
    TlsFailure, WithSources,
};
pub use event::{AnyEvent, DecodeFn, Event, EventDecoder, EventEnvelope};
pub use id::{DocumentId, IdKey, MAX_ID_BYTES};
pub use metadata::DocumentMetadata;
pub use stream::{StreamId, StreamIdentity, StreamState};
pub use tag::{plain_tag, EventTag, Tag};
pub use tenant::{Tenancy, TenantId};
