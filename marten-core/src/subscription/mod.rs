//! Subscriptions, the backend-neutral parts: which events a subscription is handed
//! ([`EventFilter`]), the stable id of each delivery a consumer deduplicates by
//! ([`DeliveryId`]), and how a handler reports a failure ([`HandlerError`]), which the
//! daemon's poison policy then meets as it meets a failing projection.
//!
//! A subscription consumes events without projecting them into documents (publish to a
//! broker, send mail, fill an outbox). The trait a subscription implements, and the
//! transaction it may write through, are the backend's (`marten_pg::subscriptions`).

mod delivery;
mod filter;
mod handler_error;

pub use delivery::DeliveryId;
pub use filter::EventFilter;
pub use handler_error::HandlerError;
