//! The command line as a user runs it: `examples/cli.rs` (a program embedding
//! `marten::cli::Command`) started as a process, each test on a schema of its own.

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
