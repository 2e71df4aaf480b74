//! [`Sql`]: the text of a statement being built, its parameters (numbered from `$1` in
//! the order they are added) and why it cannot run, if it cannot. Uses nothing else of
//! `render`.

use marten_core::{Error, Result};
use tokio_postgres::types::ToSql;

/// SQL text and its parameters, numbered from `$1`.
#[derive(Default)]
pub(crate) struct Sql {
    pub(crate) text: String,
    pub(crate) params: Vec<Box<dyn ToSql + Sync + Send>>,
    /// Why the query cannot run (a raw fragment whose placeholders do not match its
    /// parameters); checked before anything is sent.
    pub(crate) invalid: Option<String>,
}

impl Sql {
    /// Fails with [`Error::InvalidQuery`] when a raw fragment was invalid.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.invalid {
            Some(reason) => Err(Error::InvalidQuery(reason.clone())),
            None => Ok(()),
        }
    }

    /// [`check`](Self::check), passing the query on.
    pub(crate) fn checked(self) -> Result<Self> {
        self.check().map(|()| self)
    }

    /// Adds a parameter; returns its placeholder.
    pub(crate) fn param(&mut self, value: Box<dyn ToSql + Sync + Send>) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// The parameters as tokio-postgres takes them.
    pub(crate) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}
