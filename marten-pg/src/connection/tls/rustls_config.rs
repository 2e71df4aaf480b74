//! The rustls client configuration of each way of checking a server's certificate:
//! none (encryption only), the chain only (`verify-ca`), chain and host name
//! (`verify-full`). Always the `ring` provider, whatever provider the process installed.

use std::sync::Arc;

use marten_core::{Error, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::Verify;

/// The client configuration checking certificates as `verify` says, against `roots`
/// (the system's and the Mozilla roots when empty).
pub(super) fn client_config(
    verify: Verify,
    roots: &[CertificateDer<'static>],
) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Configuration(format!("cannot configure TLS: {e}")))?;
    let config = match verify {
        Verify::Full => builder.with_root_certificates(root_store(roots)?),
        Verify::Chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostCheck {
                roots: Some(root_store(roots)?),
                provider,
            })),
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostCheck {
                roots: None,
                provider,
            })),
    };
    Ok(config.with_no_client_auth())
}

/// `roots`, or the system's roots and the Mozilla roots (webpki-roots) when empty.
fn root_store(roots: &[CertificateDer<'static>]) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    if roots.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        store.add_parsable_certificates(native.certs);
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    }
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| Error::Configuration(format!("unusable root certificate: {e}")))?;
    }
    Ok(store)
}

/// The verifier of `verify-ca` (`roots`: the chain must lead to one of them; the host
/// name is not checked) and of `prefer` / `require` without a root (`roots` is `None`:
/// any certificate; the handshake's signatures are still checked, so the session is
/// encrypted with the holder of the certificate's key).
#[derive(Debug)]
struct NoHostCheck {
    roots: Option<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoHostCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = ParsedCertificate::try_from(end_entity)?;
            verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
