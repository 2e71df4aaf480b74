//! [`Deleted`]: which rows of a soft-deleted type a query or a write by filter matches
//! (the live ones by default, every one, or the marked ones only), as the SQL condition
//! it adds. Pure.

use crate::tables::documents::DELETED_COLUMN;

/// Which rows of a soft-deleted type (`#[document(soft_delete)]`) a statement matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Deleted {
    /// The rows not marked deleted (the default of every read).
    #[default]
    Exclude,
    /// Every row, marked deleted or not.
    Include,
    /// The rows marked deleted only.
    Only,
}

impl Deleted {
    /// The condition on the rows `d` of a table (`None`: no condition). A table that is
    /// not soft-deleted has no marked rows: only [`Deleted::Only`] adds one (`FALSE`).
    pub(crate) fn clause(self, soft_delete: bool) -> Option<String> {
        match (self, soft_delete) {
            (Deleted::Exclude, true) => Some(format!("NOT d.{DELETED_COLUMN}")),
            (Deleted::Only, true) => Some(format!("d.{DELETED_COLUMN}")),
            (Deleted::Only, false) => Some("FALSE".to_owned()),
            (Deleted::Include, _) | (Deleted::Exclude, false) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_choice_renders_its_condition_only_on_a_soft_deleted_table() {
        assert_eq!(
            Deleted::Exclude.clause(true).as_deref(),
            Some("NOT d.mt_deleted")
        );
        assert_eq!(Deleted::Only.clause(true).as_deref(), Some("d.mt_deleted"));
        assert_eq!(Deleted::Include.clause(true), None);
        assert_eq!(Deleted::Exclude.clause(false), None);
        assert_eq!(Deleted::Only.clause(false).as_deref(), Some("FALSE"));
    }
}
