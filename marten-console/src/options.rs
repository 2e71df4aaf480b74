//! [`ConsoleOptions`]: whether actions that change data are on, the path the console is
//! mounted under, how its lag history is sampled, which `Host` names it answers to; and
//! the host's auth hook as the console keeps it.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::error::ConsoleError;

/// The console's options. Read-only by default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsoleOptions {
    /// Whether actions that change data (retry a dead letter, rebuild a projection) are
    /// offered. Off by default; each one asks for confirmation and takes POST only.
    pub actions: bool,
    /// The path the console is mounted under (`""` at the root, `"/console"` when the
    /// host nests its router there): the prefix of every link. Normalised when the console
    /// is built: a missing leading `/` is added, trailing ones are dropped, `"/"` is the
    /// root (`""`). Segments of letters, digits, `-`, `.`, `_` and `~` only (no `.` or
    /// `..` segment, no empty one, no whitespace, `?`, `#` or `{`): another path is refused
    /// ([`ConsoleError::InvalidBasePath`](crate::ConsoleError::InvalidBasePath)).
    pub base_path: String,
    /// How often the lag history is sampled.
    pub sample_every: Duration,
    /// How much lag history is kept (the chart shows the last hour).
    pub history: Duration,
    /// More names the console answers to, besides `localhost`, `127.0.0.1`, `[::1]` and
    /// the address it is bound to: host names or addresses (any port; a leading dot,
    /// `.example.com`, admits the domain and its subdomains). A request whose `Host` is
    /// none of them is refused (421), against DNS rebinding: always without an auth
    /// hook; with one, only when this list is not empty (empty: every `Host` reaches
    /// the hook). Empty by default.
    pub allowed_hosts: Vec<String>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            actions: false,
            base_path: String::new(),
            sample_every: Duration::from_secs(1),
            history: Duration::from_secs(3600),
            allowed_hosts: Vec::new(),
        }
    }
}

/// `path` as the console uses it (see [`ConsoleOptions::base_path`]): `""` for the root,
/// else `/` and segments, without a trailing `/`; or why it is refused.
pub(crate) fn normalise_base_path(path: &str) -> Result<String, ConsoleError> {
    let refuse = |reason| ConsoleError::InvalidBasePath {
        path: path.to_owned(),
        reason,
    };
    if path.chars().any(char::is_whitespace) {
        return Err(refuse("it contains whitespace"));
    }
    if path.contains(['?', '#']) {
        return Err(refuse("it contains a query or fragment ('?' or '#')"));
    }
    let trimmed = path.trim_end_matches('/');
    let trimmed = trimmed.strip_prefix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::with_capacity(trimmed.len() + 1);
    for segment in trimmed.split('/') {
        match segment {
            "" => return Err(refuse("it has an empty segment ('//')")),
            "." | ".." => return Err(refuse("it has a '.' or '..' segment")),
            s if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) =>
            {
                return Err(refuse(
                    "a segment has a character other than letters, digits, '-', '.', '_' and '~'",
                ))
            }
            s => {
                out.push('/');
                out.push_str(s);
            }
        }
    }
    Ok(out)
}

/// Applies the host's auth middleware to the console's router.
pub(crate) type AuthHook = Arc<dyn Fn(Router) -> Router + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::normalise_base_path;

    #[test]
    fn base_paths_are_normalised_or_refused() {
        for (given, expected) in [
            ("", ""),
            ("/", ""),
            ("//", ""),
            ("console", "/console"),
            ("/console", "/console"),
            ("/console/", "/console"),
            ("ops/console//", "/ops/console"),
            ("/a-b_c.d~e", "/a-b_c.d~e"),
        ] {
            match normalise_base_path(given) {
                Ok(p) => assert_eq!(p, expected, "{given:?}"),
                Err(e) => panic!("{given:?}: {e}"),
            }
        }
        for bad in [
            " /console",
            "/con sole",
            "/console\n",
            "/console?x=1",
            "/console#top",
            "/a/../b",
            "/a/./b",
            "/..",
            "/a//b",
            "/{id}",
            "/:id",
            "/*rest",
            "/caf\u{e9}",
            "/a%20b",
        ] {
            assert!(normalise_base_path(bad).is_err(), "{bad:?} accepted");
        }
    }
}
