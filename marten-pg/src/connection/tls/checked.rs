//! Typed TLS failures. A connector is wrapped so that its failures carry what failed
//! ([`HandshakeError`], found again as the source of `tokio_postgres`'s error), and a
//! connection attempt is tracked (a task-local [`Progress`]) so that a server answering
//! the TLS request with "no" under a mode that requires TLS is told apart from other
//! failures without reading any message text.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use marten_core::{DatabaseError, Error, TlsFailure};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

use super::SslMode;
use crate::error_map::{is_lost, map_db_error, Failed};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How far the current connection attempt got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Not as far as TLS (or not tracked).
    Connecting,
    /// The socket is open and a TLS connector was made for it, but no handshake began.
    TlsPrepared,
    /// The server accepted TLS and the handshake began.
    Handshaking,
}

tokio::task_local! {
    static PROGRESS: Cell<Progress>;
}

fn set_progress(progress: Progress) {
    let _ = PROGRESS.try_with(|p| p.set(progress));
}

/// A connection attempt tracked by [`tracked`]: its output and how far it got.
pub(crate) type Tracked<'a, T> = Pin<Box<dyn Future<Output = (T, Progress)> + Send + 'a>>;

/// Runs a connection attempt (a pool's connect, a dedicated connect) and reports how far
/// its last connection got, for [`connect_error`]. Boxed: the task-local scope around a
/// connect nested in its callers' futures would push them past the compiler's query
/// depth limit.
pub(crate) fn tracked<'a, F>(attempt: F) -> Tracked<'a, F::Output>
where
    F: Future + Send + 'a,
    F::Output: Send,
{
    Box::pin(PROGRESS.scope(Cell::new(Progress::Connecting), async {
        let out = attempt.await;
        (out, PROGRESS.with(Cell::get))
    }))
}

/// The error of a failed connection attempt in `mode` that got as far as `progress`.
pub(crate) fn connect_error(
    err: tokio_postgres::Error,
    mode: SslMode,
    progress: Progress,
) -> Error {
    let handshake =
        std::error::Error::source(&err).and_then(|s| s.downcast_ref::<HandshakeError>());
    if let Some(handshake) = handshake {
        let (kind, context) = (handshake.kind, handshake.to_string());
        return tls_error(kind, context, err);
    }
    // Under a mode that requires TLS, tokio_postgres fails between making the connector
    // and starting the handshake only when the server said no to TLS (or there is no
    // host name to shake hands with); it is neither a server error nor an I/O failure.
    if mode.requires_tls()
        && progress == Progress::TlsPrepared
        && err.code().is_none()
        && !is_lost(&err)
    {
        return tls_error(
            TlsFailure::NotOffered,
            format!("requesting TLS (sslmode={mode})"),
            err,
        );
    }
    map_db_error(err, Failed::Other("connecting"))
}

fn tls_error(kind: TlsFailure, context: String, err: tokio_postgres::Error) -> Error {
    Error::Tls {
        kind,
        source: DatabaseError {
            code: None,
            context,
            source: Box::new(err),
        },
    }
}

/// A failed TLS handshake: with which host, in which mode, what failed, and the TLS
/// library's error.
#[derive(Debug)]
pub(crate) struct HandshakeError {
    host: String,
    mode: SslMode,
    kind: TlsFailure,
    source: BoxError,
}

impl HandshakeError {
    fn new(host: &str, mode: SslMode, source: BoxError) -> HandshakeError {
        HandshakeError {
            host: host.to_owned(),
            mode,
            kind: kind_of(&*source),
            source,
        }
    }
}

/// A refused certificate, when the TLS library says so (rustls does, inside the I/O
/// error its stream returns); any other failure is a failed handshake.
fn kind_of(err: &(dyn std::error::Error + Send + Sync + 'static)) -> TlsFailure {
    let rustls = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .or_else(|| err.downcast_ref::<rustls::Error>());
    match rustls {
        Some(rustls::Error::InvalidCertificate(_)) => TlsFailure::Certificate,
        _ => TlsFailure::Handshake,
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS handshake with {} (sslmode={})",
            self.host, self.mode
        )
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A connector whose failures are [`HandshakeError`]s and whose use is tracked.
#[derive(Clone)]
pub(crate) struct Checked<T> {
    inner: T,
    mode: SslMode,
}

impl<T> Checked<T> {
    /// Wraps `inner`, used in `mode`.
    pub(crate) fn new(inner: T, mode: SslMode) -> Checked<T> {
        Checked { inner, mode }
    }
}

impl<T> MakeTlsConnect<Socket> for Checked<T>
where
    T: MakeTlsConnect<Socket>,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send + 'static,
{
    type Stream = T::Stream;
    type TlsConnect = CheckedConnect<T::TlsConnect>;
    type Error = HandshakeError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, HandshakeError> {
        set_progress(Progress::TlsPrepared);
        match self.inner.make_tls_connect(domain) {
            Ok(inner) => Ok(CheckedConnect {
                inner,
                host: domain.to_owned(),
                mode: self.mode,
            }),
            Err(e) => Err(HandshakeError::new(domain, self.mode, e.into())),
        }
    }
}

/// The connector of one connection, from [`Checked`].
pub(crate) struct CheckedConnect<C> {
    inner: C,
    host: String,
    mode: SslMode,
}

impl<C> TlsConnect<Socket> for CheckedConnect<C>
where
    C: TlsConnect<Socket>,
    C::Future: Send + 'static,
{
    type Stream = C::Stream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Stream, HandshakeError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        set_progress(Progress::Handshaking);
        let CheckedConnect { inner, host, mode } = self;
        let handshake = inner.connect(stream);
        Box::pin(async move {
            handshake
                .await
                .map_err(|e| HandshakeError::new(&host, mode, e.into()))
        })
    }
}
