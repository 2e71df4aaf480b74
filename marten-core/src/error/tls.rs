//! [`TlsFailure`]: what went wrong when a TLS connection to the server could not be set
//! up ([`Error::Tls`](super::Error::Tls)). Uses nothing else.

use std::fmt;

/// What failed when a TLS connection could not be set up
/// ([`Error::Tls`](super::Error::Tls)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The `sslmode` requires TLS (`require`, `verify-ca`, `verify-full`) and the server
    /// does not offer it (it answered the TLS request with "no"), or there is no host name
    /// to run a handshake with (a Unix socket).
    NotOffered,
    /// The server's certificate was refused: not signed by a trusted root (`verify-ca`,
    /// `verify-full`), expired, or not issued for the host connected to (`verify-full`).
    Certificate,
    /// The TLS handshake failed for another reason: no protocol version or cipher in
    /// common, an alert from the server, an invalid host name, a broken stream.
    Handshake,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsFailure::NotOffered => "the server does not offer TLS",
            TlsFailure::Certificate => "the server's certificate was refused",
            TlsFailure::Handshake => "the TLS handshake failed",
        })
    }
}
