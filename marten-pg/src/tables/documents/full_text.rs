//! The full-text index of a document table (`#[document(full_text)]`) and the
//! conditions that search it. Both write the same expression over the whole document,
//! so the index serves every search; the index's key is written as PostgreSQL prints it
//! back (`pg_get_indexdef`), so the schema check finds it unchanged.

use crate::tables::def::IndexDef;

/// How a search reads its text: which PostgreSQL function makes its `tsquery`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// Every word, stemmed, in any order (`plainto_tsquery`).
    Plain,
    /// The words next to each other, in order (`phraseto_tsquery`).
    Phrase,
    /// Search-engine syntax: `"quoted phrase"`, `or`, `-excluded` (`websearch_to_tsquery`).
    Web,
}

impl SearchKind {
    fn function(self) -> &'static str {
        match self {
            SearchKind::Plain => "plainto_tsquery",
            SearchKind::Phrase => "phraseto_tsquery",
            SearchKind::Web => "websearch_to_tsquery",
        }
    }
}

/// The name of the full-text index over a table's documents.
pub fn full_text_index_name(table: &str) -> String {
    format!("{table}_fts")
}

/// `'<config>'::regconfig`: the configuration as a literal (the derive only admits
/// lower-case identifiers; quotes are doubled all the same).
fn config_literal(config: &str) -> String {
    format!("'{}'::regconfig", config.replace('\'', "''"))
}

/// `to_tsvector('<config>'::regconfig, {data})`: the indexed expression.
fn document_vector(config: &str, data: &str) -> String {
    format!("to_tsvector({}, {data})", config_literal(config))
}

/// The GIN index over the text of every string value of the document, in `config`.
pub fn full_text_index(table: &str, config: &str) -> IndexDef {
    let key = document_vector(config, "data");
    let mut index = IndexDef::btree(&full_text_index_name(table), false, &[key.as_str()]);
    index.method = "gin";
    index
}

/// `{function}('<config>'::regconfig, {placeholder})`: the search text as a `tsquery`.
fn text_query(config: &str, kind: SearchKind, placeholder: &str) -> String {
    format!(
        "{}({}, {placeholder})",
        kind.function(),
        config_literal(config)
    )
}

/// The condition matching the rows `d` whose document matches the search text `$1`
/// (read as `kind` says, in `config`), as a raw fragment.
pub fn search_condition(config: &str, kind: SearchKind) -> String {
    format!(
        "{} @@ {}",
        document_vector(config, "d.data"),
        text_query(config, kind, "$1")
    )
}

/// How well the document of the row `d` matches every search (each a kind and the
/// placeholder of its text): `ts_rank` of the document against their queries ANDed.
pub fn rank_expression(config: &str, searches: &[(SearchKind, String)]) -> String {
    let queries: Vec<String> = searches
        .iter()
        .map(|(kind, p)| text_query(config, *kind, p))
        .collect();
    format!(
        "ts_rank({}, {})",
        document_vector(config, "d.data"),
        queries.join(" && ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_key_is_written_as_postgres_prints_it_and_the_search_repeats_it() {
        let ix = full_text_index("mt_doc_post", "english");
        assert_eq!(ix.name, "mt_doc_post_fts");
        assert_eq!(ix.keys, ["to_tsvector('english'::regconfig, data)"]);
        assert_eq!(
            ix.create("s", "mt_doc_post", false),
            "CREATE INDEX IF NOT EXISTS mt_doc_post_fts ON s.mt_doc_post USING gin (to_tsvector('english'::regconfig, data))"
        );
        assert_eq!(
            search_condition("simple", SearchKind::Web),
            "to_tsvector('simple'::regconfig, d.data) @@ websearch_to_tsquery('simple'::regconfig, $1)"
        );
        let searches = [
            (SearchKind::Plain, "$2".to_owned()),
            (SearchKind::Phrase, "$3".to_owned()),
        ];
        assert_eq!(
            rank_expression("english", &searches),
            "ts_rank(to_tsvector('english'::regconfig, d.data), plainto_tsquery('english'::regconfig, $2) && phraseto_tsquery('english'::regconfig, $3))"
        );
    }
}
