//! The console in a real browser: headless Chromium (Debian's `chromium`), driven over
//! the DevTools protocol, opens the projections page while the daemon catches up and
//! sees the lag the page shows fall to zero without a reload (the page's script), then
//! takes a screenshot of each page (written to `docs/console/` when
//! `MARTEN_CONSOLE_SCREENSHOTS=1`). Skipped, saying so, only when no Chromium binary is
//! installed (`.ci/run` installs it).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
use marten::daemon::{Daemon, DaemonHooks, DaemonOptions};
use marten::prelude::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// A headless Chromium, killed (and its profile removed) when dropped.
struct Browser {
    child: Child,
    profile: PathBuf,
    devtools: SocketAddr,
}

impl Browser {
    async fn start(binary: &PathBuf) -> Browser {
        let profile =
            std::env::temp_dir().join(format!("marten-console-chromium-{}", Uuid::now_v7()));
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        let stderr = child.stderr.take().expect("chromium's stderr");
        let mut lines = BufReader::new(stderr).lines();
        let find = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return Some(url.trim().to_owned());
                }
            }
            None
        };
        let url = tokio::time::timeout(Duration::from_secs(30), find)
            .await
            .expect("chromium announces its DevTools port within 30 s")
            .expect("chromium's DevTools line");
        // Keep draining stderr so the browser never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let host = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .expect("host:port")
            .to_owned();
        Browser {
            child,
            profile,
            devtools: host.parse().expect("a socket address"),
        }
    }

    /// The first page target's websocket URL.
    async fn page_socket(&self) -> String {
        let list = get(self.devtools, "/json/list").await;
        let targets: Value = serde_json::from_str(&list.body).expect("targets");
        targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools protocol session on one page.
struct Cdp {
    ws: Socket,
    next: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("devtools websocket");
        Cdp { ws, next: 0 }
    }

    /// Calls `method` and returns its result (events in between are skipped), within 20 s.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::text(msg)).await.expect("send");
        let wait = async {
            while let Some(msg) = self.ws.next().await {
                let Ok(Message::Text(text)) = msg else {
                    continue;
                };
                let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if v["id"] == id {
                    if let Some(e) = v.get("error") {
                        panic!("{method}: {e}");
                    }
                    return v["result"].clone();
                }
            }
            panic!("devtools closed during {method}");
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .unwrap_or_else(|_| panic!("{method} answered within 20 s"))
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Navigates and waits for the document to be complete.
    async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url })).await;
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let state = self.eval("document.readyState + ' ' + location.href").await;
            if state
                .as_str()
                .is_some_and(|s| s.starts_with("complete ") && s.ends_with(url))
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{url} loads: {state}"
            );
        }
    }

    async fn screenshot(&mut self, name: &str) {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("image data"))
            .expect("base64");
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000,
            "{name}"
        );
        if std::env::var_os("MARTEN_CONSOLE_SCREENSHOTS").is_some() {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console");
            std::fs::create_dir_all(&dir).expect("docs/console");
            std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
        }
    }
}

/// Slows the daemon down (each batch waits) so that a person, and the test, can watch
/// the lag fall.
struct Slow;

impl DaemonHooks for Slow {
    fn before_batch(&self, _projection: &str) {
        std::thread::sleep(Duration::from_millis(60));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn the_projections_page_shows_the_lag_fall_while_the_daemon_catches_up() {
    let Some(binary) = chromium() else {
        eprintln!(
            "SKIPPED: no Chromium binary (chromium or chromium-browser on PATH, or $CHROMIUM); \
             install Debian's `chromium` package to run this test"
        );
        return;
    };
    let (_schema, store) = store("console_browser").await;
    let seeded = seed(&store, 3, 30).await;
    // 6000 more events to catch up on.
    let mut s = store.lightweight_session();
    for _ in 0..60 {
        ok(s.events().append(
            Uuid::now_v7(),
            (0..100).map(|_| OrderShipped {
                carrier: "post".into(),
            }),
        ));
    }
    ok(s.save_changes().await);
    let console = console(&store)
        .options({
            let mut o = marten_console::ConsoleOptions::default();
            o.sample_every = Duration::from_millis(250);
            o
        })
        .actions(true)
        .build();
    let served = serve(&console).await;
    let base = format!("http://{}", served.addr);

    let browser = Browser::start(&binary).await;
    let mut cdp = Cdp::connect(&browser.page_socket().await).await;
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;

    let daemon = Daemon::start(
        &store,
        DaemonOptions {
            batch_size: 100,
            hooks: Arc::new(Slow),
            ..daemon_options()
        },
    );
    // The slot's row exists once the daemon has claimed it.
    let start = Instant::now();
    loop {
        let live = get(served.addr, "/projections.json").await;
        if live.body.contains("OrderSummary") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the daemon claims its slot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cdp.open(&format!("{base}/projections")).await;
    let lag_js =
        "Number(document.querySelector('tr[data-slot=\"OrderSummary\"] .lag').textContent)";
    let mut seen: Vec<i64> = Vec::new();
    let start = Instant::now();
    loop {
        let lag = cdp.eval(lag_js).await.as_i64().expect("a lag number");
        if seen.last() != Some(&lag) {
            seen.push(lag);
        }
        if lag == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "the lag reaches zero within 40 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen[0] > 1000,
        "the page opened while the daemon was behind: {seen:?}"
    );
    assert!(
        seen.len() >= 3,
        "the page showed the lag fall in steps without a reload: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[1] <= w[0]),
        "the lag only falls: {seen:?}"
    );
    let width = cdp
        .eval("document.querySelector('tr[data-slot=\"OrderSummary\"] .fill').style.width")
        .await;
    assert_eq!(width, "100%", "the bar is full once caught up");
    eprintln!("lag seen on the page: {seen:?}");
    // Let the history gather a few samples for the chart, then show every page.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ok(daemon.stop().await);
    cdp.open(&format!("{base}/projections")).await;
    cdp.screenshot("projections").await;
    for (name, path) in [
        ("streams", "/streams".to_owned()),
        ("stream", format!("/streams/{}", seeded.hostile)),
        (
            "documents",
            "/documents/Invoice?field=total&op=gt&value=100".to_owned(),
        ),
        ("dead-letters", "/dead-letters".to_owned()),
        ("tags", "/tags?type=customer&value=c0".to_owned()),
    ] {
        cdp.open(&format!("{base}{path}")).await;
        let injected = cdp.eval("document.querySelectorAll('script').length").await;
        assert_eq!(injected, 1, "{name}: only the console's own script runs");
        cdp.screenshot(name).await;
    }
    drop(cdp);
    drop(browser);
}
