//! The cost of conjoined tenancy: a store whose documents (and events) are conjoined by
//! tenant, used through a tenant's session, against a single-tenant store doing the same
//! work through a session without tenant, in one process and one run. The ratio is
//! conjoined / single (1.00: no cost; the goal is at least 0.95).
//!
//! The conjoined store holds [`TENANTS`] tenants with the same documents and streams each,
//! so a tenant's statements find its rows among other tenants' (as in production); the
//! single-tenant store holds one tenant's worth. Both sides run in alternating blocks
//! within each repetition, so they see the same machine.
//!
//! Run: `cargo bench --bench tenancy` (about two minutes). `MARTEN_BENCH_REPS=n` sets the
//! repetitions (default 7), `MARTEN_BENCH_ONLY=load,query` selects scenarios. Results go
//! to BENCHMARKS.md by hand.

mod common;

use marten::prelude::*;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

use common::{env_number, interleaved, median, quartiles, wanted, Row};

/// Tenants of the conjoined store.
const TENANTS: usize = 4;
/// Documents (and streams) per tenant.
const DOCS: i64 = 200;
/// Operations per side per repetition.
const OPS: usize = 500;

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct Doc {
    id: Uuid,
    name: String,
    n: i64,
    tags: Vec<String>,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
#[document(tenancy = "conjoined")]
struct TenantDoc {
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

fn fields(i: i64) -> (String, i64, Vec<String>) {
    (
        format!("document number {i}"),
        i,
        vec!["alpha".into(), "beta".into()],
    )
}

fn doc(id: Uuid, i: i64) -> Doc {
    let (name, n, tags) = fields(i);
    Doc { id, name, n, tags }
}

fn tenant_doc(id: Uuid, i: i64) -> TenantDoc {
    let (name, n, tags) = fields(i);
    TenantDoc { id, name, n, tags }
}

fn tick(n: i64) -> Ticked {
    Ticked {
        n,
        note: "a small event".into(),
    }
}

async fn build(url: &str, label: &str, conjoined: bool) -> (TestSchema, DocumentStore) {
    let schema = TestSchema::new(label);
    let b = DocumentStore::builder()
        .connection_string(url)
        .ssl_mode(marten::SslMode::Disable)
        .schema(schema.name())
        .pool_size(4)
        .event::<Ticked>();
    let b = if conjoined {
        b.document::<TenantDoc>()
            .events_tenancy(marten::Tenancy::Conjoined)
    } else {
        b.document::<Doc>()
    };
    let store = b.build().await.expect("store");
    (schema, store)
}

/// The same documents and streams for each of `tenants` (one without tenant when `None`).
async fn seed(store: &DocumentStore, tenants: &[Option<String>], ids: &[Uuid], streams: &[Uuid]) {
    for tenant in tenants {
        let mut s = match tenant {
            Some(t) => store.lightweight_session_for(t.as_str()).expect("tenant"),
            None => store.lightweight_session(),
        };
        for (i, id) in ids.iter().enumerate() {
            if tenant.is_some() {
                s.store(tenant_doc(*id, i as i64)).expect("store");
            } else {
                s.store(doc(*id, i as i64)).expect("store");
            }
        }
        for id in streams {
            s.events().start_stream(*id, [tick(1)]).expect("start");
        }
        s.save_changes().await.expect("seed");
    }
}

async fn run(sync: &str, reps: usize) -> Vec<Row> {
    let base = marten_testing::database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20synchronous_commit%3D{sync}");
    let (_single_schema, single) = build(&url, &format!("bench_single_{sync}"), false).await;
    let (_conj_schema, conj) = build(&url, &format!("bench_conjoined_{sync}"), true).await;
    let ids: Vec<Uuid> = (0..DOCS).map(|_| Uuid::now_v7()).collect();
    let streams: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    seed(&single, &[None], &ids, &streams).await;
    let tenants: Vec<Option<String>> = (0..TENANTS).map(|t| Some(format!("tenant-{t}"))).collect();
    seed(&conj, &tenants, &ids, &streams).await;

    let mut rows: Vec<Row> = [
        ("single save (optimistic)", "saves/s"),
        ("load by id", "loads/s"),
        ("typed query (20 of 200)", "queries/s"),
        ("append 1 event", "appends/s"),
    ]
    .into_iter()
    .map(|(name, unit)| Row {
        name: name.to_owned(),
        lib: Vec::new(),
        raw: Vec::new(),
        unit,
    })
    .collect();
    let mut cs = conj.lightweight_session_for("tenant-1").expect("tenant");
    let mut ss = single.lightweight_session();
    for rep in 0..reps {
        let lib_first = rep % 2 == 0;
        if wanted(&rows[0].name) {
            let (l, r) = interleaved(
                OPS,
                lib_first,
                async |i| {
                    cs.store(tenant_doc(ids[i % ids.len()], (i % ids.len()) as i64))
                        .expect("store");
                    cs.save_changes().await.expect("save");
                },
                async |i| {
                    ss.store(doc(ids[i % ids.len()], (i % ids.len()) as i64))
                        .expect("store");
                    ss.save_changes().await.expect("save");
                },
            )
            .await;
            rows[0].lib.push(l);
            rows[0].raw.push(r);
        }
        if wanted(&rows[1].name) {
            let (l, r) = interleaved(
                OPS,
                lib_first,
                async |i| {
                    let d = cs.load::<TenantDoc>(&ids[i % ids.len()]).await;
                    assert!(d.expect("load").is_some());
                },
                async |i| {
                    let d = ss.load::<Doc>(&ids[i % ids.len()]).await;
                    assert!(d.expect("load").is_some());
                },
            )
            .await;
            rows[1].lib.push(l);
            rows[1].raw.push(r);
        }
        if wanted(&rows[2].name) {
            let (l, r) = interleaved(
                OPS / 2,
                lib_first,
                async |_| {
                    let found = cs
                        .query::<TenantDoc>()
                        .filter(|f| f.n.lt(20).and(f.n.ge(0)))
                        .order_by(|f| f.n.asc())
                        .to_list()
                        .await
                        .expect("query");
                    assert_eq!(found.len(), 20);
                },
                async |_| {
                    let found = ss
                        .query::<Doc>()
                        .filter(|f| f.n.lt(20).and(f.n.ge(0)))
                        .order_by(|f| f.n.asc())
                        .to_list()
                        .await
                        .expect("query");
                    assert_eq!(found.len(), 20);
                },
            )
            .await;
            rows[2].lib.push(l);
            rows[2].raw.push(r);
        }
        if wanted(&rows[3].name) {
            let (l, r) = interleaved(
                OPS,
                lib_first,
                async |i| {
                    cs.events()
                        .append(streams[i % streams.len()], [tick(i as i64)])
                        .expect("append");
                    cs.save_changes().await.expect("save");
                },
                async |i| {
                    ss.events()
                        .append(streams[i % streams.len()], [tick(i as i64)])
                        .expect("append");
                    ss.save_changes().await.expect("save");
                },
            )
            .await;
            rows[3].lib.push(l);
            rows[3].raw.push(r);
        }
    }
    rows
}

fn main() {
    let reps = env_number("MARTEN_BENCH_REPS").unwrap_or(7);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| scenario | synchronous_commit | conjoined (tenant session) | single-tenant | ratio (median) | IQR |");
    println!("|---|---|---|---|---|---|");
    for sync in ["on", "off"] {
        for row in rt
            .block_on(run(sync, reps))
            .into_iter()
            .filter(|r| !r.lib.is_empty())
        {
            let ratios = row.ratios();
            let (q1, q3) = quartiles(&ratios);
            println!(
                "| {} | {sync} | {:.0} {} | {:.0} | {:.2} | {:.2}-{:.2} |",
                row.name,
                median(&row.lib),
                row.unit,
                median(&row.raw),
                median(&ratios),
                q1,
                q3
            );
        }
    }
}
