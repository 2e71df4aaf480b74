//! Where the session's state used to live: it is [`marten_core::session::SessionState`]
//! now, over the unit of work ([`crate::unit_of_work::SessionState`]). Kept for paths
//! still being moved (issue #13).

pub(crate) use crate::documents::serialize;
