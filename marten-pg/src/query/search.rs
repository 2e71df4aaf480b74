//! Full-text searches as filters of a query: the search condition of `D`'s full-text
//! index (see `tables::documents::search_condition`), its text bound as the fragment's
//! one parameter, ANDed with the query's other filters like any raw condition; and the
//! sort key of `order_by_rank`, their texts bound again as parameters of the ORDER BY.

use marten_core::query::{Filter, FullTextSearch, RawParam, DEFAULT_FULL_TEXT_CONFIG};

use super::render::Sql;
use crate::tables::documents::{rank_expression, search_condition, SearchKind};

/// The filter keeping the documents of `D` whose text matches `text`, read as `kind`
/// says, in the configuration of `D`'s full-text index (the default configuration for a
/// type that implements [`FullTextSearch`] by hand without declaring one: the search
/// then finds the same documents without the index).
pub(super) fn search_filter<D: FullTextSearch>(kind: SearchKind, text: String) -> Filter<D> {
    let config = D::FULL_TEXT.unwrap_or(DEFAULT_FULL_TEXT_CONFIG);
    Filter::raw(search_condition(config, kind), vec![RawParam::Text(text)])
}

/// `ts_rank` of each row's document against every search of the query (each text bound
/// as a parameter of `sql`) in `config`; `None` without a search.
pub(super) fn rank_key(
    config: &str,
    searches: &[(SearchKind, String)],
    sql: &mut Sql,
) -> Option<String> {
    if searches.is_empty() {
        return None;
    }
    let bound: Vec<(SearchKind, String)> = searches
        .iter()
        .map(|(kind, text)| (*kind, sql.param(Box::new(text.clone()))))
        .collect();
    Some(rank_expression(config, &bound))
}
