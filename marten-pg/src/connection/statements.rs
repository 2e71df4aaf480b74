//! The store's statements: each statement text schema-qualified once per store (see
//! [`crate::tables::qualify`]), then sent either as a named prepared statement from the
//! connection's cache (the default) or, behind a pooler in transaction mode, as an
//! unnamed statement (parse, bind and execute in one message sequence, nothing left on
//! the server) with the parameter types learned once per store.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use rustc_hash::FxHashMap;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};
use tracing::debug;

use super::Pooled;

use crate::tables::qualify::{is_single_statement, qualify_renaming};

/// What stands between the store's pool and PostgreSQL (see
/// `DocumentStoreBuilder::pooler`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pooler {
    /// Nothing, or a pooler in session mode: a connection is one server session.
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer's `pool_mode = transaction`, hosted
    /// poolers): consecutive transactions of one connection may run on different server
    /// connections. No startup `options`, no named prepared statements.
    Transaction,
}

/// How statements are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatementKind {
    /// Named prepared statements, cached per connection.
    Prepared,
    /// Unnamed statements (for poolers that do not carry named ones between transactions).
    Unnamed,
}

/// How many statement texts a store keeps qualified; past it, texts are qualified anew
/// on each use and prepared for that use alone (a store whose queries are all different
/// does not grow without bound, here or on the server).
const CAPACITY: usize = 4096;

/// A statement text qualified for the store, and (for unnamed statements) its parameter
/// types once learned.
#[derive(Debug)]
pub(crate) struct Text {
    /// The text's number, unique in the process: what a connection of the store's pool
    /// keys its prepared statement by.
    id: u64,
    pub(crate) sql: String,
    types: OnceLock<Arc<[Type]>>,
}

/// What became of a text offered to be kept ([`Statements::keep`]).
enum Keep {
    /// Kept.
    Kept,
    /// Not kept: the store keeps [`CAPACITY`] texts already.
    Full,
    /// Not kept: the texts were cleared (a table added) since the caller read the count
    /// of clears, which is now the one carried.
    Cleared(u64),
}

/// A statement's text as a caller holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SqlText<'a> {
    /// The program's for good (a constant, a text built once per type, a leaked one):
    /// found in the store's statements by its address.
    Static(&'static str),
    /// Built for this call (a patch, a query): found by its content.
    Built(&'a str),
}

impl<'a> From<&'a str> for SqlText<'a> {
    fn from(sql: &'a str) -> Self {
        SqlText::Built(sql)
    }
}

impl<'a> From<&'a String> for SqlText<'a> {
    fn from(sql: &'a String) -> Self {
        SqlText::Built(sql)
    }
}

/// A statement ready to send on one connection.
#[derive(Clone)]
pub(crate) enum Stmt {
    /// Prepared on the connection (named, from its cache).
    Prepared(Statement),
    /// Sent unnamed: the qualified text and its parameter types.
    Unnamed(Arc<Text>, Arc<[Type]>),
}

/// A store's statement texts, qualified for its schema.
pub(crate) struct Statements {
    schema: String,
    kind: StatementKind,
    /// The store's document tables (named as relations in statements).
    tables: RwLock<HashSet<String>>,
    /// Keyed by the text as the program sends it, hashed with Fx (a lone write looks its
    /// text up once; SipHash over a few hundred bytes cost about 1,400 instructions of the
    /// 28,000 a lone append takes). The texts are the program's own, and at most
    /// [`CAPACITY`] are kept.
    texts: RwLock<FxHashMap<Box<str>, Arc<Text>>>,
    /// The texts the program sends as [`SqlText::Static`] (every operation's statement,
    /// the loads by id and the writer's constant texts), keyed by where the text lives. A
    /// static text never moves, changes or goes, so its address and length name it, and a
    /// lookup reads two words instead of hashing and comparing a few hundred bytes (which a
    /// lone write's other memory has pushed out of the processor's first cache by the time
    /// it looks again). Cleared with `texts`.
    statics: RwLock<FxHashMap<(usize, usize), Arc<Text>>>,
    /// Counts the clears of `texts` and `statics` ([`Statements::add_table`]), changed
    /// under both maps' write locks: a text qualified before a clear (which may name a
    /// table added by it unqualified) is not kept in either map after it.
    cleared: AtomicU64,
    /// A document table sent under another name (a blue/green build: see
    /// [`Statements::redirected`]).
    rename: Option<(String, String)>,
}

impl Statements {
    /// The statements of a store over `schema`, sent as `kind`.
    pub(crate) fn new(schema: &str, kind: StatementKind) -> Self {
        Self {
            schema: schema.to_owned(),
            kind,
            tables: RwLock::default(),
            texts: RwLock::default(),
            statics: RwLock::default(),
            cleared: AtomicU64::new(0),
            rename: None,
        }
    }

    /// These statements with document table `from` sent as `to` (a table of the same
    /// shape): what a blue/green build's runner reads and writes through.
    pub(crate) fn redirected(&self, from: &str, to: &str) -> Self {
        let tables = self
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut tables = tables;
        tables.insert(from.to_owned());
        Self {
            schema: self.schema.clone(),
            kind: self.kind,
            tables: RwLock::new(tables),
            texts: RwLock::default(),
            statics: RwLock::default(),
            cleared: AtomicU64::new(0),
            rename: Some((from.to_owned(), to.to_owned())),
        }
    }

    /// `sql` qualified, its tables renamed if these statements redirect one.
    fn qualify(&self, sql: &str) -> String {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        let rename = |t: &str| match &self.rename {
            Some((from, to)) if from == t => Some(to.as_str()),
            _ => None,
        };
        qualify_renaming(sql, &self.schema, |t| tables.contains(t), rename)
    }

    /// Records a document table of the store (before any statement naming it is sent).
    pub(crate) fn add_table(&self, table: &str) {
        let known = self
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(table);
        if !known {
            let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
            tables.insert(table.to_owned());
            // Texts qualified before the table was known may name it unqualified. The
            // count changes under both maps' locks (taken in the order the keeping takes
            // them, texts then statics): a text qualified before this clear finds it
            // changed when it comes to be kept, whichever map it goes to.
            let mut texts = self.texts.write().unwrap_or_else(PoisonError::into_inner);
            let mut statics = self.statics.write().unwrap_or_else(PoisonError::into_inner);
            texts.clear();
            statics.clear();
            self.cleared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `sql` qualified for the store (once per text).
    pub(crate) fn text(&self, sql: &str) -> Arc<Text> {
        self.text_kept(sql).0
    }

    /// `sql` qualified for the store, and whether the store keeps it (false past
    /// [`CAPACITY`]: a text that is qualified anew on each use is not prepared to stay).
    fn text_kept(&self, sql: &str) -> (Arc<Text>, bool) {
        let cleared = self.cleared.load(Ordering::Relaxed);
        self.text_kept_since(sql, cleared)
    }

    /// [`Statements::text_kept`] for a caller that read the count of clears as `cleared`
    /// before it looked. A text qualified while a table was added (the count changed
    /// before it could be kept: it may name that table unqualified) is qualified again,
    /// and never kept as it was.
    fn text_kept_since(&self, sql: &str, mut cleared: u64) -> (Arc<Text>, bool) {
        if let Some(text) = self
            .texts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sql)
        {
            return (text.clone(), true);
        }
        // Tables are added a few times in a store's life: a text qualified again after a
        // second concurrent addition is used once, unkept (and qualified again next time).
        let mut tries = 3;
        loop {
            let text = self.qualified(sql);
            match self.keep(sql, &text, cleared) {
                Keep::Kept => return (text, true),
                Keep::Full => return (text, false),
                Keep::Cleared(now) => {
                    tries -= 1;
                    if tries == 0 {
                        return (self.qualified(sql), false);
                    }
                    debug!("a statement text qualified while a table was added is qualified again");
                    cleared = now;
                }
            }
        }
    }

    /// `sql` qualified anew, under a number of its own.
    fn qualified(&self, sql: &str) -> Arc<Text> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Arc::new(Text {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            sql: self.qualify(sql),
            types: OnceLock::new(),
        })
    }

    /// Keeps `text`, qualified from `sql` after the count of clears was read as
    /// `cleared`, unless the texts are full or were cleared since (a table added since
    /// may be named in it unqualified).
    fn keep(&self, sql: &str, text: &Arc<Text>, cleared: u64) -> Keep {
        // The count changes under this lock (see `add_table`).
        let mut texts = self.texts.write().unwrap_or_else(PoisonError::into_inner);
        let now = self.cleared.load(Ordering::Relaxed);
        if now != cleared {
            return Keep::Cleared(now);
        }
        if texts.len() >= CAPACITY {
            return Keep::Full;
        }
        texts.insert(sql.into(), text.clone());
        Keep::Kept
    }

    /// [`Statements::text_kept`] of a static text, found by its address.
    fn static_text_kept(&self, sql: &'static str) -> (Arc<Text>, bool) {
        let key = (sql.as_ptr() as usize, sql.len());
        if let Some(text) = self
            .statics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return (text.clone(), true);
        }
        let cleared = self.cleared.load(Ordering::Relaxed);
        let (text, kept) = self.text_kept_since(sql, cleared);
        if kept {
            // Both the count and the map change under the map's lock: a clear between the
            // count read above and here means `text` may be from before it.
            let mut statics = self.statics.write().unwrap_or_else(PoisonError::into_inner);
            if statics.len() < CAPACITY && self.cleared.load(Ordering::Relaxed) == cleared {
                statics.insert(key, text.clone());
            }
        }
        (text, kept)
    }

    /// `sql` qualified and ready to send on `client`.
    pub(crate) async fn statement(
        &self,
        client: &Pooled,
        sql: SqlText<'_>,
    ) -> Result<Stmt, tokio_postgres::Error> {
        let text = match sql {
            SqlText::Static(sql) => self.static_text_kept(sql),
            SqlText::Built(sql) => self.text_kept(sql),
        };
        self.prepared_on(client, text).await
    }

    /// A qualified text (and whether the store keeps it) ready to send on `client`.
    async fn prepared_on(
        &self,
        client: &Pooled,
        (text, kept): (Arc<Text>, bool),
    ) -> Result<Stmt, tokio_postgres::Error> {
        if self.kind == StatementKind::Prepared {
            if !kept {
                // Prepared for this use alone: closed on the server when dropped.
                return client.prepare(&text.sql).await.map(Stmt::Prepared);
            }
            return client
                .prepared(text.id, &text.sql)
                .await
                .map(Stmt::Prepared);
        }
        let types = match text.types.get() {
            Some(types) => types.clone(),
            None => {
                match describe(client, &text.sql).await? {
                    Some(types) => text.types.get_or_init(|| types.into()).clone(),
                    // Not kept: the next use asks again.
                    None => Arc::from(Vec::new()),
                }
            }
        };
        Ok(Stmt::Unnamed(text, types))
    }

    /// Whether statements are prepared and cached per connection (not sent unnamed).
    pub(crate) fn prepared(&self) -> bool {
        self.kind == StatementKind::Prepared
    }

    /// `sql` (simple protocol, no parameters) qualified for the store.
    pub(crate) fn simple(&self, sql: &str) -> String {
        self.qualify(sql)
    }
}

/// The parameter types of `sql`, asked of the server without leaving a prepared
/// statement behind: `PREPARE`, a look at `pg_prepared_statements` and `DEALLOCATE` in
/// one simple query, which a pooler runs on one server connection. A type outside
/// PostgreSQL's built-in ones comes back as `unknown`, which binding then refuses. Text
/// of several statements (which a simple query would run) is prepared the ordinary way
/// instead, for the server's refusal. The text is followed by a line break, so that a
/// trailing `--` comment ends before the `;` and the look. `None` when the look found
/// no statement of that name.
async fn describe(client: &Client, sql: &str) -> Result<Option<Vec<Type>>, tokio_postgres::Error> {
    if !is_single_statement(sql) {
        return client.prepare(sql).await.map(|s| Some(s.params().to_vec()));
    }
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "mt_describe_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let messages = client
        .simple_query(&format!(
            "PREPARE {name} AS {sql}\n; \
             SELECT parameter_types::oid[]::text FROM pg_prepared_statements WHERE name = '{name}'; \
             DEALLOCATE {name}"
        ))
        .await?;
    let oids = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    });
    Ok(oids.map(parse_oids))
}

/// The types of an `oid[]` in text form (`{25,2950}`).
fn parse_oids(text: &str) -> Vec<Type> {
    text.trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|oid| {
            oid.trim()
                .parse()
                .ok()
                .and_then(Type::from_oid)
                .unwrap_or(Type::UNKNOWN)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_types_are_read_from_their_oids() {
        assert_eq!(parse_oids("{}"), Vec::<Type>::new());
        assert_eq!(
            parse_oids("{25,2950,5069,3802}"),
            [Type::TEXT, Type::UUID, Type::XID8, Type::JSONB]
        );
        assert_eq!(parse_oids("{1,20}"), [Type::UNKNOWN, Type::INT8]);
    }

    #[test]
    fn texts_past_the_capacity_are_not_kept() {
        let statements = Statements::new("s1", StatementKind::Prepared);
        for i in 0..CAPACITY {
            assert!(statements.text_kept(&format!("SELECT {i}")).1, "text {i}");
        }
        let (text, kept) = statements.text_kept("SELECT 'one more'");
        assert!(!kept);
        assert_eq!(text.sql, "SELECT 'one more'");
        assert!(statements.text_kept("SELECT 0").1);
    }

    #[test]
    fn texts_are_qualified_once_and_again_when_a_table_is_added() {
        let statements = Statements::new("s1", StatementKind::Unnamed);
        let sql = "SELECT data FROM mt_doc_a WHERE id = $1";
        assert_eq!(statements.text(sql).sql, sql);
        statements.add_table("mt_doc_a");
        assert_eq!(
            statements.text(sql).sql,
            "SELECT data FROM s1.mt_doc_a WHERE id = $1"
        );
        assert!(Arc::ptr_eq(&statements.text(sql), &statements.text(sql)));
        assert_eq!(
            statements.simple("DELETE FROM mt_events"),
            "DELETE FROM s1.mt_events"
        );
    }

    /// The race of a text qualified while its table is added, its steps run in the bad
    /// order: one caller reads the count of clears and qualifies a text naming
    /// `mt_doc_x` before the table is known (so it stays unqualified), another adds the
    /// table (clearing the texts), then the first comes to keep its text. Kept, the
    /// unqualified text would be used until the next table is added (behind a pooler in
    /// transaction mode, where connections have no `search_path`: a missing relation on
    /// every use, or the `public` table of that name).
    #[test]
    fn a_text_qualified_before_its_table_was_added_is_not_kept_after_it() {
        let statements = Statements::new("s1", StatementKind::Prepared);
        let sql = "SELECT data FROM mt_doc_x WHERE id = $1";
        let qualified = "SELECT data FROM s1.mt_doc_x WHERE id = $1";
        let cleared = statements.cleared.load(Ordering::Relaxed);
        let stale = statements.qualified(sql);
        assert_eq!(stale.sql, sql);
        statements.add_table("mt_doc_x");
        assert!(matches!(
            statements.keep(sql, &stale, cleared),
            Keep::Cleared(_)
        ));
        assert_eq!(statements.text(sql).sql, qualified);
        // A caller whose count is from before the addition gets the text qualified again.
        let other = "SELECT count(*) FROM mt_doc_x";
        let (text, kept) = statements.text_kept_since(other, cleared);
        assert_eq!(text.sql, "SELECT count(*) FROM s1.mt_doc_x");
        assert!(kept);
        // A static text the same way (its count read before the addition).
        let fixed: &'static str = Box::leak("SELECT id FROM mt_doc_y".into());
        let cleared = statements.cleared.load(Ordering::Relaxed);
        let stale = statements.qualified(fixed);
        statements.add_table("mt_doc_y");
        assert!(matches!(
            statements.keep(fixed, &stale, cleared),
            Keep::Cleared(_)
        ));
        assert_eq!(
            statements.static_text_kept(fixed).0.sql,
            "SELECT id FROM s1.mt_doc_y"
        );
        assert_eq!(statements.text(fixed).sql, "SELECT id FROM s1.mt_doc_y");
    }

    #[test]
    fn static_texts_are_found_by_address_and_qualified_again_when_a_table_is_added() {
        let statements = Statements::new("s1", StatementKind::Unnamed);
        let sql: &'static str = Box::leak("SELECT data FROM mt_doc_b WHERE id = $1".into());
        let (first, kept) = statements.static_text_kept(sql);
        assert!(kept);
        assert_eq!(first.sql, sql);
        // The same text found by address is the one found by content.
        let (again, _) = statements.static_text_kept(sql);
        assert!(Arc::ptr_eq(&first, &again));
        assert!(Arc::ptr_eq(&first, &statements.text(sql)));
        // Another text (an equal one elsewhere) is found by its own address.
        let copy: &'static str = Box::leak(sql.to_owned().into_boxed_str());
        assert!(Arc::ptr_eq(&statements.static_text_kept(copy).0, &first));
        let other: &'static str = Box::leak("SELECT 1".into());
        assert_eq!(statements.static_text_kept(other).0.sql, "SELECT 1");
        statements.add_table("mt_doc_b");
        assert_eq!(
            statements.static_text_kept(sql).0.sql,
            "SELECT data FROM s1.mt_doc_b WHERE id = $1"
        );
    }
}
