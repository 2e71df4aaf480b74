//! The connection layer: where connections come from ([`Connector`]: the store's own
//! pool (`pool.rs`) or a caller's, their settings and TLS), the owner of one connection
//! and the state it is in ([`Conn`], [`Request`]), the cancel request of a connection
//! given up, sent over the TLS the connection was made with (`cancel.rs`), the typed
//! pipeline that writes several statements in one round trip ([`Pipeline`]), reads on
//! the read replica ([`WriteToken`], `replica.rs`), the requests' deadlines, watched by
//! one thread (`deadlines.rs`), and the timer that keeps the waits left on tokio timers
//! from waking the runtime (`anchor.rs`).
//!
//! May use: the error map and leaf helpers. Nothing here knows documents, events,
//! sessions or the store; the store owns a [`Connector`] and lends it.

mod anchor;
mod cancel;
mod conn;
mod connector;
mod db;
mod deadlines;
mod pipeline;
mod pool;
mod pooled;
mod replica;
mod statements;
mod tls;

pub(crate) use cancel::cancel_then_drop;
pub use conn::Conn;
pub(crate) use conn::{timed_out, unanswered, within, Request};
pub(crate) use connector::{Connector, Dedicated, DirectConnections, Replica};
pub(crate) use db::Db;
pub(crate) use pipeline::{Answers, Done, Handle, Pipeline, Rows};
pub(crate) use pool::PoolSettings;
pub use pool::{AfterConnect, AfterConnectFuture};
pub(crate) use pooled::Pooled;
pub use replica::WriteToken;
pub(crate) use replica::WRITE_POSITION;
pub use statements::Pooler;
pub(crate) use statements::{SqlText, StatementKind, Statements, Stmt};
pub(crate) use tls::{split_connection_string, Tls, TlsSettings, UrlTls};
pub use tls::{SslMode, TlsBackend};
