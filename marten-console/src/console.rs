//! [`Console`]: the built console, mounted by the host as a router
//! ([`Console::router`]) or served on its own ([`Console::bind`]).

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::bind::BoundConsole;
use crate::error::ConsoleError;
use crate::host::{self, AllowedHosts};
use crate::options::AuthHook;
use crate::state::Shared;

/// A base path refused when the console was built: the path and why.
#[derive(Debug, Clone)]
struct InvalidBase {
    path: String,
    reason: &'static str,
}

impl InvalidBase {
    fn error(&self) -> ConsoleError {
        ConsoleError::InvalidBasePath {
            path: self.path.clone(),
            reason: self.reason,
        }
    }
}

/// The web console of a store. Cheap to clone; the lag sampler stops when the console and
/// every router made from it are dropped.
#[derive(Clone)]
pub struct Console {
    state: Shared,
    auth: Option<AuthHook>,
    invalid_base: Option<InvalidBase>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("options", &self.state.options)
            .field("auth", &self.auth.is_some())
            .field("invalid_base", &self.invalid_base)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// The console over `state`; `invalid_base`, the error of a base path refused at build.
    pub(crate) fn new(
        state: Shared,
        auth: Option<AuthHook>,
        invalid_base: Option<ConsoleError>,
    ) -> Self {
        let invalid_base = match invalid_base {
            Some(ConsoleError::InvalidBasePath { path, reason }) => {
                Some(InvalidBase { path, reason })
            }
            _ => None,
        };
        Console {
            state,
            auth,
            invalid_base,
        }
    }

    /// The console's routes (`/streams`, `/projections`, ...), behind the auth hook when
    /// one was given. Mount it with `Router::nest` under
    /// [`ConsoleOptions::base_path`](crate::ConsoleOptions::base_path).
    ///
    /// Without an auth hook the console is for the machine it runs on only, as
    /// [`Console::bind`] on loopback is: every route answers only a peer whose address is
    /// loopback, read from axum's `ConnectInfo<SocketAddr>`, so serve the app with
    /// `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())`.
    /// A peer that is not loopback is refused (403); a request without `ConnectInfo` (the
    /// app served without it) is refused too (500, saying how to serve it). A reverse
    /// proxy on the same machine is a loopback peer: put authentication in front of it, or
    /// give the console an auth hook ([`ConsoleBuilder::auth`](crate::ConsoleBuilder::auth)),
    /// which replaces this check.
    ///
    /// Without an auth hook (or with [`ConsoleOptions::allowed_hosts`](crate::ConsoleOptions::allowed_hosts)
    /// given) every route also refuses a request whose `Host` is not `localhost`,
    /// `127.0.0.1`, `[::1]` or an allowed host, any port (421 Misdirected Request): a page
    /// of a DNS-rebinding domain cannot read or drive the console.
    ///
    /// Every response forbids framing (`X-Frame-Options: DENY`,
    /// `Content-Security-Policy: frame-ancestors 'none'`), against clickjacking of the
    /// actions' confirmation pages. With a base path refused at build (see
    /// [`ConsoleBuilder::build`](crate::ConsoleBuilder::build)) every route answers 500
    /// with the reason.
    pub fn router(&self) -> Router {
        if let Some(invalid) = &self.invalid_base {
            return secured(misconfigured(invalid.error().to_string()));
        }
        let router = self.host_checked(self.routes(), None);
        let router = if self.auth.is_none() {
            host::loopback_peers(router)
        } else {
            router
        };
        secured(router)
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
    /// ([`ConsoleError::NonLocalWithoutAuth`]), and a base path refused at build
    /// ([`ConsoleError::InvalidBasePath`]). The served console answers to the address
    /// bound too (see [`Console::router`] for the `Host` check and the headers).
    pub async fn bind(&self, addr: SocketAddr) -> Result<BoundConsole, ConsoleError> {
        if let Some(invalid) = &self.invalid_base {
            return Err(invalid.error());
        }
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
        let router = secured(self.host_checked(router, Some(bound)));
        Ok(BoundConsole::new(listener, router, base.clone()))
    }

    /// The token every action's form must carry (random per console).
    pub fn action_token(&self) -> &str {
        &self.state.token
    }
}

/// `router` with the headers every response of the console carries (outermost, so the
/// refusals of the checks carry them too): no framing by any page (`X-Frame-Options:
/// DENY`, `Content-Security-Policy: frame-ancestors 'none'`: a hostile page cannot frame
/// an action's confirmation page and trick a click on it), no content sniffing.
fn secured(router: Router) -> Router {
    router.layer(axum::middleware::map_response(
        |mut response: Response| async move {
            let headers = response.headers_mut();
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'none'"),
            );
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            response
        },
    ))
}

/// A router whose every route answers 500 with `reason` (a console that cannot serve).
fn misconfigured(reason: String) -> Router {
    Router::new().fallback(move || {
        let reason = reason.clone();
        async move {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("the console is misconfigured: {reason}\n"),
            )
                .into_response()
        }
    })
}
