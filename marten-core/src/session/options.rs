//! What a session is opened with ([`SessionOptions`]) and what it stamps on the events it
//! appends ([`EventMeta`]).

/// Options of one session.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Whether writes assert the versions the session saw (default `true`). When `false`,
    /// every write of the session behaves as if the document had concurrency `off`.
    pub concurrency_checks: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            concurrency_checks: true,
        }
    }
}

impl SessionOptions {
    /// Options with the concurrency checks turned off.
    pub fn without_concurrency_checks() -> Self {
        Self {
            concurrency_checks: false,
        }
    }
}

/// Metadata a session stamps on the events it appends.
#[derive(Debug, Default, Clone)]
pub struct EventMeta {
    /// The correlation id, if set.
    pub correlation_id: Option<String>,
    /// The causation id, if set.
    pub causation_id: Option<String>,
    /// Headers, if any was set.
    pub headers: Option<serde_json::Map<String, serde_json::Value>>,
}
