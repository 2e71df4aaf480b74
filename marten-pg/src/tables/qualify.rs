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
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len() + 32);
    let (mut i, mut copied) = (0, 0);
    // The previous word (when only blanks follow it) and whether a `.` came last.
    let (mut prev_word, mut after_dot): (Option<&str>, bool) = (None, false);
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'$'))
            {
                i += 1;
            }
            let word = &sql[start..i];
            if i < bytes.len() && bytes[i] == b'\'' && word.eq_ignore_ascii_case("e") {
                i = skip_quoted(bytes, i, b'\'', true);
                (prev_word, after_dot) = (None, false);
                continue;
            }
            let relation =
                prev_word.is_some_and(|w| RELATION_WORDS.iter().any(|r| w.eq_ignore_ascii_case(r)));
            let document = relation && is_document_table(word);
            let ours = INTERNAL.contains(&word) || document;
            if ours && !after_dot {
                out.push_str(&sql[copied..start]);
                out.push_str(schema);
                out.push('.');
                copied = start;
                if let Some(renamed) = rename(word).filter(|_| document) {
                    out.push_str(renamed);
                    copied = i;
                }
            }
            (prev_word, after_dot) = (Some(word), false);
            continue;
        }
        i = match b {
            b'\'' => skip_quoted(bytes, i, b'\'', false),
            b'"' => skip_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => skip_to(bytes, i, "\n"),
            b'/' if bytes.get(i + 1) == Some(&b'*') => skip_to(bytes, i, "*/"),
            b'$' => skip_dollar(sql, i),
            _ if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ => i + 1,
        };
        (prev_word, after_dot) = (None, b == b'.');
    }
    out.push_str(&sql[copied..]);
    out
}

/// Whether `sql` holds one statement: no `;` outside literals, quoted names and comments
/// (but a trailing one).
pub fn is_single_statement(sql: &str) -> bool {
    let bytes = sql.trim_end().trim_end_matches(';').as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        i = match bytes[i] {
            b';' => return false,
            b'\'' => skip_quoted(bytes, i, b'\'', true),
            b'"' => skip_quoted(bytes, i, b'"', false),
            b'-' if bytes.get(i + 1) == Some(&b'-') => skip_to(bytes, i, "\n"),
            b'/' if bytes.get(i + 1) == Some(&b'*') => skip_to(bytes, i, "*/"),
            b'$' => match std::str::from_utf8(bytes) {
                Ok(text) => skip_dollar(text, i),
                Err(_) => i + 1,
            },
            _ => i + 1,
        };
    }
    true
}

/// The index after the quoted text opening at `i` (`quote` doubled inside is escaped; with
/// `backslash`, so is a character after `\`).
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8, backslash: bool) -> usize {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if backslash => i += 2,
            b if b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The index after the first `end` at or after `i + 2` (or the end of the text).
fn skip_to(bytes: &[u8], i: usize, end: &str) -> usize {
    let from = (i + 2).min(bytes.len());
    bytes[from..]
        .windows(end.len())
        .position(|w| w == end.as_bytes())
        .map_or(bytes.len(), |at| from + at + end.len())
}

/// At a `$`: a parameter (`$1`) is skipped; a dollar-quoted string (`$$...$$`,
/// `$tag$...$tag$`) is skipped whole.
fn skip_dollar(sql: &str, i: usize) -> usize {
    let rest = &sql[i + 1..];
    let tag_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let tag = &rest[..tag_len];
    if rest[tag_len..].starts_with('$') && !tag.starts_with(|c: char| c.is_ascii_digit()) {
        let delimiter = &sql[i..i + tag_len + 2];
        let body = i + delimiter.len();
        return sql[body..]
            .find(delimiter)
            .map_or(sql.len(), |at| body + at + delimiter.len());
    }
    i + 1 + tag_len
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
        assert!(!single("SELECT 1; DROP TABLE t"));
    }

    #[test]
    fn literals_quoted_names_comments_and_dollar_quotes_are_left_alone() {
        for sql in [
            "SELECT 'FROM mt_events', 'it''s mt_events'",
            "SELECT E'\\' mt_events'",
            "SELECT \"mt_events\" FROM x",
            "SELECT 1 -- FROM mt_events\n",
            "SELECT 1 /* mt_streams */",
            "SELECT $$ mt_events $$, $t$ FROM mt_doc_user $t$",
            "SELECT x FROM pg_stat_activity WHERE a = $1 AND b = $12",
        ] {
            assert_eq!(q(sql), sql);
        }
        assert_eq!(q("SELECT $1 FROM mt_events"), "SELECT $1 FROM s1.mt_events");
        assert_eq!(
            q("SELECT 'a' || $2, mt_events_sequence"),
            "SELECT 'a' || $2, s1.mt_events_sequence"
        );
    }
}
