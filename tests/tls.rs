//! TLS against a private cluster that accepts TLS connections only (`hostssl` lines in
//! `pg_hba.conf`), with certificates made by the test: a CA, a server certificate for
//! `localhost` and `127.0.0.1` signed by it, and an unrelated CA. Every `sslmode` is
//! tried, and each failure must be its typed error. A request given up at the request
//! timeout is cancelled on the server over TLS as well. The cluster must start: a machine
//! without PostgreSQL's binaries fails the test, saying what to install.

mod common;

use std::time::{Duration, Instant};

use common::ok;
use marten::prelude::*;
use marten::{SslMode, TlsFailure};
use marten_testing::PrivateCluster;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Note {
    id: i64,
    text: String,
}

/// A certificate and its key, in PEM.
struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

struct Certs {
    ca: Issued,
    other_ca: Issued,
    server: Issued,
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn new_ca(name: &str) -> Issued {
    let key = must(KeyPair::generate(), "CA key");
    let mut params = must(CertificateParams::new(Vec::<String>::new()), "CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = must(params.self_signed(&key), "CA certificate");
    Issued { cert, key }
}

fn certs() -> Certs {
    let ca = new_ca("marten test CA");
    let other_ca = new_ca("an unrelated CA");
    let key = must(KeyPair::generate(), "server key");
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let mut params = must(CertificateParams::new(names), "server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = must(
        params.signed_by(&key, &ca.cert, &ca.key),
        "server certificate",
    );
    Certs {
        ca,
        other_ca,
        server: Issued { cert, key },
    }
}

/// Turns TLS on (with the server certificate) and then allows TLS connections only.
fn enable_tls(cluster: &PrivateCluster, certs: &Certs) {
    must(
        cluster.write_file("server.crt", certs.server.cert.pem().as_bytes()),
        "server.crt",
    );
    must(
        cluster.write_file("server.key", certs.server.key.serialize_pem().as_bytes()),
        "server.key",
    );
    must(
        cluster
            .append_config("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"),
        "postgresql.conf",
    );
    must(cluster.restart(), "restart with ssl = on");
    must(
        cluster.set_hba(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl all all ::1/128 trust\n",
        ),
        "pg_hba.conf",
    );
}

/// The cluster's URL with `query` appended.
fn url_with(cluster: &PrivateCluster, query: &str) -> String {
    format!("{}?{query}", cluster.url())
}

/// The cluster's URL naming `host` while connecting to 127.0.0.1 (`hostaddr`): the
/// certificate is checked against a name it was not issued for.
fn url_naming(cluster: &PrivateCluster, host: &str, query: &str) -> String {
    let port = cluster
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap_or_default()
        .to_owned();
    format!("postgres://postgres@{host}:{port}/postgres?hostaddr=127.0.0.1&{query}")
}

async fn build(url: &str, schema: &str, root: Option<&str>) -> marten::Result<DocumentStore> {
    let mut builder = DocumentStore::builder()
        .connection_string(url)
        .schema(schema)
        .pool_size(2)
        .pool_wait_timeout(Duration::from_secs(10))
        .document::<Note>();
    if let Some(pem) = root {
        builder = builder.tls_root_certificate_pem(pem.as_bytes());
    }
    builder.build().await
}

/// Saves a note and loads it back through `store`.
async fn round_trip(store: &DocumentStore, id: i64) {
    let note = Note {
        id,
        text: format!("note {id}"),
    };
    let mut s = store.lightweight_session();
    ok(s.store(note.clone()));
    ok(s.save_changes().await);
    let loaded: Option<Note> = ok(store.query_session().load(&id).await);
    assert_eq!(loaded, Some(note));
}

#[track_caller]
fn assert_tls_failure(result: marten::Result<DocumentStore>, expected: TlsFailure) {
    match result {
        Err(Error::Tls { kind, source }) => {
            assert_eq!(kind, expected, "{source:?}");
            assert!(!source.context.is_empty());
        }
        other => panic!("expected Error::Tls({expected:?}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_against_a_server_that_accepts_tls_only() {
    let cluster = match PrivateCluster::start() {
        Ok(c) => c,
        Err(e) => panic!("cannot start a private cluster: {e}"),
    };
    let certs = certs();
    let ca = certs.ca.cert.pem();
    let other_ca = certs.other_ca.cert.pem();

    // Before TLS is on: a mode that requires it is refused, typed.
    let plain = build(&url_with(&cluster, "sslmode=require"), "tls_plain", None).await;
    assert_tls_failure(plain, TlsFailure::NotOffered);

    enable_tls(&cluster, &certs);

    // require: encrypted, certificate not checked.
    let store = ok(build(&url_with(&cluster, "sslmode=require"), "tls_req", None).await);
    round_trip(&store, 1).await;

    // prefer: the server offers TLS, so it is used (plain would be refused).
    let store = ok(build(cluster.url(), "tls_pref", None).await);
    round_trip(&store, 2).await;

    // disable: the server accepts no plain connection.
    let disabled = build(&url_with(&cluster, "sslmode=disable"), "tls_dis", None).await;
    assert!(
        matches!(disabled, Err(Error::Authentication(_))),
        "{disabled:?}"
    );

    // verify-full with the CA that signed the server's certificate.
    let url = url_with(&cluster, "sslmode=verify-full");
    let store = ok(build(&url, "tls_full", Some(&ca)).await);
    round_trip(&store, 3).await;

    // verify-full with an unrelated CA: the certificate is refused.
    assert_tls_failure(
        build(&url, "tls_full_other", Some(&other_ca)).await,
        TlsFailure::Certificate,
    );

    // verify-ca with the right CA, given as sslrootcert= in the URL.
    let root = must(cluster.write_file("root.crt", ca.as_bytes()), "root.crt");
    let query = format!("sslmode=verify-ca&sslrootcert={}", root.display());
    let store = ok(build(&url_with(&cluster, &query), "tls_ca", None).await);
    round_trip(&store, 4).await;

    // verify-ca with an unrelated CA is refused too.
    assert_tls_failure(
        build(
            &url_with(&cluster, "sslmode=verify-ca"),
            "tls_ca_other",
            Some(&other_ca),
        )
        .await,
        TlsFailure::Certificate,
    );

    // A host name the certificate was not issued for: verify-ca accepts it,
    // verify-full refuses it.
    let url = url_naming(&cluster, "elsewhere.invalid", "sslmode=verify-ca");
    let store = ok(build(&url, "tls_ca_name", Some(&ca)).await);
    round_trip(&store, 5).await;
    let url = url_naming(&cluster, "elsewhere.invalid", "sslmode=verify-full");
    assert_tls_failure(
        build(&url, "tls_full_name", Some(&ca)).await,
        TlsFailure::Certificate,
    );

    // The builder's mode wins over the URL's.
    let store = ok(DocumentStore::builder()
        .connection_string(url_with(&cluster, "sslmode=disable"))
        .ssl_mode(SslMode::VerifyFull)
        .tls_root_certificate_pem(ca.as_bytes())
        .schema("tls_builder_mode")
        .build()
        .await);
    round_trip(&store, 6).await;
}

/// The backends still running `sql` (compared whole), as `watcher` sees them.
async fn running(watcher: &DocumentStore, sql: &str) -> i64 {
    let rows = ok(watcher
        .sql_query(
            "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
            &[&sql],
        )
        .await);
    match rows.first().map(|row| row.try_get::<_, i64>(0)) {
        Some(Ok(count)) => count,
        other => panic!("cannot count the backends: {other:?}"),
    }
}

/// A request given up at the request timeout on a store that requires TLS is cancelled
/// on the server: the cancel request asks for TLS as the connection did (the server
/// says yes, so a cancel sent without a TLS connector fails), and the statement stops
/// soon after the caller got its `Timeout`, instead of running on (with its
/// transaction and locks) after the pool gave its place to another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_given_up_is_cancelled_over_tls() {
    const SLEEP: &str = "SELECT pg_sleep(30)";
    let cluster = match PrivateCluster::start() {
        Ok(c) => c,
        Err(e) => panic!("cannot start a private cluster: {e}"),
    };
    let certs = certs();
    enable_tls(&cluster, &certs);
    let store = ok(DocumentStore::builder()
        .connection_string(cluster.url())
        .ssl_mode(SslMode::Require)
        .schema("tls_cancel")
        .pool_size(2)
        .request_timeout(Some(Duration::from_secs(1)))
        .build()
        .await);
    // A store of its own: its connection is not one the timed-out request may touch.
    let watcher = ok(build(&url_with(&cluster, "sslmode=require"), "tls_watch", None).await);

    let started = Instant::now();
    let slept = store.sql_query(SLEEP, &[]).await;
    let waited = started.elapsed();
    assert!(matches!(slept, Err(Error::Timeout { .. })), "{slept:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = running(&watcher, SLEEP).await;
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} backend(s) still run {SLEEP:?} 2 s after the request was given up: \
             its cancel request did not reach the server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The store goes on: its pool gave the lost connection's place to a new one.
    let rows = ok(store.sql_query("SELECT 1", &[]).await);
    assert_eq!(rows.len(), 1);
}
