//! The kinds of writing session, as zero-sized markers fixed at compile time: what a
//! second load of an id returns and whether loaded documents are tracked.

pub(crate) mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Lightweight {}
    impl Sealed for super::IdentityMap {}
    impl Sealed for super::DirtyTracking {}
}

/// How a session remembers loaded documents. Sealed: [`Lightweight`], [`IdentityMap`],
/// [`DirtyTracking`].
pub trait Tracking: sealed::Sealed + Send + Sync + 'static {
    /// Whether loads are answered from the session's identity map.
    #[doc(hidden)]
    const IDENTITY: bool;
    /// Whether the session owns loaded documents and saves the changed ones.
    #[doc(hidden)]
    const DIRTY: bool;
}

/// No identity map: every load queries.
#[derive(Debug)]
pub struct Lightweight;
/// Identity map: a second load of the same id is answered without a query.
#[derive(Debug)]
pub struct IdentityMap;
/// Dirty tracking: the session owns loaded documents and saves the changed ones.
#[derive(Debug)]
pub struct DirtyTracking;

impl Tracking for Lightweight {
    const IDENTITY: bool = false;
    const DIRTY: bool = false;
}
impl Tracking for IdentityMap {
    const IDENTITY: bool = true;
    const DIRTY: bool = false;
}
impl Tracking for DirtyTracking {
    const IDENTITY: bool = true;
    const DIRTY: bool = true;
}
