//! [`Filter`]: a filter's syntax tree paired with the Rust predicate that computes the
//! same answer, and the combinators (`and`, `or`, `not`, `all`, `raw`). Uses the syntax
//! tree of `node`.

use std::sync::Arc;

use super::node::{Node, RawParam};

/// A filter on documents of type `R`: a syntax tree for the database and the same
/// predicate as a Rust function.
pub struct Filter<R> {
    node: Node,
    eval: Arc<dyn Fn(&R) -> bool + Send + Sync>,
}

impl<R> Clone for Filter<R> {
    fn clone(&self) -> Self {
        Filter {
            node: self.node.clone(),
            eval: self.eval.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Filter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Filter").field(&self.node).finish()
    }
}

impl<R: 'static> Filter<R> {
    /// A filter of `node` (a test with a NaN or infinite float value becomes
    /// [`Node::Invalid`], which backends refuse to run) and the same test in Rust.
    pub(super) fn new(node: Node, eval: impl Fn(&R) -> bool + Send + Sync + 'static) -> Self {
        Filter {
            node: node.refusing_non_finite(),
            eval: Arc::new(eval),
        }
    }

    /// The syntax tree.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Whether a document matches, computed in Rust.
    pub fn matches(&self, doc: &R) -> bool {
        (self.eval)(doc)
    }

    /// Both this and `other`.
    pub fn and(self, other: Filter<R>) -> Filter<R> {
        let (a, b) = (self.eval, other.eval);
        Filter::new(Node::And(vec![self.node, other.node]), move |r| {
            a(r) && b(r)
        })
    }

    /// This or `other`.
    pub fn or(self, other: Filter<R>) -> Filter<R> {
        let (a, b) = (self.eval, other.eval);
        Filter::new(Node::Or(vec![self.node, other.node]), move |r| a(r) || b(r))
    }

    /// Not this.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Filter<R> {
        let a = self.eval;
        Filter::new(Node::Not(Box::new(self.node)), move |r| !a(r))
    }

    /// Every document.
    pub fn all() -> Filter<R> {
        Filter::new(Node::And(Vec::new()), |_| true)
    }

    /// A raw SQL condition with `$1..` parameters. It cannot be evaluated in Rust:
    /// [`matches`](Self::matches) treats it as true.
    pub fn raw(sql: impl Into<String>, params: Vec<RawParam>) -> Filter<R> {
        Filter::new(
            Node::Raw {
                sql: sql.into(),
                params,
            },
            |_| true,
        )
    }
}
