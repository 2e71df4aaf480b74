//! A TCP proxy in front of PostgreSQL that injects network faults, for tests of what a
//! caller sees when the network misbehaves and of how the store recovers.
//!
//! Faults are set at run time, for every connection through the proxy
//! ([`FaultProxy::set_global`]) or for one ([`ProxyConnection::set`]), and apply to the
//! bytes read from then on:
//!
//! - a delay before each chunk read in a direction is looked at (then forwarded, held or
//!   cut);
//! - a black hole: nothing is forwarded in either direction and nothing is closed (a
//!   partition, or a stalled peer); what was held is forwarded once it is lifted;
//! - a cut after `n` more bytes in one direction: the first `n` bytes are forwarded, then
//!   that direction is closed towards its receiver (which reads end-of-file) and nothing
//!   more is read from its sender. The other direction keeps forwarding until its own
//!   sender closes: a client->server cut lets the server's answers to what it received
//!   still reach the client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// How often a held (black-holed) direction looks whether the hole was lifted.
const HOLD_POLL: Duration = Duration::from_millis(10);

/// A direction of a proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (marten) to the server.
    ClientToServer,
    /// From the server to the client.
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

/// The faults of one scope (the whole proxy, or one connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Delay before each chunk is forwarded, per direction (client->server, server->client).
    pub delay: [Duration; 2],
    /// Forward nothing, close nothing.
    pub black_hole: bool,
    /// Bytes still forwarded before the direction is cut, per direction; `None`: no cut.
    pub cut_after: [Option<u64>; 2],
}

impl Faults {
    /// No fault.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// A delay of `delay` before each chunk in `direction`.
    pub fn delay(direction: Direction, delay: Duration) -> Faults {
        let mut f = Faults::default();
        f.delay[direction.index()] = delay;
        f
    }

    /// A black hole: nothing forwarded, nothing closed.
    pub fn black_hole() -> Faults {
        Faults {
            black_hole: true,
            ..Faults::default()
        }
    }

    /// A cut of `direction` after `bytes` more bytes.
    pub fn cut_after(direction: Direction, bytes: u64) -> Faults {
        let mut f = Faults::default();
        f.cut_after[direction.index()] = Some(bytes);
        f
    }
}

/// A running fault proxy; it stops, closing every connection through it, when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: String,
    global: Mutex<Faults>,
    connections: Mutex<Vec<Arc<ConnState>>>,
    next_id: AtomicU64,
}

struct ConnState {
    id: u64,
    faults: Mutex<Faults>,
    closed: AtomicBool,
    tasks: Mutex<Vec<AbortHandle>>,
}

/// One connection through a [`FaultProxy`].
#[derive(Clone)]
pub struct ProxyConnection {
    state: Arc<ConnState>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `upstream` (`host:port`), without faults.
    pub async fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            global: Mutex::new(Faults::none()),
            connections: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let accepting = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = accepting.clone();
                let state = Arc::new(ConnState {
                    id: shared.next_id.fetch_add(1, Ordering::SeqCst),
                    faults: Mutex::new(Faults::none()),
                    closed: AtomicBool::new(false),
                    tasks: Mutex::new(Vec::new()),
                });
                lock(&shared.connections).push(state.clone());
                let conn = state.clone();
                let handle = tokio::spawn(async move {
                    match TcpStream::connect(&shared.upstream).await {
                        Ok(server) => serve(client, server, shared.clone(), conn.clone()).await,
                        Err(_) => conn.closed.store(true, Ordering::SeqCst),
                    }
                });
                lock(&state.tasks).push(handle.abort_handle());
            }
        });
        Ok(FaultProxy { addr, shared, task })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the faults of every connection, present and future (on top of each
    /// connection's own). A cut's byte budget is shared by all connections.
    pub fn set_global(&self, faults: Faults) {
        *lock(&self.shared.global) = faults;
    }

    /// Removes every fault, global and per connection.
    pub fn heal(&self) {
        self.set_global(Faults::none());
        for c in self.connections() {
            c.set(Faults::none());
        }
    }

    /// The connections through the proxy that are still open, oldest first.
    pub fn connections(&self) -> Vec<ProxyConnection> {
        let mut all = lock(&self.shared.connections);
        all.retain(|c| !c.closed.load(Ordering::SeqCst));
        all.iter()
            .map(|c| ProxyConnection { state: c.clone() })
            .collect()
    }

    /// How many connections the proxy accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.next_id.load(Ordering::SeqCst) - 1
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        for c in lock(&self.shared.connections).iter() {
            for t in lock(&c.tasks).iter() {
                t.abort();
            }
        }
    }
}

impl ProxyConnection {
    /// The connection's number, in accept order from 1.
    pub fn id(&self) -> u64 {
        self.state.id
    }

    /// Sets this connection's own faults (replacing what it had).
    pub fn set(&self, faults: Faults) {
        *lock(&self.state.faults) = faults;
    }

    /// Whether either side closed the connection (or the proxy cut it).
    pub fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::SeqCst)
    }
}

async fn serve(client: TcpStream, server: TcpStream, shared: Arc<Shared>, conn: Arc<ConnState>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(
        pump(Direction::ClientToServer, cr, sw, &shared, &conn),
        pump(Direction::ServerToClient, sr, cw, &shared, &conn),
    );
    conn.closed.store(true, Ordering::SeqCst);
}

/// What to do with a chunk read in one direction.
enum Verdict {
    /// Hold it (black hole).
    Hold,
    /// Forward all of it.
    Forward,
    /// Forward the first `n` bytes, then cut.
    Cut { n: usize },
}

fn verdict(direction: Direction, len: usize, shared: &Shared, conn: &ConnState) -> Verdict {
    let mut global = lock(&shared.global);
    let mut own = lock(&conn.faults);
    if global.black_hole || own.black_hole {
        return Verdict::Hold;
    }
    let i = direction.index();
    let len64 = len as u64;
    for left in [&mut global.cut_after[i], &mut own.cut_after[i]]
        .into_iter()
        .flatten()
    {
        if *left < len64 {
            // Below `len`, a `usize`.
            let n = usize::try_from(*left).unwrap_or(len);
            *left = 0;
            return Verdict::Cut { n };
        }
    }
    for budget in [&mut global.cut_after[i], &mut own.cut_after[i]]
        .into_iter()
        .flatten()
    {
        *budget -= len64;
    }
    Verdict::Forward
}

fn delay_of(direction: Direction, shared: &Shared, conn: &ConnState) -> Duration {
    let i = direction.index();
    let global = lock(&shared.global).delay[i];
    global.max(lock(&conn.faults).delay[i])
}

async fn pump(
    direction: Direction,
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    conn: &ConnState,
) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A delay comes first: a cut or a black hole set meanwhile applies to the chunk.
        let delay = delay_of(direction, shared, conn);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        loop {
            match verdict(direction, n, shared, conn) {
                Verdict::Hold => tokio::time::sleep(HOLD_POLL).await,
                Verdict::Forward => break,
                Verdict::Cut { n: keep } => {
                    let _ = to.write_all(&buf[..keep]).await;
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
