//! Compiled queries on sessions: [`Postgres`] runs every [`CompiledQuery`] on a writing
//! or a query session (`session.query_compiled(&q)`), scoped to the session's tenant.

use marten_core::session::{CompiledQueryBackend, Tracking};
use marten_core::Result;

use super::{Postgres, QuerySession, Session};
use crate::query::{run_compiled, CompiledOutput, CompiledQuery};

impl<Q: CompiledQuery> CompiledQueryBackend<Q> for Postgres {
    type Output = CompiledOutput<Q>;

    async fn run_compiled<K: Tracking>(
        session: &mut Session<K>,
        query: &Q,
    ) -> Result<Self::Output> {
        run_compiled(session, query).await
    }

    async fn read_compiled(session: &mut QuerySession, query: &Q) -> Result<Self::Output> {
        run_compiled(session, query).await
    }
}
