//! [`BoundConsole`]: a console bound to a socket, served until the host stops it.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

use crate::error::ConsoleError;

/// A console bound to a listening socket ([`Console::bind`](crate::Console::bind)).
#[derive(Debug)]
pub struct BoundConsole {
    listener: TcpListener,
    router: Router,
    base: String,
}

impl BoundConsole {
    pub(crate) fn new(listener: TcpListener, router: Router, base: String) -> Self {
        BoundConsole {
            listener,
            router,
            base,
        }
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, ConsoleError> {
        Ok(self.listener.local_addr()?)
    }

    /// The console's URL (`http://127.0.0.1:PORT/...`).
    pub fn url(&self) -> Result<String, ConsoleError> {
        let addr = self.local_addr()?;
        Ok(format!("http://{addr}{}/", self.base))
    }

    /// Serves requests until the future fails.
    pub async fn serve(self) -> Result<(), ConsoleError> {
        axum::serve(self.listener, self.router).await?;
        Ok(())
    }

    /// Serves requests until `signal` completes (then finishes the requests under way).
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ConsoleError> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(signal)
            .await?;
        Ok(())
    }
}
