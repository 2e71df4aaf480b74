//! The SQL text of every table and function marten owns, one file per table: pure text,
//! built once per type or store, tested without a database. The bottom layer of the
//! crate: it may use nothing of the crate but leaf helpers, and everything above reads
//! its statements from here.

pub mod def;
pub mod documents;
pub mod event_ddl;
pub mod events;
pub mod functions;
pub mod progression;
pub mod qualify;
