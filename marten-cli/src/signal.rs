//! The stop signals of a long-running command: SIGTERM (what service managers and
//! container runtimes send) and Ctrl-C (SIGINT).

use crate::CliError;

/// Listens for the stop signals from now on (a signal that arrives before
/// [`Shutdown::received`] is awaited is not lost).
pub(crate) struct Shutdown {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Installs the handlers.
    pub(crate) fn listen() -> Result<Shutdown, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Shutdown {
                terminate: signal(SignalKind::terminate()).map_err(CliError::Signal)?,
                interrupt: signal(SignalKind::interrupt()).map_err(CliError::Signal)?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Shutdown {})
        }
    }

    /// Resolves when a stop signal has arrived; returns its name.
    pub(crate) async fn received(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
