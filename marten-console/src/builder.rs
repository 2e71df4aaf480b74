//! [`ConsoleBuilder`]: what a host decides about its console (the document types to show,
//! the [`ConsoleOptions`], the auth hook), and the built [`Console`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::Route;
use axum::Router;
use marten_core::query::HasFields;
use marten_pg::{DocumentStore, PgDocument};
use rand::RngCore;
use tower::{Layer, Service};

use crate::console::Console;
use crate::documents::{register, DocumentView, QueryField};
use crate::error::ConsoleError;
use crate::lag::{LagHistory, Sampler};
use crate::options::{normalise_base_path, AuthHook, ConsoleOptions};
use crate::state::State;
use crate::tables::Tables;

/// Builds a [`Console`] over a store.
pub struct ConsoleBuilder {
    store: DocumentStore,
    options: ConsoleOptions,
    documents: Vec<Arc<dyn DocumentView>>,
    auth: Option<AuthHook>,
}

impl std::fmt::Debug for ConsoleBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleBuilder")
            .field("options", &self.options)
            .field("documents", &self.documents.len())
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A builder of a console over `store`.
    pub fn builder(store: &DocumentStore) -> ConsoleBuilder {
        ConsoleBuilder::new(store)
    }
}

impl ConsoleBuilder {
    /// A console over `store`, read-only, with no document type.
    pub fn new(store: &DocumentStore) -> Self {
        ConsoleBuilder {
            store: store.clone(),
            options: ConsoleOptions::default(),
            documents: Vec::new(),
            auth: None,
        }
    }

    /// Replaces the options.
    pub fn options(mut self, options: ConsoleOptions) -> Self {
        self.options = options;
        self
    }

    /// Turns the actions that change data on or off (off by default).
    pub fn actions(mut self, on: bool) -> Self {
        self.options.actions = on;
        self
    }

    /// The path the host mounts the console's router under (links start with it):
    /// `"/console"`, `"console/"` and `"/console/"` alike; `""` or `"/"` for the root.
    /// Checked when the console is built (see
    /// [`ConsoleOptions::base_path`](crate::ConsoleOptions::base_path)).
    pub fn base_path(mut self, path: impl Into<String>) -> Self {
        self.options.base_path = path.into();
        self
    }

    /// Adds names the console answers to (see
    /// [`ConsoleOptions::allowed_hosts`]): without an auth hook a request whose `Host` is
    /// not `localhost`, `127.0.0.1`, `[::1]`, the bound address or one of these is refused
    /// (421), against DNS rebinding; with an auth hook, giving any turns that check on.
    /// `.allowed_hosts(["console.internal", ".ops.example.com"])`.
    pub fn allowed_hosts<I>(mut self, hosts: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.options
            .allowed_hosts
            .extend(hosts.into_iter().map(Into::into));
        self
    }

    /// Shows documents of type `D` on the documents page, with a query box over the
    /// fields `fields` returns (built from the type's typed field paths:
    /// `|f| vec![QueryField::text(f.customer), QueryField::ordered(f.total)]`).
    pub fn document<D>(mut self, fields: impl FnOnce(D::Fields<D>) -> Vec<QueryField<D>>) -> Self
    where
        D: PgDocument + HasFields + serde::Serialize + Clone,
    {
        self.documents.push(register::<D>(fields));
        self
    }

    /// The host's own authentication middleware, applied to every route of the console
    /// (any tower layer axum's `Router::layer` takes). Required to bind to an address
    /// other than loopback ([`Console::bind`]). With it, the console no longer refuses
    /// a `Host` that is not loopback (the host exposes it deliberately) unless
    /// [`allowed_hosts`](Self::allowed_hosts) are given.
    pub fn auth<L>(mut self, layer: L) -> Self
    where
        L: Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: Service<Request> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as Service<Request>>::Error: Into<std::convert::Infallible> + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        self.auth = Some(Arc::new(move |r: Router| r.layer(layer.clone())));
        self
    }

    /// The console, or [`ConsoleError::InvalidBasePath`] when the base path is not one
    /// (see [`ConsoleOptions::base_path`](crate::ConsoleOptions::base_path)). Otherwise as
    /// [`build`](Self::build).
    pub fn try_build(self) -> Result<Console, ConsoleError> {
        normalise_base_path(&self.options.base_path)?;
        Ok(self.build())
    }

    /// The console. Inside a tokio runtime it starts sampling the projections' lag (a
    /// background task that ends when the console and its routers are dropped).
    ///
    /// The base path is normalised (see
    /// [`ConsoleOptions::base_path`](crate::ConsoleOptions::base_path)); an invalid one
    /// is logged, [`Console::bind`] then fails with [`ConsoleError::InvalidBasePath`] and
    /// every route of [`Console::router`] answers 500 with the reason
    /// ([`try_build`](Self::try_build) reports it at once).
    pub fn build(mut self) -> Console {
        let invalid_base = match normalise_base_path(&self.options.base_path) {
            Ok(path) => {
                self.options.base_path = path;
                None
            }
            Err(e) => {
                tracing::error!(error = %e, "console: invalid base path");
                self.options.base_path = String::new();
                Some(e)
            }
        };
        let tables = Arc::new(Tables::of(&self.store));
        let every = self.options.sample_every.max(Duration::from_millis(10));
        let capacity = (self.options.history.as_secs_f64() / every.as_secs_f64()).ceil();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let history = Arc::new(LagHistory::new((capacity as usize).clamp(2, 100_000)));
        let sampler = Sampler::spawn(
            self.store.clone(),
            tables.clone(),
            Arc::downgrade(&history),
            every,
        );
        let mut token = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut token);
        let token = token.iter().map(|b| format!("{b:02x}")).collect();
        let state = State {
            store: self.store,
            tables,
            options: self.options,
            documents: self.documents,
            token,
            history,
            _sampler: sampler,
        };
        Console::new(Arc::new(state), self.auth, invalid_base)
    }
}
