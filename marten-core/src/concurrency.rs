//! Concurrency modes as types.
//!
//! A document's mode is chosen by `#[concurrency(...)]` on its derive and becomes the
//! associated type [`Document::Mode`](crate::Document::Mode). Each mode is a zero-sized
//! marker with an associated [`ConcurrencyMode::Version`]; backends implement their
//! storage per marker, so the mode is resolved by the compiler and never inspected at run
//! time. The trait is sealed: the three modes below are the only ones.

use std::fmt::{Debug, Display};
use std::hash::Hash;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Optimistic {}
    impl Sealed for super::Numeric {}
    impl Sealed for super::Off {}
}

/// A concurrency mode. Sealed: implemented by [`Optimistic`], [`Numeric`] and [`Off`] only.
pub trait ConcurrencyMode: sealed::Sealed + Send + Sync + 'static {
    /// The version a write of this mode asserts: `Uuid`, `i64` or `()`.
    type Version: Copy + Debug + Display + PartialEq + Eq + Hash + Default + Send + Sync + 'static;
    /// The writes this mode offers: [`BasicWrite`], or [`NumericWrite`] for [`Numeric`],
    /// the only mode that can name the revision writes.
    type Write: Copy + Eq + Debug + Send + Sync + 'static + From<BasicWrite>;
}

/// The writes every mode offers, and all that off and optimistic documents offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasicWrite {
    /// Insert or update.
    Upsert,
    /// Insert; an existing id is rejected.
    Insert,
    /// Update; a missing document is rejected.
    Update,
}

/// The writes of numeric documents: the basic writes and the two revision writes, which
/// no other mode can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericWrite {
    /// A write every mode offers.
    Basic(BasicWrite),
    /// Write at a given revision, rejected unless above the stored one.
    UpdateRevision,
    /// Write at a given revision if above the stored one, else nothing.
    TryUpdateRevision,
}

impl From<BasicWrite> for NumericWrite {
    fn from(kind: BasicWrite) -> Self {
        NumericWrite::Basic(kind)
    }
}

/// Optimistic concurrency: every write stores a new random `Uuid` version and a write with
/// a known version succeeds only while the stored version still equals it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Optimistic;

/// Numeric revisions: the revision is 1 on insert and grows by exactly 1 per write; a
/// write with a known revision succeeds only while the stored revision still equals it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Numeric;

/// No concurrency check: the last writer wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct Off;

/// The version type of [`Off`]: there is nothing to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NoVersion;

impl Display for NoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("none")
    }
}

impl ConcurrencyMode for Optimistic {
    type Version = uuid::Uuid;
    type Write = BasicWrite;
}

impl ConcurrencyMode for Numeric {
    type Version = i64;
    type Write = NumericWrite;
}

impl ConcurrencyMode for Off {
    type Version = NoVersion;
    type Write = BasicWrite;
}

/// A mode with versions ([`Optimistic`] or [`Numeric`]): only documents of these modes
/// can be stored with an expected version.
#[diagnostic::on_unimplemented(
    message = "documents with `#[concurrency(off)]` have no version to check",
    label = "this document's concurrency mode is `{Self}`",
    note = "use `#[concurrency(optimistic)]` or `#[concurrency(numeric)]` on the document to store it with a version"
)]
pub trait VersionedMode: ConcurrencyMode {}

impl VersionedMode for Optimistic {}
impl VersionedMode for Numeric {}

/// The numeric mode, for operations on revisions (`update_revision`).
#[diagnostic::on_unimplemented(
    message = "`update_revision` needs a document with `#[concurrency(numeric)]`",
    label = "this document's concurrency mode is `{Self}`",
    note = "revisions are numeric versions; optimistic documents use `store_with_version`"
)]
pub trait NumericMode:
    VersionedMode + ConcurrencyMode<Version = i64, Write = NumericWrite>
{
}

impl NumericMode for Numeric {}

/// The version type of a document type `D`.
pub type VersionOf<D> = <<D as crate::Document>::Mode as ConcurrencyMode>::Version;

/// The writes document type `D` offers: [`BasicWrite`] or [`NumericWrite`].
pub type WriteOf<D> = <<D as crate::Document>::Mode as ConcurrencyMode>::Write;
