//! Shared by the console's tests: a seeded store on a schema of the test's own, a console
//! served on a loopback port, and a tiny HTTP/1.1 client over a `TcpStream`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use marten::daemon::{Daemon, DaemonOptions, PoisonPolicy};
use marten::prelude::*;
use marten_console::{Console, ConsoleBuilder, QueryField};
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What every hostile value contains.
pub const SCRIPT: &str = "<script>alert('pwned')</script>";

#[derive(Tag, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[tag(name = "customer")]
pub struct CustomerTag(pub String);

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "order_placed")]
pub struct OrderPlaced {
    #[tag]
    pub customer: CustomerTag,
    pub note: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "order_shipped")]
pub struct OrderShipped {
    pub carrier: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
#[event(name = "boom")]
pub struct Boom {}

/// An async projection over every order stream.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
pub struct OrderSummary {
    pub id: Uuid,
    pub version: i64,
    pub placed: i64,
    pub shipped: i64,
}

#[marten::apply]
impl OrderSummary {
    fn apply_placed(&mut self, _e: &OrderPlaced) {
        self.placed += 1;
    }
    fn apply_shipped(&mut self, _e: &OrderShipped) {
        self.shipped += 1;
    }
    fn apply_boom(&mut self, _e: &Boom) {
        panic!("boom: the summary cannot take this event");
    }
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
pub struct Invoice {
    pub id: i64,
    pub customer: String,
    pub total: i64,
    pub paid: bool,
}

/// Unwraps a marten result in a test.
#[track_caller]
pub fn ok<T>(r: marten::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("unexpected error: {e} ({e:?})"),
    }
}

/// A store on a fresh schema with the test types registered.
pub async fn store(label: &str) -> (TestSchema, DocumentStore) {
    let schema = TestSchema::new(label);
    let store = ok(DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .pool_size(6)
        .event::<OrderPlaced>()
        .event::<OrderShipped>()
        .event::<Boom>()
        .projection::<OrderSummary>(Lifecycle::Async)
        .build()
        .await);
    (schema, store)
}

/// The seeded data's ids.
pub struct Seeded {
    /// The stream whose events carry hostile data and headers.
    pub hostile: Uuid,
    /// A stream with a poison event (dead-lettered by [`run_daemon`]).
    pub poisoned: Uuid,
    /// Plain streams.
    pub plain: Vec<Uuid>,
}

/// Seeds `streams` plain order streams (two events each), one hostile stream and one
/// poisoned stream, and `invoices` invoices.
pub async fn seed(store: &DocumentStore, streams: usize, invoices: i64) -> Seeded {
    let mut s = store.lightweight_session();
    let hostile = Uuid::now_v7();
    s.set_correlation_id(Some(format!("corr-{SCRIPT}")));
    s.set_causation_id(Some("cause-42".to_owned()));
    s.set_header("origin", SCRIPT);
    ok(s.events().append(
        hostile,
        [OrderPlaced {
            customer: CustomerTag(format!("acme{SCRIPT}")),
            note: SCRIPT.to_owned(),
        }],
    ));
    ok(s.save_changes().await);
    let mut s = store.lightweight_session();
    let mut plain = Vec::new();
    for i in 0..streams {
        let id = Uuid::now_v7();
        plain.push(id);
        ok(s.events().append(
            id,
            [
                PendingEvent::new(OrderPlaced {
                    customer: CustomerTag(format!("c{}", i % 3)),
                    note: format!("order {i}"),
                }),
                PendingEvent::new(OrderShipped {
                    carrier: "post".to_owned(),
                }),
            ],
        ));
    }
    let poisoned = Uuid::now_v7();
    ok(s.events().append(poisoned, [Boom {}]));
    for i in 1..=invoices {
        ok(s.store(Invoice {
            id: i,
            customer: if i % 2 == 0 {
                "acme".into()
            } else {
                "globex".into()
            },
            total: i * 10,
            paid: i % 3 == 0,
        }));
    }
    ok(s.save_changes().await);
    Seeded {
        hostile,
        poisoned,
        plain,
    }
}

/// Runs the daemon until the projections have caught up (poison events dead-lettered
/// after one retry), then stops it.
pub async fn run_daemon(store: &DocumentStore) {
    let daemon = Daemon::start(store, daemon_options());
    ok(daemon.wait_for_non_stale(Duration::from_secs(30)).await);
    ok(daemon.stop().await);
}

/// Dead-letter poison events after one quick retry.
pub fn daemon_options() -> DaemonOptions {
    DaemonOptions {
        retries: 1,
        poison: PoisonPolicy::DeadLetter,
        node: "node-a".to_owned(),
        ..DaemonOptions::default()
    }
}

/// The console builder the tests use: invoices registered with three query fields.
pub fn console(store: &DocumentStore) -> ConsoleBuilder {
    Console::builder(store).document::<Invoice>(|f| {
        vec![
            QueryField::text(f.customer),
            QueryField::ordered(f.total),
            QueryField::equality(f.paid),
        ]
    })
}

/// Serves `console` on a loopback port; the task is aborted when the handle drops.
pub async fn serve(console: &Console) -> Served {
    let bound = match console.bind(([127, 0, 0, 1], 0).into()).await {
        Ok(b) => b,
        Err(e) => panic!("bind: {e}"),
    };
    let addr = match bound.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local addr: {e}"),
    };
    let task = tokio::spawn(async move {
        let _ = bound.serve().await;
    });
    Served { addr, task }
}

/// Serves `app` (a service mounting a console's router) on a loopback port, with the
/// peer's address (`ConnectInfo`, which a mounted console without an auth hook needs).
pub async fn serve_app(app: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Served { addr, task }
}

/// Serves `app` on a loopback port without the peer's address (plain `axum::serve`).
pub async fn serve_app_without_peer(app: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Served { addr, task }
}

/// A console being served.
pub struct Served {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (HTTP/1.1, `Connection: close`, `Host: addr` unless `headers` name
/// another) and reads the whole response, within 10 s.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        // `Host: {addr}` unless the test gives its own.
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req.push_str(&format!("Host: {addr}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).await.expect("write");
        // Read to the end, or to the end of a body of a stated length (a server may
        // keep the connection open).
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if let Some(end) = complete(&raw) {
                raw.truncate(end);
                break;
            }
        }
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .expect("the console answers within 10 s");
    parse(&raw)
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], "").await
}

/// `GET path`, expecting 200; the body.
pub async fn page(addr: SocketAddr, path: &str) -> String {
    let r = get(addr, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    r.body
}

/// The length of a whole response with a `Content-Length`, once `raw` holds it all.
fn complete(raw: &[u8]) -> Option<usize> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())?;
    (raw.len() >= head_end + len).then_some(head_end + len)
}

fn parse(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The query string value of `s`, percent-encoded.
pub fn enc(s: &str) -> String {
    marten_console::html::percent_encode(s)
}
