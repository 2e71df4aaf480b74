//! The command line as a user runs it: `examples/cli.rs` (a program embedding
//! `marten::cli::Command`) started as a process, each test on a schema of its own; and
//! one rebuild run in-process, for the daemon's poison policy.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use marten_testing::TestSchema;

/// Builds the example once per test process (so it is never stale) and returns its path.
fn example() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let output = Command::new(env!("CARGO"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--example", "cli", "--features", "cli"])
            .args(["--message-format", "json"])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo");
        assert!(output.status.success(), "cargo build --example cli failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|m| m["target"]["name"] == "cli" && m["target"]["kind"][0] == "example")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the example's executable")
    })
}

/// The example with `args`, against `url` and `schema`.
fn cli(url: &str, schema: &str, args: &[&str]) -> Command {
    let mut c = Command::new(example());
    c.args(args)
        .env("DATABASE_URL", url)
        .env("MARTEN_SCHEMA", schema);
    c
}

/// Runs the example to its end.
fn run(schema: &TestSchema, args: &[&str]) -> Output {
    cli(schema.url(), schema.name(), args)
        .output()
        .expect("run the example")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn succeeded(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Waits for `child` (its stdout and stderr piped) at most `limit`, reading both as it
/// runs: its status and output, or (killed at the limit) what it had written.
fn wait_bounded(
    mut child: std::process::Child,
    limit: Duration,
) -> Result<Output, (String, String)> {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err((text(&stdout), text(&stderr))),
    }
}

/// A URL on a port nothing listens on.
fn closed_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=2")
}

#[test]
fn help_and_version_need_no_database() {
    let url = closed_url();
    let help = succeeded(&cli(&url, "unused", &["--help"]).output().expect("run"));
    assert!(
        help.contains("schema") && help.contains("projections"),
        "{help}"
    );
    let help = succeeded(
        &cli(&url, "unused", &["schema", "--help"])
            .output()
            .expect("run"),
    );
    for command in ["apply", "patch", "assert", "dump"] {
        assert!(help.contains(command), "{help}");
    }
    let version = succeeded(&cli(&url, "unused", &["--version"]).output().expect("run"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    // The same URL fails a command that connects: the successes above made no connection.
    let o = cli(&url, "unused", &["projections", "status"])
        .output()
        .expect("run");
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(text(&o.stderr).contains("error"), "{}", text(&o.stderr));
    // A usage error is reported before any connection too.
    let o = cli(&url, "unused", &["schema", "nonsense"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn schema_dump_prints_the_ddl() {
    let schema = TestSchema::new("cli_dump");
    let out = succeeded(&run(&schema, &["schema", "dump"]));
    let create = format!("CREATE SCHEMA IF NOT EXISTS {}", schema.name());
    assert!(out.contains(&create), "{out}");
    assert!(
        out.contains("mt_doc_note") && out.contains("mt_events"),
        "{out}"
    );
}

#[test]
fn schema_assert_fails_before_apply_and_passes_after() {
    let schema = TestSchema::new("cli_assert");
    let before = run(&schema, &["schema", "assert"]);
    assert!(!before.status.success(), "{}", text(&before.stdout));
    let err = text(&before.stderr);
    let missing = format!("table {}.mt_doc_note is missing", schema.name());
    assert!(err.contains(&missing), "{err}");
    let applied = succeeded(&run(&schema, &["schema", "apply"]));
    assert!(applied.contains("updated"), "{applied}");
    let after = succeeded(&run(&schema, &["schema", "assert"]));
    assert!(after.contains("matches"), "{after}");
}

#[test]
fn schema_patch_writes_the_patch_to_a_file() {
    let schema = TestSchema::new("cli_patch");
    let file = std::env::temp_dir().join(format!("{}.sql", schema.name()));
    let path = file.to_string_lossy().into_owned();
    succeeded(&run(&schema, &["schema", "patch", "--out", &path]));
    let patch = std::fs::read_to_string(&file).expect("the patch file");
    let _ = std::fs::remove_file(&file);
    let table = format!("CREATE TABLE IF NOT EXISTS {}.mt_doc_note", schema.name());
    assert!(patch.contains(&table), "{patch}");
    // The patch only wrote the file: the database is still behind.
    let o = run(&schema, &["schema", "assert"]);
    assert!(!o.status.success(), "{}", text(&o.stdout));
}

#[test]
fn projections_status_prints_each_projection() {
    let schema = TestSchema::new("cli_status");
    succeeded(&run(&schema, &["seed", "20"]));
    let out = succeeded(&run(&schema, &["projections", "status"]));
    let line = out
        .lines()
        .find(|l| l.starts_with("Counter"))
        .unwrap_or_else(|| panic!("no Counter line in {out}"));
    assert!(
        line.contains("0/20") && line.contains("lag       20"),
        "{line}"
    );
}

#[test]
fn projections_rebuild_replays_and_names_unknown_projections() {
    let schema = TestSchema::new("cli_rebuild");
    succeeded(&run(&schema, &["seed", "30"]));
    let out = succeeded(&run(&schema, &["projections", "rebuild", "Counter"]));
    assert!(
        out.contains("30/30") && out.contains("Counter rebuilt"),
        "{out}"
    );
    let o = run(&schema, &["projections", "rebuild", "Nope"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("Counter"), "{}", text(&o.stderr));
}

/// Starts the daemon, waits until it has projected everything, sends `signal`, and
/// expects a graceful exit (status 0) within a bound.
fn daemon_stops_on(signal: &str) {
    let schema = TestSchema::new(&format!("cli_daemon_{signal}"));
    succeeded(&run(&schema, &["seed", "50"]));
    let mut child = cli(schema.url(), schema.name(), &["projections", "daemon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("50/50")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the daemon did not catch up: {seen:#?}");
            }
        }
    }
    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-s", signal, &pid]).status();
    assert!(kill.is_ok_and(|s| s.success()), "kill -s {signal} {pid}");
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the daemon did not stop within 15 s of {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    seen.extend(lines.iter());
    assert!(
        status.success(),
        "exit {status:?} after {signal}: {seen:#?}"
    );
    assert!(seen.iter().any(|l| l == "daemon stopped"), "{seen:#?}");
}

#[test]
fn projections_daemon_stops_gracefully_on_sigterm() {
    daemon_stops_on("TERM");
}

#[test]
fn projections_daemon_stops_gracefully_on_ctrl_c() {
    daemon_stops_on("INT");
}

/// The example's event and aggregate, for appending and loading from the test itself
/// (same names and shapes, so the example's store reads them).
mod example_types {
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct Added {
        pub n: i64,
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    pub struct Counter {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
    }

    #[marten::apply]
    impl Counter {
        fn apply(&mut self, e: &Added) {
            self.total += e.n;
        }
    }

    /// A store on `schema` knowing the example's event and aggregate (it runs no daemon).
    pub async fn store(schema: &marten_testing::TestSchema) -> DocumentStore {
        DocumentStore::builder()
            .connection_string(schema.url())
            .schema(schema.name())
            .projection::<Counter>(Lifecycle::Async)
            .build()
            .await
            .expect("the test's store")
    }

    /// Appends `streams` streams of the events 1..=10 (a counter of 55 each).
    pub async fn seed(store: &DocumentStore, streams: usize) -> Vec<Uuid> {
        let ids: Vec<Uuid> = (0..streams).map(|_| Uuid::now_v7()).collect();
        let mut session = store.lightweight_session();
        for id in &ids {
            session
                .events()
                .append(*id, (1..=10).map(|n| Added { n }))
                .expect("append");
        }
        session.save_changes().await.expect("seed");
        ids
    }
}

/// Takes, on a connection of the test's own, the advisory lock the daemon's runner of
/// `slot` takes first (its key as `marten-pg`'s daemon forms it): while the returned
/// client lives, another node owns the slot and does not move it, and no daemon of the
/// example runs it.
async fn hold_slot(schema: &TestSchema, slot: &str) -> tokio_postgres::Client {
    let client = schema.raw_client().await;
    let key = format!("marten:daemon:{}:{slot}", schema.name());
    client
        .execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", &[&key])
        .await
        .expect("the slot's lock");
    client
}

/// Issue: `projections rebuild` ended only when every async projection was caught up at
/// one moment. With events appended all the time and another projection that lags (here
/// `Totals`, owned by a node that does not move it), that moment never came: the command
/// ran for ever. It now ends once the rebuilt projection has passed the head recorded at
/// its reset, whatever is appended meanwhile and however far the others are.
#[test]
fn projections_rebuild_returns_despite_continuous_appends() {
    use example_types::{Added, Counter};
    use marten::prelude::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let schema = TestSchema::new("cli_rebuild_busy");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let store = runtime.block_on(example_types::store(&schema));
    // Before the reset: the reset deletes their counters, the replay must bring them back.
    let seeded = runtime.block_on(example_types::seed(&store, 20));
    let _totals = runtime.block_on(hold_slot(&schema, "Totals"));
    // An event every ~15 ms to a stream of its own until the command has returned.
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let appender = {
        let (store, stop, appended) = (store.clone(), stop.clone(), appended.clone());
        runtime.spawn(async move {
            let busy = Uuid::now_v7();
            while !stop.load(Ordering::Relaxed) {
                let mut session = store.lightweight_session();
                session
                    .events()
                    .append(busy, [Added { n: 1 }])
                    .expect("append");
                session.save_changes().await.expect("append");
                appended.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    while appended.load(Ordering::Relaxed) < 10 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let child = cli(
        schema.url(),
        schema.name(),
        &["projections", "rebuild", "Counter"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the rebuild");
    let finished = wait_bounded(child, Duration::from_secs(40));
    let during = appended.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(appender).expect("the appender");
    let output = match finished {
        Ok(output) => output,
        Err((stdout, stderr)) => panic!(
            "the rebuild did not return within 40 s ({during} events appended)\nstdout:\n{stdout}\nstderr:\n{stderr}"
        ),
    };
    let out = succeeded(&output);
    assert!(out.contains("Counter rebuilt"), "{out}");
    // Every counter of the events before the reset was replayed.
    runtime.block_on(async {
        let mut query = store.query_session();
        for id in &seeded {
            let counter: Option<Counter> = query.load(id).await.expect("load");
            assert_eq!(counter.map(|c| c.total), Some(55), "stream {id}");
        }
    });
    // The other projection never moved: the rebuild did not wait for it.
    let status = succeeded(&run(&schema, &["projections", "status"]));
    let totals = status
        .lines()
        .find(|l| l.starts_with("Totals"))
        .unwrap_or_else(|| panic!("no Totals line in {status}"));
    assert!(
        totals.split_whitespace().any(|w| w.starts_with("0/")),
        "{totals}"
    );
}

/// `--timeout` ends a rebuild whose projection does not get to the head of its reset
/// (its slot is owned by a node that does not move it) with a typed error, after
/// stopping the daemon gracefully: exit 1, not a hang.
#[test]
fn projections_rebuild_times_out_with_an_error() {
    let schema = TestSchema::new("cli_rebuild_timeout");
    succeeded(&run(&schema, &["seed", "30"]));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let _counter = runtime.block_on(hold_slot(&schema, "Counter"));
    let began = Instant::now();
    let child = cli(
        schema.url(),
        schema.name(),
        &["projections", "rebuild", "Counter", "--timeout", "1"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the rebuild");
    let output = wait_bounded(child, Duration::from_secs(30)).unwrap_or_else(|(out, err)| {
        panic!("the rebuild did not end within 30 s\nstdout:\n{out}\nstderr:\n{err}")
    });
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Counter did not reach event 30") && err.contains("within 1s"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(began.elapsed() >= Duration::from_secs(1));
    assert!(!text(&output.stdout).contains("rebuilt"));
}

/// SIGINT and SIGTERM end a rebuild that waits (its slot owned by a node that does not
/// move it) cleanly: the daemon stopped gracefully, a typed error, exit 1.
#[test]
fn projections_rebuild_stops_cleanly_on_a_signal() {
    let schema = TestSchema::new("cli_rebuild_signal");
    succeeded(&run(&schema, &["seed", "30"]));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let _counter = runtime.block_on(hold_slot(&schema, "Counter"));
    for (signal, name) in [("INT", "SIGINT"), ("TERM", "SIGTERM")] {
        let mut child = cli(
            schema.url(),
            schema.name(),
            &["projections", "rebuild", "Counter"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the rebuild");
        // Its first progress line: the reset is done, the replay waits.
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        while !line.starts_with("Counter") {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("the rebuild ended before its first progress line");
            }
        }
        let pid = child.id().to_string();
        let kill = Command::new("kill").args(["-s", signal, &pid]).status();
        assert!(kill.is_ok_and(|s| s.success()), "kill -s {signal} {pid}");
        let drain = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut rest);
        });
        let output = wait_bounded(child, Duration::from_secs(15)).unwrap_or_else(|(_, err)| {
            panic!("the rebuild did not stop within 15 s of {signal}\nstderr:\n{err}")
        });
        let _ = drain.join();
        let err = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{signal}: {err}");
        assert!(
            err.contains(&format!("{name} stopped the rebuild of Counter")),
            "{err}"
        );
    }
}

/// Counter's progression row (position, owner epoch, owner) and its documents' totals,
/// as the test reads them behind the command's back.
async fn counter_state(client: &tokio_postgres::Client) -> ((i64, i64, Option<String>), Vec<i64>) {
    let row = client
        .query_one(
            "SELECT last_seq, owner_epoch, owner FROM mt_event_progression WHERE name = 'Counter'",
            &[],
        )
        .await
        .expect("Counter's progression row");
    let totals = client
        .query(
            "SELECT (data->>'total')::bigint FROM mt_doc_counter ORDER BY id",
            &[],
        )
        .await
        .expect("the counters")
        .iter()
        .map(|r| r.get(0))
        .collect();
    ((row.get(0), row.get(1), row.get(2)), totals)
}

/// Issue: a Ctrl-C while `projections rebuild` checked the projection's name (its status
/// query, retried with pauses when it fails) was acted on only once the reset had
/// committed: the user aborted before anything started, and was left with the projection
/// reset (its documents deleted) and a daemon stopped at once. A signal before the reset
/// now ends the command there: nothing reset, exit 1, and a message that says so.
///
/// The check is held up by a count row of `Totals` edited by hand (a shard count of 0:
/// the status query fails, and is retried); the row is put right once the signal is
/// sent, so a check that went on would pass and reset. (A lock on the progression table
/// would hold up the store's build first, which reads the table's definition, before
/// the command listens for signals.)
#[test]
fn projections_rebuild_stopped_before_its_reset_resets_nothing() {
    let schema = TestSchema::new("cli_rebuild_cancel");
    succeeded(&run(&schema, &["seed", "30"]));
    succeeded(&run(&schema, &["projections", "rebuild", "Counter"]));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let client = runtime.block_on(schema.raw_client());
    let before = runtime.block_on(counter_state(&client));
    assert_eq!(before.0 .0, 30, "{before:?}");
    assert_eq!(before.1, [55, 55, 55], "{before:?}");
    runtime
        .block_on(client.batch_execute(
            "INSERT INTO mt_event_progression (name, last_seq) VALUES ('Totals#shards', 0)",
        ))
        .expect("a count row edited by hand");
    let mut child = cli(
        schema.url(),
        schema.name(),
        &["projections", "rebuild", "Counter"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start the rebuild");
    let stdout = child.stdout.take().expect("piped stdout");
    let out = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut all);
        all
    });
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, errors) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The check's first status query failed: it pauses, then tries again.
    let mut said = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !said
        .iter()
        .any(|l: &String| l.contains("status query failed (attempt 1 of"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match errors.recv_timeout(left) {
            Ok(line) => said.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the check's status query did not fail: {said:#?}");
            }
        }
    }
    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-s", "INT", &pid]).status();
    assert!(kill.is_ok_and(|s| s.success()), "kill -s INT {pid}");
    // From now on the check would pass.
    runtime
        .block_on(
            client.batch_execute("DELETE FROM mt_event_progression WHERE name = 'Totals#shards'"),
        )
        .expect("put the count row right");
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the rebuild did not stop within 15 s of SIGINT: {said:#?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = out.join().unwrap_or_default();
    said.extend(errors.iter());
    let err = said.join("\n");
    let after = runtime.block_on(counter_state(&client));
    assert_eq!(after, before, "the projection was touched; stderr:\n{err}");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("SIGINT stopped the rebuild of Counter before its reset: nothing was reset"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!stdout.contains("rebuilt"), "{stdout}");
}

/// Issue: `projections daemon` never looked at the runners it started: one that stopped
/// on its own (here `Counter`'s, which the daemon may not run whole while two shards of
/// it stand at different positions) left the process saying "daemon running" until a
/// signal. It now stops the daemon and fails at the next refresh, naming the runner.
#[test]
fn projections_daemon_fails_when_a_runner_stops() {
    let schema = TestSchema::new("cli_daemon_runner_stops");
    succeeded(&run(&schema, &["seed", "30"]));
    // Makes the daemon's tables (the status reads them).
    succeeded(&run(&schema, &["projections", "status"]));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        // Counter recorded as 2 shards, one ahead of the other (as a node of another
        // deployment left them): the example's daemon, which runs it whole, refuses.
        schema
            .raw_client()
            .await
            .batch_execute(
                "INSERT INTO mt_event_progression (name, last_seq) VALUES \
                 ('Counter#shards', 2), ('Counter#1/2', 10), ('Counter#2/2', 0)",
            )
            .await
            .expect("record the shards");
    });
    let began = Instant::now();
    let child = cli(schema.url(), schema.name(), &["projections", "daemon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let output = wait_bounded(child, Duration::from_secs(20)).unwrap_or_else(|(out, err)| {
        panic!("the daemon did not end within 20 s\nstdout:\n{out}\nstderr:\n{err}")
    });
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("runner Counter stopped") && err.contains("recorded with 2 shard(s)"),
        "{err}"
    );
    assert!(err.contains("the daemon was stopped"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(began.elapsed() < Duration::from_secs(20));
    let out = text(&output.stdout);
    assert!(
        out.contains("a runner stopped: stopping the daemon"),
        "{out}"
    );
}

/// In-process projections of their own for the daemon's poison policy: `Tally` counts,
/// `Brittle` panics on a negative number.
mod poison_types {
    use marten::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Event, Serialize, Deserialize, Clone, Debug)]
    pub struct Ticked {
        pub n: i64,
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    pub struct Tally {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
    }

    #[marten::apply]
    impl Tally {
        fn apply(&mut self, e: &Ticked) {
            self.total += e.n;
        }
    }

    #[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
    pub struct Brittle {
        pub id: Uuid,
        pub version: i64,
        pub total: i64,
    }

    #[marten::apply]
    impl Brittle {
        fn apply(&mut self, e: &Ticked) {
            assert!(e.n >= 0, "a negative tick");
            self.total += e.n;
        }
    }
}

/// Holds `Tally`'s first batch until `Brittle`'s runner has met its poison event (and,
/// with no retries under `PoisonPolicy::Stop`, stopped).
struct TallyAfterBrittle {
    brittle_failed: std::sync::atomic::AtomicBool,
}

impl marten::daemon::DaemonHooks for TallyAfterBrittle {
    fn before_event(&self, projection: &str, event: &marten::EventEnvelope) {
        let negative = event
            .data_as::<poison_types::Ticked>()
            .is_some_and(|t| t.n < 0);
        if projection == "Brittle" && negative {
            self.brittle_failed
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn before_batch(&self, projection: &str) {
        if projection != "Tally" {
            return;
        }
        let began = Instant::now();
        while !self
            .brittle_failed
            .load(std::sync::atomic::Ordering::SeqCst)
            && began.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A store on a schema of its own (`label`) with `Tally` and `Brittle` run async, and
/// `ticks` appended to a new stream (whose id is returned): `Brittle` stops on a
/// negative tick under [`stopping`].
async fn poison_store(
    label: &str,
    ticks: &[i64],
) -> (TestSchema, marten::DocumentStore, uuid::Uuid) {
    use marten::prelude::*;
    use poison_types::{Brittle, Tally, Ticked};

    let schema = TestSchema::new(label);
    let store = DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .projection::<Tally>(Lifecycle::Async)
        .projection::<Brittle>(Lifecycle::Async)
        .build()
        .await
        .expect("store");
    let mut session = store.lightweight_session();
    let stream = Uuid::now_v7();
    session
        .events()
        .append(stream, ticks.iter().map(|&n| Ticked { n }))
        .expect("append");
    session.save_changes().await.expect("append");
    (schema, store, stream)
}

/// Daemon options that stop a projection at its first poison event.
fn stopping() -> marten::daemon::DaemonOptions {
    marten::daemon::DaemonOptions {
        poison: marten::daemon::PoisonPolicy::Stop,
        retries: 0,
        ..marten::daemon::DaemonOptions::default()
    }
}

/// `projections <args>` as the command line parses it (no struct literal: the variant
/// is the CLI's own).
fn projections_command(args: &[&str]) -> marten::cli::ProjectionsCommand {
    #[derive(clap::Parser)]
    struct Args {
        #[command(subcommand)]
        command: marten::cli::ProjectionsCommand,
    }
    let argv = std::iter::once("projections").chain(args.iter().copied());
    <Args as clap::Parser>::try_parse_from(argv)
        .expect("parse")
        .command
}

/// Issue: a rebuild failed when any other projection's runner stopped
/// (`PoisonPolicy::Stop`). It now fails only when its own does.
#[tokio::test(flavor = "multi_thread")]
async fn projections_rebuild_fails_on_its_own_stop_only() {
    use marten::cli::{projections_with, CliError};
    use poison_types::Tally;

    let (_schema, store, stream) = poison_store("cli_rebuild_poison", &[1, 2, -3, 4]).await;
    let options = stopping;
    let rebuild = |name: &str| projections_command(&["rebuild", name]);

    let hooks = TallyAfterBrittle {
        brittle_failed: std::sync::atomic::AtomicBool::new(false),
    };
    let tally = tokio::time::timeout(
        Duration::from_secs(30),
        projections_with(&store, &rebuild("Tally"), options().with_hooks(hooks)),
    )
    .await
    .expect("the rebuild of Tally ends");
    if let Err(e) = tally {
        panic!("Brittle's stop failed the rebuild of Tally: {e} ({e:?})");
    }
    let total = store
        .query_session()
        .load::<Tally>(&stream)
        .await
        .expect("load")
        .map(|t| t.total);
    assert_eq!(total, Some(4));

    let brittle = tokio::time::timeout(
        Duration::from_secs(30),
        projections_with(&store, &rebuild("Brittle"), options()),
    )
    .await
    .expect("the rebuild of Brittle ends");
    match brittle {
        Err(CliError::Store(marten::Error::ProjectionStopped { projection, .. })) => {
            assert_eq!(projection, "Brittle");
        }
        other => panic!("{other:?}"),
    }
}

/// Issue: `projections daemon` ran on with a runner stopped on a poison event
/// (`PoisonPolicy::Stop`) until a signal. It now stops the daemon and fails, naming it.
#[tokio::test(flavor = "multi_thread")]
async fn projections_daemon_fails_on_a_poison_stop() {
    use marten::cli::{projections_with, CliError};

    let (_schema, store, _) = poison_store("cli_daemon_poison", &[1, -2, 3]).await;
    let (options, daemon) = (stopping(), projections_command(&["daemon"]));
    let ran = tokio::time::timeout(
        Duration::from_secs(30),
        projections_with(&store, &daemon, options),
    )
    .await
    .expect("the daemon ends without a signal");
    match ran {
        Err(CliError::DaemonRunnerStopped { runners }) => {
            let slots: Vec<&str> = runners.iter().map(|(slot, _)| slot.as_str()).collect();
            assert_eq!(slots, ["Brittle"], "{runners:?}");
        }
        other => panic!("{other:?}"),
    }
}

/// Runs the example with `args` and its standard output a pipe whose reader has gone
/// before it writes (as `app ... | head -1` once `head` has its line).
fn run_with_stdout_closed(schema: &TestSchema, args: &[&str]) -> Output {
    let mut child = cli(schema.url(), schema.name(), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the example");
    drop(child.stdout.take());
    wait_bounded(child, Duration::from_secs(60))
        .unwrap_or_else(|(_, err)| panic!("{args:?} did not end within 60 s\nstderr:\n{err}"))
}

/// Issue: output went through `print!`, which panics when standard output is a closed
/// pipe (`app schema dump | head -1`: "failed printing to stdout", exit 101). A closed
/// pipe now ends the output and the command carries on to a normal exit.
#[test]
fn a_closed_stdout_ends_the_output_not_the_command() {
    let schema = TestSchema::new("cli_closed_stdout");
    succeeded(&run(&schema, &["seed", "20"]));
    for args in [
        &["schema", "dump"][..],
        &["schema", "apply"],
        &["projections", "status"],
        &["projections", "rebuild", "Counter"],
    ] {
        let o = run_with_stdout_closed(&schema, args);
        let err = text(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
    }
    // The rebuild ran to its end without anyone reading its output.
    let status = succeeded(&run(&schema, &["projections", "status"]));
    assert!(status.contains("20/20"), "{status}");
}

/// Issue: the daemon's line display printed with `println!`, so a log reader that went
/// away panicked the main task and the graceful stop never ran. The daemon now goes on
/// projecting without output (saying so on standard error) and still stops gracefully on
/// SIGTERM, exit 0.
#[test]
fn the_daemon_outlives_a_closed_stdout() {
    let schema = TestSchema::new("cli_daemon_closed");
    succeeded(&run(&schema, &["seed", "50"]));
    let mut child = cli(schema.url(), schema.name(), &["projections", "daemon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    // Read until the daemon has caught up, then close the pipe.
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("50/50");
            seen.push(line);
            if done {
                return Ok(seen);
            }
        }
        Err(seen)
    });
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, errors) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    if let Err(seen) = reader.join().expect("the reader") {
        let _ = child.kill();
        panic!("the daemon's output ended before it caught up: {seen:#?}");
    }
    // More events: the daemon moves and writes a line, into the closed pipe.
    succeeded(&run(&schema, &["seed", "10"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut said = Vec::new();
    while !said
        .iter()
        .any(|l: &String| l.contains("standard output was closed"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match errors.recv_timeout(left) {
            Ok(line) => said.push(line),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("no notice of the closed output ({status:?}): {said:#?}");
            }
        }
    }
    // Still running, still projecting.
    assert!(child.try_wait().expect("wait").is_none(), "{said:#?}");
    succeeded(&run(&schema, &["seed", "10"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = succeeded(&run(&schema, &["projections", "status"]));
        if status.lines().all(|l| l.contains("70/70")) {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon stopped projecting: {status}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = child.id().to_string();
    let kill = Command::new("kill").args(["-s", "TERM", &pid]).status();
    assert!(kill.is_ok_and(|s| s.success()), "kill -s TERM {pid}");
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("the daemon did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    said.extend(errors.try_iter());
    assert!(status.success(), "exit {status:?}: {said:#?}");
    assert!(!said.iter().any(|l| l.contains("panicked")), "{said:#?}");
}
