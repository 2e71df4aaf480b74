//! The `Host` check against DNS rebinding: a page on a domain the attacker re-points at
//! 127.0.0.1 is same-origin with the console for the browser, so it could read every page
//! (the action token with them) and post actions, unless the console refuses a request
//! whose `Host` is not one of its own names.
//!
//! Applied to every route (pages, assets, actions) when no auth hook was given, or when
//! the host listed [`ConsoleOptions::allowed_hosts`](crate::ConsoleOptions::allowed_hosts).
//! The names answered to: `localhost`, `127.0.0.1`, `[::1]`, the address
//! [`Console::bind`](crate::Console::bind) bound (unless unspecified) and the allowed
//! hosts, with any port; a leading dot in an allowed host (`.example.com`) admits the
//! domain and its subdomains. Anything else (another name, a `Host` that is not a host,
//! none at all) is refused with 421 Misdirected Request and a short plain-text reason.
//! The `Host` header alone is read (not `Forwarded` or `X-Forwarded-Host`, which a page
//! can set), or the request target's authority when there is no `Host` header.
//!
//! The peer check ([`loopback_peers`]) of [`Console::router`](crate::Console::router)
//! without an auth hook: the `Host` header is the client's to write (a program other than
//! a browser sends `Host: localhost` from anywhere), so a mounted console without an auth
//! hook also answers only a loopback peer, as one bound to loopback does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::connect_info::MockConnectInfo;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

/// One name the console answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    /// A host name, lower case.
    Name(String),
    /// `.example.com`: `example.com` and its subdomains.
    Domain(String),
    /// An address (`127.0.0.1`, `[::1]`).
    Ip(IpAddr),
}

/// The names a console answers to.
#[derive(Debug, Clone)]
pub(crate) struct AllowedHosts(Arc<[Allowed]>);

impl AllowedHosts {
    /// Loopback (`localhost`, `127.0.0.1`, `[::1]`), `bound` when it is a specific
    /// address, and `extra` (host names or addresses; a port, if written, is ignored).
    pub(crate) fn new(bound: Option<IpAddr>, extra: &[String]) -> Self {
        let mut all = vec![
            Allowed::Name("localhost".to_owned()),
            Allowed::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            Allowed::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        if let Some(ip) = bound.filter(|ip| !ip.is_unspecified()) {
            all.push(Allowed::Ip(ip));
        }
        for e in extra {
            let e = e.trim().to_ascii_lowercase();
            let entry = if let Ok(ip) = e.parse::<IpAddr>() {
                Allowed::Ip(ip)
            } else if let Some(domain) = e.strip_prefix('.').filter(|d| !d.is_empty()) {
                Allowed::Domain(domain.to_owned())
            } else {
                match host_part(&e) {
                    Some(h) => match ip_of(h) {
                        Some(ip) => Allowed::Ip(ip),
                        None => Allowed::Name(h.to_owned()),
                    },
                    None => {
                        tracing::warn!(
                            entry = e,
                            "console: not a host name, ignored (ConsoleOptions::allowed_hosts)"
                        );
                        continue;
                    }
                }
            };
            if !all.contains(&entry) {
                all.push(entry);
            }
        }
        AllowedHosts(all.into())
    }

    /// Whether `authority` (a `Host` header's value: host and optional port) names the
    /// console.
    pub(crate) fn admits(&self, authority: &str) -> bool {
        let Some(host) = host_part(authority) else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let ip = ip_of(&host);
        self.0.iter().any(|a| match (a, ip) {
            (Allowed::Ip(allowed), Some(ip)) => *allowed == ip,
            (Allowed::Name(name), None) => *name == host,
            (Allowed::Domain(domain), None) => {
                host == *domain
                    || host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.'))
            }
            _ => false,
        })
    }
}

/// The host of an authority (`name`, `name:port`, `1.2.3.4:80`, `[::1]:80`), without its
/// port; `None` when it is not one (an empty host, a bare IPv6 address, a bad port,
/// userinfo).
fn host_part(authority: &str) -> Option<&str> {
    if authority.contains(['@', '/', ' ', '\\']) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            r => (host, Some(r.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    (!host.is_empty()).then_some(host)
}

/// A host that is an address literal (`127.0.0.1`, `[::1]`).
fn ip_of(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// `router` behind the check: a request whose `Host` is not in `allowed` is refused.
pub(crate) fn check(router: Router, allowed: AllowedHosts) -> Router {
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let allowed = allowed.clone();
            async move {
                let authority = match req.headers().get(header::HOST) {
                    Some(h) => h.to_str().ok().map(str::to_owned),
                    None => req.uri().authority().map(|a| a.as_str().to_owned()),
                };
                match authority {
                    Some(a) if allowed.admits(&a) => next.run(req).await,
                    _ => refused(),
                }
            }
        },
    ))
}

/// `router` answering a loopback peer only (its address from axum's
/// `ConnectInfo<SocketAddr>`, or a test's `MockConnectInfo<SocketAddr>`): 403 for another peer, 500 when the app was served without
/// `ConnectInfo`, each with what to do.
pub(crate) fn loopback_peers(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |req: Request, next: Next| async move {
            // As axum's `ConnectInfo` extractor reads it: the served connection's, else
            // the one a test mocks.
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0)
                .or_else(|| {
                    req.extensions()
                        .get::<MockConnectInfo<SocketAddr>>()
                        .map(|m| m.0)
                });
            match peer {
                Some(peer) if peer.ip().to_canonical().is_loopback() => next.run(req).await,
                Some(peer) => {
                    tracing::warn!(
                        %peer,
                        "console: a peer that is not loopback refused (no auth hook)"
                    );
                    plain(
                        StatusCode::FORBIDDEN,
                        "forbidden: this console has no auth hook, so it answers the machine \
                         it runs on only (a loopback peer); give it one \
                         (ConsoleBuilder::auth) or serve it with Console::bind on a loopback \
                         address\n",
                    )
                }
                None => {
                    tracing::error!(
                        "console: no ConnectInfo<SocketAddr> on the request: serve the app \
                         with into_make_service_with_connect_info::<SocketAddr>() or give \
                         the console an auth hook"
                    );
                    plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the console cannot tell who is asking: it has no auth hook, so it \
                         answers loopback peers only, and the app was served without the \
                         peer's address; serve it with \
                         axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()), \
                         give the console an auth hook (ConsoleBuilder::auth), or serve it \
                         with Console::bind\n",
                    )
                }
            }
        },
    ))
}

/// A plain-text response.
fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response()
}

/// 421 with the reason, as plain text.
fn refused() -> Response {
    (
        StatusCode::MISDIRECTED_REQUEST,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "misdirected request: the Host header is not a name of this console (localhost, \
         127.0.0.1, [::1], its bound address or ConsoleOptions::allowed_hosts); refused \
         against DNS rebinding\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_without_their_port() {
        assert_eq!(host_part("localhost"), Some("localhost"));
        assert_eq!(host_part("localhost:7070"), Some("localhost"));
        assert_eq!(host_part("127.0.0.1:80"), Some("127.0.0.1"));
        assert_eq!(host_part("[::1]:80"), Some("[::1]"));
        assert_eq!(host_part("[::1]"), Some("[::1]"));
        for bad in [
            "",
            ":80",
            "::1",
            "[::1]x",
            "a:b",
            "a:",
            "u@localhost",
            "a b",
            "[::1",
        ] {
            assert_eq!(host_part(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn loopback_names_and_the_bound_address_are_admitted() {
        let a = AllowedHosts::new(Some("127.0.0.7".parse().expect("ip")), &[]);
        for ok in [
            "localhost",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.0.0.1:7070",
            "[::1]",
            "[::1]:7070",
            "[0:0:0:0:0:0:0:1]:9",
            "127.0.0.7:80",
        ] {
            assert!(a.admits(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:7070",
            "localhost.evil.example",
            "127.0.0.2",
            "localhost.",
            "0x7f.1",
            "2130706433",
            "[::2]",
            "",
        ] {
            assert!(!a.admits(no), "{no}");
        }
        let unspecified = AllowedHosts::new(Some("0.0.0.0".parse().expect("ip")), &[]);
        assert!(!unspecified.admits("0.0.0.0:80"));
    }

    #[test]
    fn allowed_hosts_add_names_addresses_and_domains() {
        let a = AllowedHosts::new(
            None,
            &[
                "Console.Internal".to_owned(),
                "10.0.0.5:8080".to_owned(),
                ".ops.example".to_owned(),
                "[fd00::1]".to_owned(),
                "fd00::2".to_owned(),
            ],
        );
        for ok in [
            "console.internal:443",
            "10.0.0.5",
            "ops.example",
            "a.ops.example:1",
            "b.a.ops.example",
            "[fd00::1]:80",
            "[fd00::2]",
            "localhost",
        ] {
            assert!(a.admits(ok), "{ok}");
        }
        for no in [
            "xops.example",
            "console.internal.evil",
            "10.0.0.6",
            ".ops.example",
        ] {
            assert!(!a.admits(no), "{no}");
        }
    }
}
