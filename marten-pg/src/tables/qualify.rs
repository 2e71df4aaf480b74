//! Schema qualification of statement text. marten's statements are written once per
//! type (in statics, shared by every store), naming their tables without a schema; each
//! store qualifies a statement's text once, on its first use, and keeps the result (see
//! the connection layer's statement cache). Nothing then depends on the connection's
//! `search_path`, which poolers in transaction mode cannot carry.
//!
//! The rule, over the text outside string literals, quoted identifiers and comments:
//! marten's own tables and functions (`mt_events`, `mt_streams`, ...: [`INTERNAL`]) are
//! qualified wherever they appear, and a document table of the store wherever it is
//! named as a relation (right after `FROM`, `JOIN`, `INTO`, `UPDATE`, `TABLE`, `ONLY` or
//! `COPY`).
//! A name already qualified (after a `.`) is left alone.
//!
//! Both this and [`is_single_statement`] read the text with one lexer that ends every
//! literal, quoted name and comment where PostgreSQL's own lexer does (with
//! `standard_conforming_strings` on, which marten requires).

use crate::sql_lexer::{token, Token};
use crate::tables::event_ddl::EVENTS_SEQUENCE;
use crate::tables::functions::GUARD_FUNCTION;
use crate::tables::INTERNAL_TABLES;

/// marten's own relations and functions: qualified wherever they appear.
pub const INTERNAL: [&str; 9] = {
    let t = INTERNAL_TABLES;
    [
        t[0],
        t[1],
        t[2],
        t[3],
        t[4],
        t[5],
        t[6],
        EVENTS_SEQUENCE,
        GUARD_FUNCTION,
    ]
};

/// The words after which a name is a relation.
const RELATION_WORDS: &[&str] = &["FROM", "JOIN", "INTO", "UPDATE", "TABLE", "ONLY", "COPY"];

/// `sql` with marten's relations qualified by `schema` (a plain identifier);
/// `is_document_table` says whether a name is one of the store's document tables.
pub fn qualify(sql: &str, schema: &str, is_document_table: impl Fn(&str) -> bool) -> String {
    qualify_renaming(sql, schema, is_document_table, |_| None)
}

/// [`qualify`], with document tables renamed: a document table for which `rename` gives
/// a name is qualified under that name (a blue/green build writes a document type's
/// statements to its own table: see [`crate::tables::versions`]).
pub fn qualify_renaming<'r>(
    sql: &str,
    schema: &str,
    is_document_table: impl Fn(&str) -> bool,
    rename: impl Fn(&str) -> Option<&'r str>,
) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let (mut i, mut copied) = (0, 0);
    // The previous word (when only blanks follow it) and whether a `.` came last.
    let (mut prev_word, mut after_dot): (Option<&str>, bool) = (None, false);
    while i < sql.len() {
        let (token, end) = token(sql, i);
        let start = std::mem::replace(&mut i, end);
        match token {
            Token::Word => {
                let Some(word) = sql.get(start..end) else {
                    (prev_word, after_dot) = (None, false);
                    continue;
                };
                let relation = prev_word
                    .is_some_and(|w| RELATION_WORDS.iter().any(|r| w.eq_ignore_ascii_case(r)));
                let document = relation && is_document_table(word);
                let ours = INTERNAL.contains(&word) || document;
                if ours && !after_dot {
                    out.push_str(&sql[copied..start]);
                    out.push_str(schema);
                    out.push('.');
                    copied = start;
                    if let Some(renamed) = rename(word).filter(|_| document) {
                        out.push_str(renamed);
                        copied = end;
                    }
                }
                (prev_word, after_dot) = (Some(word), false);
            }
            Token::Blank => {}
            Token::Byte(b) => (prev_word, after_dot) = (None, b == b'.'),
            Token::Comment | Token::Opaque | Token::Unterminated => {
                (prev_word, after_dot) = (None, false);
            }
        }
    }
    out.push_str(&sql[copied..]);
    out
}

/// Whether `sql` holds one statement as PostgreSQL splits text: no `;` outside literals,
/// quoted names and comments but trailing ones (followed by blanks and comments only),
/// and no literal, quoted name or comment the text ends inside. Text sent where the
/// server would run several statements (a simple query) must pass this first, so the
/// scan follows the server's lexer with `standard_conforming_strings` on (which marten
/// requires): a backslash escapes only in `E'...'` literals (and in their continuation
/// after a line break), `$` continues a name (`a$b$` is no dollar quote), `/* */`
/// comments nest and a `--` comment ends at a line feed or a carriage return.
pub fn is_single_statement(sql: &str) -> bool {
    let (mut i, mut ended) = (0, false);
    while i < sql.len() {
        let (token, end) = token(sql, i);
        match token {
            Token::Unterminated => return false,
            Token::Byte(b';') => ended = true,
            Token::Blank | Token::Comment => {}
            Token::Word | Token::Opaque | Token::Byte(_) if ended => return false,
            Token::Word | Token::Opaque | Token::Byte(_) => {}
        }
        i = end;
    }
    true
}

/// The words of `sql` (keywords and unquoted names), in order, outside literals, quoted
/// names and comments.
pub(crate) fn words(sql: &str) -> impl Iterator<Item = &str> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < sql.len() {
            let (token, end) = token(sql, i);
            let start = std::mem::replace(&mut i, end);
            if token == Token::Word {
                if let Some(word) = sql.get(start..end) {
                    return Some(word);
                }
            }
        }
        None
    })
}

/// The quoted names of `sql` (`"..."`, unescaped: `""` is `"`), in order, outside
/// literals and comments; `None` for one written with Unicode escapes (`U&"..."`), whose
/// name the text does not spell.
pub(crate) fn quoted_names(sql: &str) -> impl Iterator<Item = Option<String>> + '_ {
    let mut i = 0;
    let mut after_ampersand = false;
    std::iter::from_fn(move || {
        while i < sql.len() {
            let (token, end) = token(sql, i);
            let start = std::mem::replace(&mut i, end);
            let escaped = std::mem::replace(&mut after_ampersand, token == Token::Byte(b'&'));
            if token != Token::Opaque || !sql[start..].starts_with('"') {
                continue;
            }
            if escaped {
                return Some(None);
            }
            let inner = sql
                .get(start + 1..end.saturating_sub(1))
                .unwrap_or_default();
            return Some(Some(inner.replace("\"\"", "\"")));
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::{qualify, qualify_renaming};

    #[test]
    fn a_renamed_document_table_is_qualified_under_its_new_name_only_as_a_relation() {
        let sql =
            "INSERT INTO mt_doc_user (id) SELECT id FROM mt_doc_user WHERE mt_doc_user.id = 1";
        let out = qualify_renaming(
            sql,
            "s1",
            |t| t == "mt_doc_user",
            |t| (t == "mt_doc_user").then_some("mt_doc_user_v2"),
        );
        assert_eq!(
            out,
            "INSERT INTO s1.mt_doc_user_v2 (id) SELECT id FROM s1.mt_doc_user_v2 WHERE mt_doc_user.id = 1"
        );
    }

    fn q(sql: &str) -> String {
        qualify(sql, "s1", |t| t == "mt_doc_user" || t == "data")
    }

    #[test]
    fn internal_names_are_qualified_everywhere_and_only_once() {
        assert_eq!(
            q("SELECT e.seq_id FROM mt_events e JOIN mt_streams st ON st.id = e.stream_id"),
            "SELECT e.seq_id FROM s1.mt_events e JOIN s1.mt_streams st ON st.id = e.stream_id"
        );
        assert_eq!(
            q("SELECT mt_assert_no_rejections()"),
            "SELECT s1.mt_assert_no_rejections()"
        );
        assert_eq!(
            q("SELECT 1 FROM s0.mt_events"),
            "SELECT 1 FROM s0.mt_events"
        );
        assert_eq!(
            q("WITH u AS (UPDATE mt_event_progression SET x = 1 RETURNING 1) SELECT * FROM u"),
            "WITH u AS (UPDATE s1.mt_event_progression SET x = 1 RETURNING 1) SELECT * FROM u"
        );
    }

    #[test]
    fn document_tables_are_qualified_where_they_are_relations() {
        assert_eq!(
            q("INSERT INTO mt_doc_user AS d (id, data) SELECT id, data FROM input"),
            "INSERT INTO s1.mt_doc_user AS d (id, data) SELECT id, data FROM input"
        );
        assert_eq!(
            q("UPDATE  mt_doc_user AS d SET data = $1"),
            "UPDATE  s1.mt_doc_user AS d SET data = $1"
        );
        assert_eq!(
            q("delete from\n mt_doc_user where id = $1"),
            "delete from\n s1.mt_doc_user where id = $1"
        );
        // A column of the same name as a table is not a relation.
        assert_eq!(q("SELECT data FROM data"), "SELECT data FROM s1.data");
        assert_eq!(q("SELECT mt_doc_user FROM x"), "SELECT mt_doc_user FROM x");
        assert_eq!(
            q("COPY mt_doc_user (id, data) FROM STDIN (FORMAT binary)"),
            "COPY s1.mt_doc_user (id, data) FROM STDIN (FORMAT binary)"
        );
        assert_eq!(
            q("COPY pg_temp.mt_doc_user (id) FROM STDIN"),
            "COPY pg_temp.mt_doc_user (id) FROM STDIN"
        );
    }

    #[test]
    fn single_statements_are_told_from_several() {
        use super::is_single_statement as single;
        assert!(single("SELECT ';', \"a;b\" FROM t -- ;\n"));
        assert!(single("SELECT $$;$$;  "));
        assert!(single("SELECT 1; -- done\n; /* and done */ ;"));
        assert!(single("SELECT 'it''s; fine', E'a\\'; b', $1, $2::int"));
        assert!(single("SELECT /* a /* nested ; */ comment ; */ 1"));
        assert!(single("SELECT $t$ ; $$ ; $t$, 1 AS a$b"));
        assert!(!single("SELECT 1; DROP TABLE t"));
        assert!(!single("SELECT 1; SELECT 2;"));
    }

    /// Text that PostgreSQL (with `standard_conforming_strings` on) splits into two
    /// statements, each checked against a real server: a scan that saw one would let the
    /// `DELETE` run where marten sends text as a simple query (describing a statement
    /// behind a pooler in transaction mode).
    #[test]
    fn text_the_server_splits_is_never_taken_for_one_statement() {
        use super::is_single_statement as single;
        for sql in [
            // A backslash escapes nothing in a plain literal.
            "SELECT 'a\\'; DELETE FROM t; --'",
            // An `E'...'` literal continues after a line break, escapes and all.
            "SELECT E'a'\n'\\''; DELETE FROM t; --'",
            "SELECT E'a' -- note\n  '\\''; DELETE FROM t; --'",
            // `$` continues a name: no dollar quote opens.
            "SELECT 1 AS a$x$; DELETE FROM t; SELECT 2 AS b$x$",
            // A carriage return ends a line comment.
            "SELECT 1 -- note\r; DELETE FROM t",
            // Comments nest.
            "SELECT 1 /* /* */ ' */; DELETE FROM t; --'",
            // A dollar quote's tag may hold non-ASCII letters.
            "SELECT $\u{e9}$'$\u{e9}$; DELETE FROM t; --'",
            // A parameter is `$` and digits: an `E'...'` literal may follow it.
            "SELECT $1e'\\''; DELETE FROM t; --'",
        ] {
            assert!(!single(sql), "taken for one statement: {sql:?}");
        }
    }

    #[test]
    fn text_that_ends_inside_a_literal_or_comment_is_not_one_statement() {
        use super::is_single_statement as single;
        for sql in [
            "SELECT 'a",
            "SELECT E'a\\'",
            "SELECT \"a",
            "SELECT $x$ a",
            "SELECT 1 /* a /* b */",
        ] {
            assert!(!single(sql), "taken for one statement: {sql:?}");
        }
        assert!(single("SELECT 1 -- no line break"));
    }

    #[test]
    fn words_are_read_outside_literals_quoted_names_and_comments() {
        let words = |sql| super::words(sql).collect::<Vec<_>>();
        assert_eq!(
            words("/* BEGIN */ -- COMMIT\n select 'x', E'\\'', \"y\", $$z$$, $1 FROM a$b"),
            ["select", "FROM", "a$b"]
        );
        assert_eq!(words(";\n\u{e9}t\u{e9} ;"), ["\u{e9}t\u{e9}"]);
        assert!(words("  -- nothing").is_empty());
    }

    #[test]
    fn literals_quoted_names_comments_and_dollar_quotes_are_left_alone() {
        for sql in [
            "SELECT 'FROM mt_events', 'it''s mt_events'",
            "SELECT E'\\' mt_events'",
            "SELECT E'a'\n'\\' mt_events'",
            "SELECT 1 /* /* */ mt_events */",
            "SELECT 1 -- mt_events\r",
            "SELECT \"mt_events\" FROM x",
            "SELECT 1 -- FROM mt_events\n",
            "SELECT 1 /* mt_streams */",
            "SELECT $$ mt_events $$, $t$ FROM mt_doc_user $t$",
            "SELECT x FROM pg_stat_activity WHERE a = $1 AND b = $12",
        ] {
            assert_eq!(q(sql), sql);
        }
        assert_eq!(q("SELECT $1 FROM mt_events"), "SELECT $1 FROM s1.mt_events");
        // A backslash ends nothing in a plain literal: what follows is statement text.
        assert_eq!(
            q("SELECT 'a\\', mt_events_sequence"),
            "SELECT 'a\\', s1.mt_events_sequence"
        );
        assert_eq!(
            q("SELECT 'a' || $2, mt_events_sequence"),
            "SELECT 'a' || $2, s1.mt_events_sequence"
        );
    }
}
