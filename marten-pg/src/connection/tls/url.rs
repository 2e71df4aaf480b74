//! `sslmode` and `sslrootcert` in a connection string. `tokio_postgres` refuses
//! `sslmode=verify-ca`, `verify-full` and any `sslrootcert`, so both are taken out of the
//! string (URL or key=value form) before it is parsed, and remembered.

use marten_core::{Error, Result};

use super::SslMode;

/// The TLS settings a connection string carried.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UrlTls {
    /// `sslmode=`.
    pub(crate) mode: Option<SslMode>,
    /// `sslrootcert=`: a PEM file, or `system`.
    pub(crate) root_cert: Option<String>,
}

impl UrlTls {
    /// Takes `key=value` if it is one of ours; `false` for any other key.
    fn take(&mut self, key: &str, value: String) -> Result<bool> {
        match key {
            "sslmode" => self.mode = Some(value.parse()?),
            "sslrootcert" => self.root_cert = Some(value),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Splits `sslmode` and `sslrootcert` off a connection string: the rest (for
/// `tokio_postgres`) and what they said.
pub(crate) fn split_connection_string(conn: &str) -> Result<(String, UrlTls)> {
    if conn.starts_with("postgres://") || conn.starts_with("postgresql://") {
        split_url(conn)
    } else {
        split_key_value(conn)
    }
}

fn split_url(url: &str) -> Result<(String, UrlTls)> {
    let mut found = UrlTls::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), found));
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !found.take(&percent_decode(key)?, percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    if kept.is_empty() {
        Ok((base.to_owned(), found))
    } else {
        Ok((format!("{base}?{}", kept.join("&")), found))
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::Configuration("connection string is not valid UTF-8".to_owned()))
}

/// The key=value form: `host=h sslmode='verify-full' ...`, values optionally quoted
/// with `'`, a backslash escaping the next character.
fn split_key_value(s: &str) -> Result<(String, UrlTls)> {
    let mut found = UrlTls::default();
    let mut kept = String::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let Some((key, value, after)) = next_pair(rest) else {
            // Not a pair: leave it to tokio_postgres, which reports it.
            kept.push_str(rest);
            break;
        };
        if !found.take(key, value)? {
            kept.push_str(&rest[..rest.len() - after.len()]);
            kept.push(' ');
        }
        rest = after.trim_start();
    }
    Ok((kept.trim_end().to_owned(), found))
}

/// The first `key = value` of `s`: the key, the unescaped value and what follows.
fn next_pair(s: &str) -> Option<(&str, String, &str)> {
    let key_end = s.find(|c: char| c == '=' || c.is_whitespace())?;
    let key = &s[..key_end];
    let after_key = s[key_end..].trim_start().strip_prefix('=')?.trim_start();
    let quoted = after_key.starts_with('\'');
    let body = if quoted { &after_key[1..] } else { after_key };
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.extend(chars.next().map(|(_, c)| c)),
            '\'' if quoted => return Some((key, value, &body[i + 1..])),
            c if c.is_whitespace() && !quoted => return Some((key, value, &body[i..])),
            c => value.push(c),
        }
    }
    // An unterminated quote is left to tokio_postgres to report.
    (!quoted).then_some((key, value, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_only_the_tls_parameters() {
        let (rest, tls) = split_connection_string(
            "postgres://u@h:5/db?application_name=a&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem&connect_timeout=3",
        )
        .expect("split");
        assert_eq!(
            rest,
            "postgres://u@h:5/db?application_name=a&connect_timeout=3"
        );
        assert_eq!(tls.mode, Some(SslMode::VerifyFull));
        assert_eq!(tls.root_cert.as_deref(), Some("/tmp/ca.pem"));
        let (rest, tls) =
            split_connection_string("postgresql://h/db?sslmode=require").expect("split");
        assert_eq!(
            (rest.as_str(), tls.mode),
            ("postgresql://h/db", Some(SslMode::Require))
        );
        let (rest, tls) = split_connection_string("postgres://h/db").expect("split");
        assert_eq!((rest.as_str(), tls), ("postgres://h/db", UrlTls::default()));
        assert!(split_connection_string("postgres://h/db?sslmode=allow").is_err());
    }

    #[test]
    fn key_value_strings_lose_only_the_tls_parameters() {
        let (rest, tls) = split_connection_string(
            r"host=h sslmode = 'verify-ca' user=u sslrootcert='/a b/c\'s.pem' options='-c x=1'",
        )
        .expect("split");
        assert_eq!(rest, "host=h user=u options='-c x=1'");
        assert_eq!(tls.mode, Some(SslMode::VerifyCa));
        assert_eq!(tls.root_cert.as_deref(), Some("/a b/c's.pem"));
        let (rest, tls) = split_connection_string("host=h sslmode=disable").expect("split");
        assert_eq!(
            (rest.as_str(), tls.mode),
            ("host=h", Some(SslMode::Disable))
        );
        let (rest, _) = split_connection_string("host=h bogus").expect("split");
        assert_eq!(rest, "host=h bogus");
    }
}
