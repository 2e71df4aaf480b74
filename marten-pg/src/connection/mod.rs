//! The connection layer: where connections come from ([`Connector`]), the owner of one
//! connection and the state it is in ([`Conn`], [`Request`]), and the typed pipeline that
//! writes several statements in one round trip ([`Pipeline`]).
//!
//! May use: the error map and leaf helpers. Nothing here knows documents, events,
//! sessions or the store; the store owns a [`Connector`] and lends it.

mod conn;
mod connector;
mod pipeline;

pub use conn::Conn;
pub(crate) use conn::{timed_out, within, Request};
pub(crate) use connector::Connector;
pub(crate) use pipeline::{Answers, Done, Handle, Pipeline, Rows};
