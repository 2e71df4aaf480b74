//! The cost of conjoined tenancy: a store whose documents (and events) are conjoined by
//! tenant, used through a tenant's session, against a single-tenant store doing the same
//! work through a session without tenant, in one process and one run. The ratio is
//! conjoined / single (1.00: no cost; the goal is at least 0.95).
//!
//! The conjoined store holds [`TENANTS`] tenants with the same documents and streams each,
//! so a tenant's statements find its rows among other tenants' (as in production); the
//! single-tenant store holds one tenant's worth. Both sides run in alternating blocks
//! within each repetition, so they see the same machine, and each repetition builds both
//! stores afresh, so each side runs on new connections every time.
//!
//! Run: `cargo bench --bench tenancy` (about two minutes). `MARTEN_BENCH_REPS=n` sets the
//! repetitions (default 7), `MARTEN_BENCH_ONLY=load,query` selects scenarios,
//! `MARTEN_BENCH_AA=conjoined` (or `single`) puts the same kind of store on both sides: an
//! A/A check of the harness. Results go to BENCHMARKS.md by hand.

mod common;

use marten::prelude::*;
use marten_testing::TestSchema;
use serde::{Deserialize, Serialize};

use common::{env_number, interleaved_warm, median, quartiles, wanted, Row};

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

/// [`Doc`] with its number indexed (`#[document(index)]`): the typed query's filter
/// and order served by the column's index, in both stores.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
struct IndexedDoc {
    id: Uuid,
    name: String,
    #[document(index)]
    n: i64,
    tags: Vec<String>,
}

/// [`TenantDoc`] with its number indexed: the index leads with the tenant.
#[derive(Document, Serialize, Deserialize, Clone, Debug)]
#[concurrency(optimistic)]
#[document(tenancy = "conjoined")]
struct TenantIndexedDoc {
    id: Uuid,
    name: String,
    #[document(index)]
    n: i64,
    tags: Vec<String>,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Ticked {
    n: i64,
    note: String,
}

/// The event of the streams an inline aggregate projects (the plain appends' `Ticked`
/// streams have no projection).
#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct Scored {
    n: i64,
}

/// The inline aggregate of the single-tenant store.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Score {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl Score {
    fn apply(&mut self, e: &Scored) {
        self.total += e.n;
    }
}

/// The inline aggregate of the conjoined store: a document per tenant and stream.
#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
#[document(tenancy = "conjoined")]
struct TenantScore {
    id: Uuid,
    version: i64,
    total: i64,
}

#[marten::apply]
impl TenantScore {
    fn apply(&mut self, e: &Scored) {
        self.total += e.n;
    }
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

/// A store on `schema`; `inline`: with the inline aggregate of `Scored` streams (only the
/// stores of that row have it, so the other rows plan no projection).
async fn build(url: &str, schema: &str, conjoined: bool, inline: bool) -> DocumentStore {
    let b = DocumentStore::builder()
        .connection_string(url)
        .ssl_mode(marten::SslMode::Disable)
        .schema(schema)
        .pool_size(4)
        .event::<Ticked>()
        .event::<Scored>();
    let b = match (inline, conjoined) {
        (false, _) => b,
        (true, true) => b.projection::<TenantScore>(Lifecycle::Inline),
        (true, false) => b.projection::<Score>(Lifecycle::Inline),
    };
    let b = if conjoined {
        b.document::<TenantDoc>()
            .document::<TenantIndexedDoc>()
            .events_tenancy(marten::Tenancy::Conjoined)
    } else {
        b.document::<Doc>().document::<IndexedDoc>()
    };
    b.build().await.expect("store")
}

/// The same documents and streams for each of `tenants` (one without tenant when `None`).
async fn seed(store: &DocumentStore, tenants: &[Option<String>], ids: &Ids) {
    for tenant in tenants {
        let mut s = match tenant {
            Some(t) => store.lightweight_session_for(t.as_str()).expect("tenant"),
            None => store.lightweight_session(),
        };
        for (i, id) in ids.docs.iter().enumerate() {
            let (name, n, tags) = fields(i as i64);
            if tenant.is_some() {
                s.store(tenant_doc(*id, i as i64)).expect("store");
                s.store(TenantIndexedDoc {
                    id: *id,
                    name,
                    n,
                    tags,
                })
                .expect("store");
            } else {
                s.store(doc(*id, i as i64)).expect("store");
                s.store(IndexedDoc {
                    id: *id,
                    name,
                    n,
                    tags,
                })
                .expect("store");
            }
        }
        for id in &ids.streams {
            s.events().start_stream(*id, [tick(1)]).expect("start");
        }
        for id in &ids.inline {
            s.events()
                .start_stream(*id, [Scored { n: 1 }])
                .expect("start");
        }
        s.save_changes().await.expect("seed");
    }
}

/// How many documents of type `$ty` the typed query of the benchmark finds through
/// `$session`: numbers 0 to 19, in order.
macro_rules! first_twenty {
    ($session:expr, $ty:ty) => {
        $session
            .query::<$ty>()
            .filter(|f| f.n.lt(20).and(f.n.ge(0)))
            .order_by(|f| f.n.asc())
            .to_list()
            .await
            .expect("query")
            .len()
    };
}

/// The ids the scenarios work on, the same in every tenant.
struct Ids {
    docs: Vec<Uuid>,
    /// Streams of plain appends.
    streams: Vec<Uuid>,
    /// Streams of the inline aggregate.
    inline: Vec<Uuid>,
}

/// The row of the append with an inline aggregate (on stores of its own).
const INLINE_ROW: usize = 5;

/// One side of the comparison: a session of a conjoined store (through `tenant-1`) or of
/// a single-tenant store, doing the scenarios' operations on the shared ids.
struct Side {
    session: LightweightSession,
    conjoined: bool,
}

impl Side {
    /// A side on a store built afresh on `schema` (so on connections of its own), with
    /// the inline aggregate when `inline` is set.
    async fn open(url: &str, schema: &str, conjoined: bool, inline: bool) -> (DocumentStore, Side) {
        let store = build(url, schema, conjoined, inline).await;
        let session = if conjoined {
            store.lightweight_session_for("tenant-1").expect("tenant")
        } else {
            store.lightweight_session()
        };
        (store, Side { session, conjoined })
    }

    async fn save(&mut self, id: Uuid, i: i64) {
        if self.conjoined {
            self.session.store(tenant_doc(id, i)).expect("store");
        } else {
            self.session.store(doc(id, i)).expect("store");
        }
        self.session.save_changes().await.expect("save");
    }

    async fn load(&mut self, id: &Uuid) {
        let found = if self.conjoined {
            self.session
                .load::<TenantDoc>(id)
                .await
                .expect("load")
                .is_some()
        } else {
            self.session.load::<Doc>(id).await.expect("load").is_some()
        };
        assert!(found);
    }

    async fn query(&mut self) {
        let found = if self.conjoined {
            first_twenty!(self.session, TenantDoc)
        } else {
            first_twenty!(self.session, Doc)
        };
        assert_eq!(found, 20);
    }

    /// The typed query of [`Side::query`] on the indexed types.
    async fn query_indexed(&mut self) {
        let found = if self.conjoined {
            first_twenty!(self.session, TenantIndexedDoc)
        } else {
            first_twenty!(self.session, IndexedDoc)
        };
        assert_eq!(found, 20);
    }

    async fn append(&mut self, stream: Uuid, i: i64) {
        self.session
            .events()
            .append(stream, [tick(i)])
            .expect("append");
        self.session.save_changes().await.expect("save");
    }

    /// Appends a `Scored` to `stream`: the inline aggregate projects it in the same save.
    async fn append_scored(&mut self, stream: Uuid, i: i64) {
        self.session
            .events()
            .append(stream, [Scored { n: i }])
            .expect("append");
        self.session.save_changes().await.expect("save");
    }

    /// Runs scenario `row`'s operation number `i`.
    async fn op(&mut self, row: usize, i: usize, ids: &Ids) {
        let k = i % ids.docs.len();
        match row {
            0 => self.save(ids.docs[k], k as i64).await,
            1 => self.load(&ids.docs[k]).await,
            2 => self.query().await,
            3 => self.query_indexed().await,
            INLINE_ROW => {
                let stream = ids.inline[i % ids.inline.len()];
                self.append_scored(stream, i as i64).await
            }
            _ => {
                self.append(ids.streams[i % ids.streams.len()], i as i64)
                    .await
            }
        }
    }
}

/// Which stores the two sides use: conjoined against single-tenant (the measurement), or
/// the same kind on both (`MARTEN_BENCH_AA=conjoined` or `single`: an A/A check of the
/// harness, which should read 1.00).
fn sides() -> (bool, bool) {
    match std::env::var("MARTEN_BENCH_AA").as_deref() {
        Ok("conjoined") => (true, true),
        Ok("single") => (false, false),
        _ => (true, false),
    }
}

async fn run(sync: &str, reps: usize) -> Vec<Row> {
    let base = marten_testing::database_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20synchronous_commit%3D{sync}");
    let single_schema = TestSchema::new(&format!("bench_single_{sync}"));
    let conj_schema = TestSchema::new(&format!("bench_conjoined_{sync}"));
    let uuids = |n: i64| (0..n).map(|_| Uuid::now_v7()).collect::<Vec<_>>();
    let ids = Ids {
        docs: uuids(DOCS),
        streams: uuids(50),
        inline: uuids(20),
    };
    let single = build(&url, single_schema.name(), false, false).await;
    seed(&single, &[None], &ids).await;
    drop(single);
    let conj = build(&url, conj_schema.name(), true, false).await;
    let tenants: Vec<Option<String>> = (0..TENANTS).map(|t| Some(format!("tenant-{t}"))).collect();
    seed(&conj, &tenants, &ids).await;
    drop(conj);
    let schema_of = |conjoined: bool| {
        if conjoined {
            conj_schema.name()
        } else {
            single_schema.name()
        }
    };
    let (lib_conjoined, raw_conjoined) = sides();

    let mut rows: Vec<Row> = [
        ("single save (optimistic)", "saves/s"),
        ("load by id", "loads/s"),
        ("typed query (20 of 200)", "queries/s"),
        ("typed query, indexed field (20 of 200)", "queries/s"),
        ("append 1 event", "appends/s"),
        ("append 1 event, inline aggregate", "appends/s"),
    ]
    .into_iter()
    .map(|(name, unit)| Row {
        name: name.to_owned(),
        lib: Vec::new(),
        raw: Vec::new(),
        unit,
    })
    .collect();
    let ops = [OPS, OPS, OPS / 2, OPS / 2, OPS, OPS / 2];
    for rep in 0..reps {
        let lib_first = rep % 2 == 0;
        // Fresh stores, so fresh connections, every repetition, opened in turn order: a
        // connection (its server process, where the scheduler puts it) can be a few per
        // cent faster than another doing the same work, and a side kept on one for the
        // whole run would carry that into every ratio.
        let (lib_schema, raw_schema) = (schema_of(lib_conjoined), schema_of(raw_conjoined));
        let open = async |inline: bool| {
            let lib = async || Side::open(&url, lib_schema, lib_conjoined, inline).await;
            let raw = async || Side::open(&url, raw_schema, raw_conjoined, inline).await;
            if lib_first {
                let l = lib().await;
                (l, raw().await)
            } else {
                let r = raw().await;
                (lib().await, r)
            }
        };
        let ((_ls, mut lib), (_rs, mut raw)) = open(false).await;
        for (row, ops) in ops.iter().copied().enumerate() {
            if !wanted(&rows[row].name) {
                continue;
            }
            // The inline row on stores with the projection, each of whose caches first
            // learns every stream's aggregate (one untimed append per stream).
            let mut inline = if row == INLINE_ROW {
                let ((ls, mut l), (rs, mut r)) = open(true).await;
                for i in 0..ids.inline.len() {
                    l.op(row, i, &ids).await;
                    r.op(row, i, &ids).await;
                }
                Some(((ls, l), (rs, r)))
            } else {
                None
            };
            let (l_side, r_side) = match &mut inline {
                Some(((_, l), (_, r))) => (l, r),
                None => (&mut lib, &mut raw),
            };
            let (l, r) = interleaved_warm(
                ops,
                lib_first,
                async |i| l_side.op(row, i, &ids).await,
                async |i| r_side.op(row, i, &ids).await,
            )
            .await;
            rows[row].lib.push(l);
            rows[row].raw.push(r);
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
