//! A TCP proxy in front of PostgreSQL that counts round trips, for tests that prove how
//! many network flights an operation takes (pipelining, identity map hits).
//!
//! A round trip is counted each time the client starts sending after the server last
//! sent (or for the first time): a pipelined batch written at once is one round trip
//! however many statements it holds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CLIENT: u8 = 1;
const SERVER: u8 = 2;

/// A running proxy; it stops when dropped.
pub struct CountingProxy {
    addr: SocketAddr,
    turns: Arc<AtomicU64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> std::io::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let turns = Arc::new(AtomicU64::new(0));
        let upstream = upstream.to_owned();
        let counter = turns.clone();
        let accepted = Arc::new(AtomicU64::new(0));
        let accepts = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accepts.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        pump(client, server, counter).await;
                    }
                });
            }
        });
        Ok(CountingProxy {
            addr,
            turns,
            accepted,
            task,
        })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Round trips counted so far, over all connections.
    pub fn round_trips(&self) -> u64 {
        self.turns.load(Ordering::SeqCst)
    }

    /// Connections opened through the proxy so far (cancel requests included).
    pub fn connections(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pump(client: TcpStream, server: TcpStream, turns: Arc<AtomicU64>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let last = Arc::new(AtomicU8::new(SERVER));
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up_last = last.clone();
    let up = async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if up_last.swap(CLIENT, Ordering::SeqCst) == SERVER {
                turns.fetch_add(1, Ordering::SeqCst);
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            last.store(SERVER, Ordering::SeqCst);
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}
