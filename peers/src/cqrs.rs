//! cqrs-es with postgres-es against marten: a bank-account command (load the account's
//! events, decide, append one event) and loading an account of [`LOAD_EVENTS`] events.
//!
//! cqrs-es is used as its docs show: an `Aggregate` with `handle`/`apply`, a
//! `CqrsFramework` from `postgres_es::postgres_cqrs` over the events table of
//! `db/init.sql`, `execute(id, command)` per command; loads through the same
//! `PersistedEventStore` the framework uses. marten: a live aggregate,
//! `fetch_for_writing` + `append` + `save_changes` per command (and, in a second row,
//! `write_to_aggregate`, which decides on the state the store's aggregate cache kept),
//! `aggregate_stream` per load, each in a new session.

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateContext, DomainEvent, EventStore};
use marten::prelude::*;
use postgres_es::{PostgresCqrs, PostgresEventRepository};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::db::{check_sync, marten_url, peer_pool, Schemas};
use crate::harness::{interleaved, wanted, Plan, Row};

/// Accounts each side's commands go round.
const ACCOUNTS: usize = 100;
/// Events of each account the load scenario reads.
const LOAD_EVENTS: usize = 25;
/// Accounts of the load scenario.
const LOAD_ACCOUNTS: usize = 50;

// ---- cqrs-es side: the bank account of its user guide ----

/// The account as cqrs-es folds it: opened, and its balance.
#[derive(Default, Serialize, Deserialize)]
pub struct BankAccount {
    opened: bool,
    balance: i64,
}

/// The commands the account handles.
pub enum BankCommand {
    Open { owner: String },
    Deposit { amount: i64 },
}

/// The account's events, as cqrs-es stores them (one enum per aggregate).
#[derive(Serialize, Deserialize, Clone, PartialEq, Debug)]
pub enum BankEvent {
    AccountOpened { owner: String },
    MoneyDeposited { amount: i64, balance: i64 },
}

impl DomainEvent for BankEvent {
    fn event_type(&self) -> String {
        match self {
            BankEvent::AccountOpened { .. } => "AccountOpened".to_owned(),
            BankEvent::MoneyDeposited { .. } => "MoneyDeposited".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// A command the account refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BankError(&'static str);

impl Aggregate for BankAccount {
    const TYPE: &'static str = "account";
    type Command = BankCommand;
    type Event = BankEvent;
    type Error = BankError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            BankCommand::Open { owner } if !self.opened => {
                sink.write(BankEvent::AccountOpened { owner }, self).await;
            }
            BankCommand::Open { .. } => return Err(BankError("account already open")),
            BankCommand::Deposit { amount } if self.opened => {
                let balance = self.balance + amount;
                sink.write(BankEvent::MoneyDeposited { amount, balance }, self)
                    .await;
            }
            BankCommand::Deposit { .. } => return Err(BankError("no such account")),
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BankEvent::AccountOpened { .. } => self.opened = true,
            BankEvent::MoneyDeposited { balance, .. } => self.balance = balance,
        }
    }
}

// ---- marten side: the same account ----

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct AccountOpened {
    owner: String,
}

#[derive(Event, Serialize, Deserialize, Clone, Debug)]
struct MoneyDeposited {
    amount: i64,
    balance: i64,
}

#[derive(Aggregate, Serialize, Deserialize, Clone, Debug, Default)]
struct Account {
    id: Uuid,
    version: i64,
    opened: bool,
    balance: i64,
}

#[marten::apply]
impl Account {
    fn apply_opened(&mut self, _e: &AccountOpened) {
        self.opened = true;
    }
    fn apply_deposited(&mut self, e: &MoneyDeposited) {
        self.balance = e.balance;
    }
}

/// The marten command: load the account, decide, append, save.
async fn marten_deposit(store: &DocumentStore, id: Uuid, amount: i64) {
    let mut s = store.lightweight_session();
    let mut w = s
        .events()
        .fetch_for_writing::<Account>(id)
        .await
        .expect("fetch_for_writing");
    let balance = match w.state() {
        Some(a) if a.opened => a.balance + amount,
        _ => panic!("no such account"),
    };
    w.append([MoneyDeposited { amount, balance }])
        .expect("append");
    s.save_changes().await.expect("save");
}

/// The marten command as Marten's `WriteToAggregate`: the decision in a closure, the
/// account's state from the store's aggregate cache when it kept it (see
/// `Events::write_to_aggregate`).
async fn marten_command(store: &DocumentStore, id: Uuid, amount: i64) {
    let mut s = store.lightweight_session();
    s.events()
        .write_to_aggregate(id, |a: Option<&Account>| match a {
            Some(a) if a.opened => Ok::<_, marten::Error>([MoneyDeposited {
                amount,
                balance: a.balance + amount,
            }]),
            _ => panic!("no such account"),
        })
        .await
        .expect("write_to_aggregate");
}

/// The postgres-es tables of its `db/init.sql`, in the schema first on the pool's
/// `search_path`.
async fn cqrs_tables(pool: &PgPool) {
    for sql in [
        "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, \
         event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL, \
         PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
        "CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
         last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, \
         current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, payload json NOT NULL, \
         PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
    ] {
        sqlx::query(sql)
            .execute(pool)
            .await
            .expect("postgres-es tables");
    }
}

/// Both sides of the cqrs-es rows: marten's store, cqrs-es's framework and event store.
struct Sides {
    store: DocumentStore,
    cqrs: PostgresCqrs<BankAccount>,
    loads: PersistedEventStore<PostgresEventRepository, BankAccount>,
    pool: PgPool,
}

/// Creates both sides' schemas and builds both sides.
async fn sides(sync: &'static str, schemas: &mut Schemas) -> Sides {
    let marten_schema = schemas.create("peers_cqrs_marten").await;
    let peer_schema = schemas.create("peers_cqrs_es").await;
    let store = DocumentStore::builder()
        .connection_string(marten_url(sync))
        .ssl_mode(marten::SslMode::Disable)
        .schema(marten_schema)
        .pool_size(2)
        .event::<AccountOpened>()
        .event::<MoneyDeposited>()
        .projection::<Account>(Lifecycle::Live)
        .build()
        .await
        .expect("marten store");
    // The pool's search_path finds the default tables `events` and `snapshots` in the
    // peer's schema, so the framework is built as the user guide builds it.
    let pool = peer_pool(sync, Some(&peer_schema), 2).await;
    check_sync(&pool, sync).await;
    cqrs_tables(&pool).await;
    let cqrs = postgres_es::postgres_cqrs(pool.clone(), vec![], ());
    let loads = PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
    Sides {
        store,
        cqrs,
        loads,
        pool,
    }
}

/// Opens `n` accounts on each side with `deposits` deposits each; returns their ids.
async fn seed(sides: &Sides, n: usize, deposits: usize) -> Vec<Uuid> {
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let mut s = sides.store.lightweight_session();
    for id in &ids {
        s.events()
            .start_stream(
                *id,
                [AccountOpened {
                    owner: id.to_string(),
                }],
            )
            .expect("start");
        let events: Vec<MoneyDeposited> = (1..=deposits as i64)
            .map(|k| MoneyDeposited {
                amount: 1,
                balance: k,
            })
            .collect();
        s.events().append(*id, events).expect("append");
    }
    s.save_changes().await.expect("seed");
    drop(s);
    for id in &ids {
        let owner = id.to_string();
        let key = id.to_string();
        sides
            .cqrs
            .execute(&key, BankCommand::Open { owner })
            .await
            .expect("open");
        for _ in 0..deposits {
            sides
                .cqrs
                .execute(&key, BankCommand::Deposit { amount: 1 })
                .await
                .expect("deposit");
        }
    }
    ids
}

/// The command row: a deposit to account `i % ACCOUNTS` per operation; marten's side
/// through `fetch_for_writing` (`write_to`: false) or `write_to_aggregate`.
async fn command_row(sides: &Sides, sync: &'static str, plan: Plan, write_to: bool) -> Row {
    let ids = seed(sides, ACCOUNTS, 0).await;
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let scenario = if write_to {
        "command (write_to_aggregate): load account, append 1 event"
    } else {
        "command: load account, append 1 event"
    };
    let mut row = Row::new(scenario, "cqrs-es/postgres-es", sync);
    row.unit = "commands/s";
    for rep in 0..plan.reps {
        row.push(
            interleaved(
                plan.ops,
                rep % 2 == 0,
                async |i| {
                    let id = ids[i % ACCOUNTS];
                    if write_to {
                        marten_command(&sides.store, id, 1).await
                    } else {
                        marten_deposit(&sides.store, id, 1).await
                    }
                },
                async |i| {
                    let cmd = BankCommand::Deposit { amount: 1 };
                    let key = &keys[i % ACCOUNTS];
                    sides.cqrs.execute(key, cmd).await.expect("execute");
                },
            )
            .await,
        );
    }
    row
}

/// The load row: account `i % LOAD_ACCOUNTS` of [`LOAD_EVENTS`] events per operation.
async fn load_row(sides: &Sides, sync: &'static str, plan: Plan) -> Row {
    let ids = seed(sides, LOAD_ACCOUNTS, LOAD_EVENTS - 1).await;
    let keys: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let balance = LOAD_EVENTS as i64 - 1;
    let mut row = Row::new(
        "load an aggregate of 25 events",
        "cqrs-es/postgres-es",
        sync,
    );
    row.unit = "loads/s";
    for rep in 0..plan.reps {
        row.push(
            interleaved(
                plan.ops,
                rep % 2 == 0,
                async |i| {
                    let mut s = sides.store.lightweight_session();
                    let id = ids[i % LOAD_ACCOUNTS];
                    let a = s.events().aggregate_stream::<Account>(id).await;
                    assert_eq!(a.expect("aggregate").map(|a| a.balance), Some(balance));
                },
                async |i| {
                    let key = &keys[i % LOAD_ACCOUNTS];
                    let mut c = sides.loads.load_aggregate(key).await.expect("load");
                    assert_eq!(c.aggregate().balance, balance);
                },
            )
            .await,
        );
    }
    row
}

/// Runs the cqrs-es rows of one pass.
pub async fn run(sync: &'static str, plan: Plan, schemas: &mut Schemas) -> Vec<Row> {
    let mut rows = Vec::new();
    let (command, load) = (wanted("command cqrs-es"), wanted("load cqrs-es"));
    if !command && !load {
        return rows;
    }
    let sides = sides(sync, schemas).await;
    if command {
        rows.push(command_row(&sides, sync, plan, false).await);
        rows.push(command_row(&sides, sync, plan, true).await);
    }
    if load {
        rows.push(load_row(&sides, sync, plan).await);
    }
    sides.pool.close().await;
    rows
}
