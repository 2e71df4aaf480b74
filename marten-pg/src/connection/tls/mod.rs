//! TLS for the store's connections: the [`SslMode`] (libpq's `sslmode`, including
//! `verify-ca` and `verify-full`, which `tokio_postgres` does not know), the roots a
//! server's certificate is checked against, and the connector of the chosen
//! [`TlsBackend`] (rustls by default, the platform's library with the `native-tls`
//! feature). Handshake failures come back typed ([`Error::Tls`]).
//!
//! May use: the error map. `url` takes `sslmode` and `sslrootcert` out of a connection
//! string, `rustls_config` and `native` make the backends' connectors, `checked` wraps a
//! connector so its failures can be told apart.

mod checked;
#[cfg(feature = "native-tls")]
mod native;
mod rustls_config;
mod url;

use std::fmt;
use std::str::FromStr;

use marten_core::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio_postgres::{CancelToken, Client};

pub(crate) use checked::{connect_error, tracked};
pub(crate) use url::{split_connection_string, UrlTls};

/// How a connection uses TLS, as libpq's `sslmode`. Set it with `sslmode=` in the
/// connection string or with
/// [`DocumentStoreBuilder::ssl_mode`](crate::DocumentStoreBuilder::ssl_mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise (the default). Once the server
    /// offers TLS a failed handshake fails the connection: it never falls back to plain.
    /// The certificate is not checked unless a root certificate was given.
    #[default]
    Prefer,
    /// TLS or no connection. Without a root certificate the server's certificate is not
    /// checked (encryption only, as libpq does); with one it is checked as `VerifyCa`.
    Require,
    /// TLS, and the server's certificate must be signed by a trusted root (the given root
    /// certificates, else the system's and the Mozilla roots). The host name is not
    /// checked.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must be issued for the host connected to (a
    /// DNS name or an IP address).
    VerifyFull,
}

impl SslMode {
    /// Whether a connection without TLS is refused.
    pub(crate) fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// The mode `tokio_postgres` negotiates: it knows disable, prefer and require; the
    /// checks of the verify modes are the connector's.
    fn to_postgres(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// The mode of a `tokio_postgres::Config`. A mode this crate does not know yet is
    /// taken as the strictest one.
    fn from_postgres(mode: tokio_postgres::config::SslMode) -> SslMode {
        match mode {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Prefer => SslMode::Prefer,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::VerifyFull,
        }
    }
}

/// The libpq spelling: `disable`, `prefer`, `require`, `verify-ca`, `verify-full`.
impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// Parses the libpq spelling; anything else is an [`Error::Configuration`].
impl FromStr for SslMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<SslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Configuration(format!(
                    "unsupported sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
                )))
            }
        })
    }
}

/// The TLS library connections use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsBackend {
    /// rustls with the `ring` provider (the default).
    #[default]
    Rustls,
    /// The platform's library (OpenSSL, Secure Transport, SChannel) through `native-tls`;
    /// needs the `native-tls` feature. A refused certificate is reported as
    /// [`TlsFailure::Handshake`](marten_core::TlsFailure::Handshake): the platform's
    /// errors do not say which check failed.
    #[cfg(feature = "native-tls")]
    NativeTls,
}

/// The TLS settings given on the builder.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    /// The mode, when set on the builder (it wins over the connection string's).
    pub(crate) mode: Option<SslMode>,
    /// Root certificates (PEM) given on the builder.
    pub(crate) roots_pem: Vec<Vec<u8>>,
    /// The TLS library.
    pub(crate) backend: TlsBackend,
}

impl TlsSettings {
    /// Whether anything was set on the builder.
    pub(crate) fn is_set(&self) -> bool {
        self.mode.is_some() || !self.roots_pem.is_empty() || self.backend != TlsBackend::Rustls
    }
}

/// How a server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Not at all (encryption only).
    Nothing,
    /// Signed by a trusted root; any host name.
    Chain,
    /// Signed by a trusted root and issued for the host.
    Full,
}

/// The TLS of a store's own connections: the mode and the connector.
#[derive(Clone)]
pub(crate) struct Tls {
    mode: SslMode,
    make: MakeTls,
}

/// The connector of each backend, wrapped so its failures are typed.
#[derive(Clone)]
enum MakeTls {
    Rustls(checked::Checked<tokio_postgres_rustls::MakeRustlsConnect>),
    #[cfg(feature = "native-tls")]
    Native(checked::Checked<postgres_native_tls::MakeTlsConnector>),
}

impl Tls {
    /// Resolves the mode (the builder's, else the connection string's, else the
    /// config's) and the roots (the builder's and `sslrootcert`'s), sets the mode
    /// `tokio_postgres` negotiates on `config`, and makes the connector.
    pub(crate) fn resolve(
        settings: &TlsSettings,
        from_url: UrlTls,
        config: &mut tokio_postgres::Config,
    ) -> Result<Tls> {
        let mut mode = settings
            .mode
            .or(from_url.mode)
            .unwrap_or_else(|| SslMode::from_postgres(config.get_ssl_mode()));
        let mut roots = Vec::new();
        for pem in &settings.roots_pem {
            roots.extend(parse_pem(pem, "the root certificate given to the builder")?);
        }
        match from_url.root_cert.as_deref() {
            Some("system") => match settings.mode.or(from_url.mode) {
                None | Some(SslMode::VerifyFull) => mode = SslMode::VerifyFull,
                Some(other) => {
                    return Err(Error::Configuration(format!(
                        "sslrootcert=system needs sslmode=verify-full, not {other}"
                    )))
                }
            },
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::Configuration(format!("cannot read sslrootcert {path:?}: {e}"))
                })?;
                roots.extend(parse_pem(&pem, path)?);
            }
            None => {}
        }
        let verify = match mode {
            SslMode::VerifyFull => Verify::Full,
            SslMode::VerifyCa => Verify::Chain,
            _ if roots.is_empty() => Verify::Nothing,
            _ => Verify::Chain,
        };
        config.ssl_mode(mode.to_postgres());
        let make = match settings.backend {
            TlsBackend::Rustls => MakeTls::Rustls(checked::Checked::new(
                tokio_postgres_rustls::MakeRustlsConnect::new(rustls_config::client_config(
                    verify, &roots,
                )?),
                mode,
            )),
            #[cfg(feature = "native-tls")]
            TlsBackend::NativeTls => MakeTls::Native(checked::Checked::new(
                native::connector(verify, &roots)?,
                mode,
            )),
        };
        Ok(Tls { mode, make })
    }

    /// The TLS of a cancel request for a connection whose TLS this crate does not know (a
    /// caller's pool's): rustls, encryption only (the server's certificate is not
    /// checked, as `sslmode=require` without a root). A connection that asked for TLS
    /// gets a cancel request that asks for it too; without a connector it could not send
    /// one at all.
    pub(crate) fn encryption_only() -> Result<Tls> {
        let config = rustls_config::client_config(Verify::Nothing, &[])?;
        let mode = SslMode::Require;
        let make = MakeTls::Rustls(checked::Checked::new(
            tokio_postgres_rustls::MakeRustlsConnect::new(config),
            mode,
        ));
        Ok(Tls { mode, make })
    }

    /// The resolved mode.
    pub(crate) fn mode(&self) -> SslMode {
        self.mode
    }

    /// Sends a cancel request for the statement running on the connection of `token`,
    /// over this TLS when the connection's mode asks for it (as the connection was made).
    pub(crate) async fn cancel(&self, token: &CancelToken) -> Result<(), tokio_postgres::Error> {
        match &self.make {
            MakeTls::Rustls(tls) => token.cancel_query(tls.clone()).await,
            #[cfg(feature = "native-tls")]
            MakeTls::Native(tls) => token.cancel_query(tls.clone()).await,
        }
    }

    /// Opens a connection with `config` over this TLS; its connection task runs on the
    /// current runtime until the client is dropped.
    pub(crate) async fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<Client, tokio_postgres::Error> {
        match &self.make {
            MakeTls::Rustls(tls) => spawned(config.connect(tls.clone()).await?),
            #[cfg(feature = "native-tls")]
            MakeTls::Native(tls) => spawned(config.connect(tls.clone()).await?),
        }
    }
}

/// Runs a new connection's task on the current runtime and returns its client.
fn spawned<S, T>(
    (client, connection): (Client, tokio_postgres::Connection<S, T>),
) -> Result<Client, tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "a connection ended with an error");
        }
    });
    Ok(client)
}

/// The certificates of a PEM text (`what` names it in errors); none is an error.
fn parse_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Configuration(format!("invalid PEM in {what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Configuration(format!(
            "no certificate found in {what} (expected PEM: -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print_in_libpq_spelling() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.to_string().parse::<SslMode>().ok(), Some(mode));
        }
        assert!("allow".parse::<SslMode>().is_err());
        assert!(SslMode::VerifyCa.requires_tls() && !SslMode::Prefer.requires_tls());
    }

    #[test]
    fn the_builder_mode_wins_and_verify_modes_negotiate_require() {
        let mut config = tokio_postgres::Config::new();
        let settings = TlsSettings {
            mode: Some(SslMode::Require),
            ..TlsSettings::default()
        };
        let url = UrlTls {
            mode: Some(SslMode::Disable),
            root_cert: None,
        };
        let tls = Tls::resolve(&settings, url, &mut config).expect("tls");
        assert_eq!(tls.mode(), SslMode::Require);
        let url = UrlTls {
            mode: Some(SslMode::VerifyFull),
            root_cert: None,
        };
        let tls = Tls::resolve(&TlsSettings::default(), url, &mut config).expect("tls");
        assert_eq!(tls.mode(), SslMode::VerifyFull);
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn bad_roots_and_weak_modes_with_system_roots_are_configuration_errors() {
        let mut config = tokio_postgres::Config::new();
        let settings = TlsSettings {
            roots_pem: vec![b"not a certificate".to_vec()],
            ..TlsSettings::default()
        };
        let err = Tls::resolve(&settings, UrlTls::default(), &mut config).err();
        assert!(matches!(err, Some(Error::Configuration(_))), "{err:?}");
        let url = UrlTls {
            mode: Some(SslMode::Require),
            root_cert: Some("system".to_owned()),
        };
        let err = Tls::resolve(&TlsSettings::default(), url, &mut config).err();
        assert!(matches!(err, Some(Error::Configuration(_))), "{err:?}");
        let url = UrlTls {
            mode: None,
            root_cert: Some("/nonexistent/root.crt".to_owned()),
        };
        let err = Tls::resolve(&TlsSettings::default(), url, &mut config).err();
        assert!(matches!(err, Some(Error::Configuration(_))), "{err:?}");
    }
}
