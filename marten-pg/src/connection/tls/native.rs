//! The `native-tls` connector (feature `native-tls`): the platform's TLS library with
//! the same checks as the rustls one.

use marten_core::{Error, Result};
use rustls::pki_types::CertificateDer;

use super::Verify;

/// A connector checking certificates as `verify` says, against `roots` (the platform's
/// roots when empty).
pub(super) fn connector(
    verify: Verify,
    roots: &[CertificateDer<'static>],
) -> Result<postgres_native_tls::MakeTlsConnector> {
    let mut builder = native_tls::TlsConnector::builder();
    for root in roots {
        let cert = native_tls::Certificate::from_der(root)
            .map_err(|e| Error::Configuration(format!("unusable root certificate: {e}")))?;
        builder.add_root_certificate(cert);
    }
    if !roots.is_empty() {
        builder.disable_built_in_roots(true);
    }
    match verify {
        Verify::Nothing => {
            builder.danger_accept_invalid_certs(true);
        }
        Verify::Chain => {
            builder.danger_accept_invalid_hostnames(true);
        }
        Verify::Full => {}
    }
    let connector = builder
        .build()
        .map_err(|e| Error::Configuration(format!("cannot configure TLS: {e}")))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(connector))
}
