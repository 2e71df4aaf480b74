//! A web console for a marten store: find a stream, read its events with their metadata,
//! query documents of the types the host registers, watch each projection's position,
//! lag, owner and rate, see why a dead letter failed, and follow a tag's events.
//!
//! Server-rendered HTML on axum with one small embedded script (the projections page's
//! live bars); the stylesheet and script are compiled into the binary. Read-only by
//! default: the actions that change data (retry a dead letter, rebuild a projection) are
//! off unless the host turns them on, POST only, each behind a confirmation page and a
//! per-console token.
//!
//! ```no_run
//! # async fn demo(store: marten_pg::DocumentStore) -> Result<(), Box<dyn std::error::Error>> {
//! use marten_console::Console;
//! let console = Console::builder(&store).build();
//! // Mount it in a service: `app.nest("/console", console.router())` (with
//! // `.base_path("/console")` on the builder; without an auth hook, served with
//! // `app.into_make_service_with_connect_info::<SocketAddr>()`), or serve it on its own:
//! let bound = console.bind(([127, 0, 0, 1], 7070).into()).await?;
//! println!("console at {}", bound.url()?);
//! bound.serve().await?;
//! # Ok(()) }
//! ```
//!
//! Security: [`Console::bind`] refuses an address other than loopback unless the host
//! gave its own authentication middleware ([`ConsoleBuilder::auth`]); without one, a
//! mounted [`Console::router`] answers loopback peers only (read from axum's
//! `ConnectInfo`: serve the app with `into_make_service_with_connect_info`), and every
//! route refuses a request whose `Host` is not a loopback name, the bound address or one
//! of [`ConsoleBuilder::allowed_hosts`] (421, against DNS rebinding); every response
//! forbids framing (`X-Frame-Options: DENY`, `frame-ancestors 'none'`, against
//! clickjacking of the actions' confirmation pages); every statement is parameterized;
//! every value written into a page is escaped (see [`html`]).
//!
//! Layout: `builder.rs` (options, document registration, auth hook), `console.rs` (the
//! router, binding), `bind.rs` (serving), `router.rs` (routes and embedded assets),
//! `html.rs` (escaping and layout), `pages/*.rs` (one page and its SQL each),
//! `host.rs` (the `Host` and peer checks), `actions.rs`, `lag.rs` (the sampled lag history), `tables.rs` (quoted table names).
#![warn(missing_docs)]

mod actions;
mod bind;
mod builder;
mod console;
pub mod documents;
mod error;
mod host;
pub mod html;
pub mod lag;
mod options;
mod pages;
mod router;
mod slots;
mod state;
pub mod tables;

pub use bind::BoundConsole;
pub use builder::ConsoleBuilder;
pub use console::Console;
pub use documents::{Op, QueryField};
pub use error::ConsoleError;
pub use options::ConsoleOptions;
pub use slots::{read_slots, read_slots_page, SlotRow};
