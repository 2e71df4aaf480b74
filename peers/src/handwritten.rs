//! Hand-written sqlx against marten, doing the same SQL work: a document upsert, a load
//! by id, and an event append.
//!
//! The sqlx side works on tables of marten's shape (a marten store builds them in the
//! sqlx side's own schema) with the statements marten sends for the same operation,
//! prepared and cached by sqlx per connection, documents bound as `jsonb` through
//! `sqlx::types::Json`. marten: `store` + `save_changes`, `load`, `append` +
//! `save_changes`, each in a new session.

use marten::prelude::*;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::PgPool;

use crate::db::{check_sync, marten_url, peer_options, peer_pool, pool_options, Schemas};
use crate::harness::{interleaved, wanted, Measured, Plan, Row};

/// Documents (and streams) each side goes round.
const KEYS: usize = 100;

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
struct Doc {
    id: Uuid,
    name: String,
    n: i64,
    tags: Vec<String>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Ticked {
    n: i64,
    note: String,
}

/// Document `id` with the number `n`.
fn doc(id: Uuid, n: i64) -> Doc {
    Doc {
        id,
        name: format!("document number {n}"),
        n,
        tags: vec!["alpha".into(), "beta".into()],
    }
}

/// An event with the number `n`.
fn tick(n: i64) -> Ticked {
    Ticked {
        n,
        note: "a small event".into(),
    }
}

/// marten's upsert of a document without concurrency checks.
const UPSERT: &str = "INSERT INTO mt_doc_doc AS d (id, data, mt_last_modified) VALUES ($1, $2, now()) \
     ON CONFLICT (id) DO UPDATE SET data = excluded.data, mt_last_modified = excluded.mt_last_modified";

/// marten's load by id.
const LOAD: &str = "SELECT data FROM mt_doc_doc WHERE id = $1";

/// marten's append of one event when the append is the whole save: the stream row first
/// (created if missing, its version and ordering transaction id bumped, its row locked),
/// then the event at the new version with that id, one statement.
const APPEND: &str = "WITH s AS (INSERT INTO mt_streams AS st (id, type, version, last_tx) \
     VALUES ($1::uuid, $2::text, $3::bigint, pg_current_xact_id()) ON CONFLICT (id) DO UPDATE \
     SET version = st.version + excluded.version, timestamp = now(), \
     last_tx = greatest(st.last_tx, pg_current_xact_id()) WHERE NOT st.is_archived \
     RETURNING st.version, st.last_tx) \
     INSERT INTO mt_events (id, stream_id, version, type, data, headers, correlation_id, causation_id, tenant_id, tx_id) \
     SELECT $4::uuid, $1::uuid, s.version, $5::text, $6::jsonb, $7::jsonb, $8::text, $9::text, $10::text, s.last_tx FROM s";

/// A marten store of [`Doc`] and [`Ticked`] in `schema`.
async fn store(url: String, schema: String) -> DocumentStore {
    DocumentStore::builder()
        .connection_string(url)
        .ssl_mode(marten::SslMode::Disable)
        .schema(schema)
        .pool_size(2)
        .document::<Doc>()
        .event::<Ticked>()
        .build()
        .await
        .expect("marten store")
}

/// sqlx's side of a store: marten's upsert.
async fn sqlx_upsert(pool: &PgPool, d: &Doc) {
    sqlx::query(UPSERT)
        .bind(d.id)
        .bind(Json(d))
        .execute(pool)
        .await
        .expect("upsert");
}

/// sqlx's side of a load: marten's select, the `jsonb` decoded by serde.
async fn sqlx_load(pool: &PgPool, id: Uuid) -> Option<Doc> {
    sqlx::query_scalar::<_, Json<Doc>>(LOAD)
        .bind(id)
        .fetch_optional(pool)
        .await
        .expect("load")
        .map(|Json(d)| d)
}

/// sqlx's side of an append: marten's statement, one event.
async fn sqlx_append(pool: &PgPool, stream: Uuid, e: &Ticked) {
    let done = sqlx::query(APPEND)
        .bind(stream)
        .bind(None::<String>)
        .bind(1_i64)
        .bind(Uuid::now_v7())
        .bind("ticked")
        .bind(Json(e))
        .bind(None::<Json<()>>)
        .bind(None::<String>)
        .bind(None::<String>)
        .bind("*DEFAULT*")
        .execute(pool)
        .await
        .expect("append");
    assert_eq!(done.rows_affected(), 1, "append");
}

/// What the rows of one sqlx pool compare: marten's store and ids, the pool and its ids.
#[derive(Clone, Copy)]
struct Sides<'a> {
    marten: &'a DocumentStore,
    m_ids: &'a [Uuid],
    pool: &'a PgPool,
    p_ids: &'a [Uuid],
}

/// One repetition of upserts: document `i % KEYS` of each side stored with `n = i`.
async fn upserts(s: Sides<'_>, ops: usize, first: bool) -> Measured {
    interleaved(
        ops,
        first,
        async |i| {
            let mut session = s.marten.lightweight_session();
            session
                .store(doc(s.m_ids[i % KEYS], i as i64))
                .expect("store");
            session.save_changes().await.expect("save");
        },
        async |i| sqlx_upsert(s.pool, &doc(s.p_ids[i % KEYS], i as i64)).await,
    )
    .await
}

/// One repetition of loads by id of the upserted documents.
async fn loads(s: Sides<'_>, ops: usize, first: bool) -> Measured {
    interleaved(
        ops,
        first,
        async |i| {
            let mut session = s.marten.lightweight_session();
            let d: Option<Doc> = session.load(&s.m_ids[i % KEYS]).await.expect("load");
            assert!(d.is_some());
        },
        async |i| assert!(sqlx_load(s.pool, s.p_ids[i % KEYS]).await.is_some()),
    )
    .await
}

/// One repetition of appends of one event to stream `i % KEYS`.
async fn appends(s: Sides<'_>, ops: usize, first: bool) -> Measured {
    interleaved(
        ops,
        first,
        async |i| {
            let mut session = s.marten.lightweight_session();
            let stream = s.m_ids[i % KEYS];
            session
                .events()
                .append(stream, [tick(i as i64)])
                .expect("append");
            session.save_changes().await.expect("save");
        },
        async |i| sqlx_append(s.pool, s.p_ids[i % KEYS], &tick(i as i64)).await,
    )
    .await
}

/// The upsert, load and append rows of one sqlx pool against marten (the selected ones).
async fn rows(sides: Sides<'_>, peer: &'static str, sync: &'static str, plan: Plan) -> Vec<Row> {
    let (do_load, do_append) = (wanted("load sqlx"), wanted("append sqlx"));
    let mut upsert = Row::new("document upsert (store + save)", peer, sync);
    let mut load = Row::new("document load by id", peer, sync);
    let mut append = Row::new("append 1 event", peer, sync);
    for rep in 0..plan.reps {
        let first = rep % 2 == 0;
        // Always: the loads read what the upserts wrote.
        upsert.push(upserts(sides, plan.ops, first).await);
        if do_load {
            load.push(loads(sides, plan.ops, first).await);
        }
        if do_append {
            append.push(appends(sides, plan.ops, first).await);
        }
    }
    [upsert, load, append]
        .into_iter()
        .filter(|r| !r.marten.is_empty() && wanted(&format!("{} {}", r.scenario, r.peer)))
        .collect()
}

/// Runs the hand-written sqlx rows of one pass: once on a pool with sqlx's defaults (as
/// its README builds one), once on a pool without the ping before each checkout
/// (`test_before_acquire(false)`), which leaves the statements alone to compare.
pub async fn run(sync: &'static str, plan: Plan, schemas: &mut Schemas) -> Vec<Row> {
    if !(wanted("upsert sqlx") || wanted("load sqlx") || wanted("append sqlx")) {
        return Vec::new();
    }
    let marten = store(marten_url(sync), schemas.create("peers_sqlx_marten").await).await;
    let peer_schema = schemas.create("peers_sqlx").await;
    // Tables of marten's shape for the sqlx side, then the sqlx side's own pools.
    drop(store(marten_url(sync), peer_schema.clone()).await);
    let pool = peer_pool(sync, Some(&peer_schema), 2).await;
    check_sync(&pool, sync).await;
    let no_ping = pool_options(2)
        .test_before_acquire(false)
        .connect_with(peer_options(sync, Some(&peer_schema)))
        .await
        .expect("connect");
    let m_ids: Vec<Uuid> = (0..KEYS).map(|_| Uuid::now_v7()).collect();
    let p_ids: Vec<Uuid> = (0..KEYS).map(|_| Uuid::now_v7()).collect();
    let mut out = Vec::new();
    for (peer, pool) in [
        ("hand-written sqlx", &pool),
        ("hand-written sqlx, no ping", &no_ping),
    ] {
        let sides = Sides {
            marten: &marten,
            m_ids: &m_ids,
            pool,
            p_ids: &p_ids,
        };
        out.extend(rows(sides, peer, sync, plan).await);
    }
    pool.close().await;
    no_ping.close().await;
    out
}
