//! Cancel requests: what still runs on the server for a connection that was given up (a
//! request past its timeout, a future dropped mid-request) is stopped with a cancel
//! request, sent on a connection of its own with the key of the one given up.
//!
//! A cancel request must use TLS as its connection did: the cancel token of a connection
//! made with `sslmode=require` (or a verify mode) asks the server for TLS, the server says
//! yes, and a request sent without a TLS connector fails there, before anything is sent.
//! So a connection the store made is cancelled with the TLS it was made with; one of a
//! caller's pool, whose TLS the store does not know, with an encryption-only connector,
//! and without TLS when that fails. A cancel request that fails is logged at `warn`: the
//! statement runs on (with its transaction and locks) until it ends by itself.

use std::sync::OnceLock;
use std::time::Duration;

use tokio_postgres::{CancelToken, NoTls};
use tracing::{debug, warn};

use super::tls::Tls;

/// How long closing a connection waits for its cancel request to be delivered.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// What a cancel request for one connection needs: the connection's key and address
/// (its cancel token) and the TLS it was made with (`None`: not known, a caller's pool's).
pub(crate) struct CancelRequest {
    token: CancelToken,
    tls: Option<Tls>,
}

impl CancelRequest {
    /// The cancel request of the connection of `token`, made over `tls` (`None`: over a
    /// TLS this crate does not know).
    pub(crate) fn new(token: CancelToken, tls: Option<&Tls>) -> Self {
        Self {
            token,
            tls: tls.cloned(),
        }
    }

    /// Sends the request: over the connection's own TLS; or, when that is not known,
    /// over an encryption-only connector and, if that fails, without TLS (which is all a
    /// connection that did not ask for TLS needs). The error is the first attempt's.
    async fn send(&self) -> Result<(), tokio_postgres::Error> {
        if let Some(tls) = &self.tls {
            return tls.cancel(&self.token).await;
        }
        let Some(tls) = encryption_only() else {
            return self.token.cancel_query(NoTls).await;
        };
        match tls.cancel(&self.token).await {
            Ok(()) => Ok(()),
            Err(e) => {
                debug!(error = %e, "a cancel request over TLS failed; sending it without TLS");
                self.token.cancel_query(NoTls).await.map_err(|_| e)
            }
        }
    }
}

/// The encryption-only TLS of cancel requests for connections of a caller's pool, made
/// once (`None`: it cannot be made; such requests go without TLS).
fn encryption_only() -> Option<&'static Tls> {
    static TLS: OnceLock<Option<Tls>> = OnceLock::new();
    TLS.get_or_init(|| match Tls::encryption_only() {
        Ok(tls) => Some(tls),
        Err(e) => {
            warn!(error = %e, "cannot make the TLS of cancel requests; they go without TLS");
            None
        }
    })
    .as_ref()
}

/// Sends `cancel` for what runs on a connection (in a task of its own, waiting at most
/// five seconds for the server to take it), then drops `keep` (the connection itself, or
/// nothing). Without a runtime to send it from, drops `keep` at once: closing alone
/// still ends the connection's transaction once the server reads the termination.
pub(crate) fn cancel_then_drop<T: Send + 'static>(cancel: CancelRequest, keep: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                match tokio::time::timeout(CANCEL_TIMEOUT, cancel.send()).await {
                    Ok(Ok(())) => debug!("cancelled the request of a discarded connection"),
                    Ok(Err(e)) => warn!(
                        error = %e,
                        "the cancel request of a discarded connection failed: its statement \
                         may run on until it ends by itself"
                    ),
                    Err(_) => warn!(
                        "the cancel request of a discarded connection got no answer within \
                         {CANCEL_TIMEOUT:?}: its statement may run on until it ends by itself"
                    ),
                }
                drop(keep);
            });
        }
        Err(_) => {
            debug!("no runtime to send a cancel request from: the connection is only closed");
            drop(keep);
        }
    }
}
