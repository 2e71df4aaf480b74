//! [`Console`]: the built console, mounted by the host as a router
//! ([`Console::router`]) or served on its own ([`Console::bind`]).

use std::net::{IpAddr, SocketAddr};

use axum::Router;

use crate::bind::BoundConsole;
use crate::error::ConsoleError;
use crate::host::{self, AllowedHosts};
use crate::options::AuthHook;
use crate::state::Shared;

/// The web console of a store. Cheap to clone; the lag sampler stops when the console and
/// every router made from it are dropped.
#[derive(Clone)]
pub struct Console {
    state: Shared,
    auth: Option<AuthHook>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("options", &self.state.options)
            .field("auth", &self.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl Console {
    pub(crate) fn new(state: Shared, auth: Option<AuthHook>) -> Self {
        Console { state, auth }
    }

    /// The console's routes (`/streams`, `/projections`, ...), behind the auth hook when
    /// one was given. Mount it with `Router::nest` under
    /// [`ConsoleOptions::base_path`](crate::ConsoleOptions::base_path).
    ///
    /// Without an auth hook (or with [`ConsoleOptions::allowed_hosts`](crate::ConsoleOptions::allowed_hosts)
    /// given) every route refuses a request whose `Host` is not `localhost`, `127.0.0.1`,
    /// `[::1]` or an allowed host, any port (421 Misdirected Request): a page of a
    /// DNS-rebinding domain cannot read or drive the console.
    pub fn router(&self) -> Router {
        self.host_checked(self.routes(), None)
    }

    /// The routes behind the auth hook, if any.
    fn routes(&self) -> Router {
        let router = crate::router::routes(self.state.clone());
        match &self.auth {
            Some(hook) => hook(router),
            None => router,
        }
    }

    /// `router` behind the `Host` check (outermost, before the auth hook) when it
    /// applies: no auth hook, or allowed hosts given; `bound`, the address bound.
    fn host_checked(&self, router: Router, bound: Option<IpAddr>) -> Router {
        let extra = &self.state.options.allowed_hosts;
        if self.auth.is_none() || !extra.is_empty() {
            host::check(router, AllowedHosts::new(bound, extra))
        } else {
            router
        }
    }

    /// Binds a listener for the console on `addr` (port 0: any free port). Refuses an
    /// address that is not loopback unless an auth hook was given
    /// ([`ConsoleError::NonLocalWithoutAuth`]). The served console answers to the address
    /// bound too (see [`Console::router`] for the `Host` check).
    pub async fn bind(&self, addr: SocketAddr) -> Result<BoundConsole, ConsoleError> {
        if !addr.ip().is_loopback() && self.auth.is_none() {
            return Err(ConsoleError::NonLocalWithoutAuth { addr });
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?.ip();
        let base = &self.state.options.base_path;
        let router = if base.is_empty() {
            self.routes()
        } else {
            Router::new().nest(base, self.routes())
        };
        let router = self.host_checked(router, Some(bound));
        Ok(BoundConsole::new(listener, router, base.clone()))
    }

    /// The token every action's form must carry (random per console).
    pub fn action_token(&self) -> &str {
        &self.state.token
    }
}
