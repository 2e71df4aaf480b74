//! Full-text searches as filters of a query: the search condition of `D`'s full-text
//! index (see `tables::documents::search_condition`), its text bound as the fragment's
//! one parameter, ANDed with the query's other filters like any raw condition.

use marten_core::query::{Filter, FullTextSearch, RawParam, DEFAULT_FULL_TEXT_CONFIG};

use crate::tables::documents::{search_condition, SearchKind};

/// The filter keeping the documents of `D` whose text matches `text`, read as `kind`
/// says, in the configuration of `D`'s full-text index (the default configuration for a
/// type that implements [`FullTextSearch`] by hand without declaring one: the search
/// then finds the same documents without the index).
pub(super) fn search_filter<D: FullTextSearch>(kind: SearchKind, text: String) -> Filter<D> {
    let config = D::FULL_TEXT.unwrap_or(DEFAULT_FULL_TEXT_CONFIG);
    Filter::raw(search_condition(config, kind), vec![RawParam::Text(text)])
}
