//! [`DatabaseError`]: a backend-neutral database failure (SQLSTATE, what marten was
//! doing, the underlying error). Uses nothing else.

use std::fmt;

/// A database failure, backend-neutral: the SQLSTATE (if the server sent one), a
/// description of what marten was doing, and the underlying error.
#[derive(Debug)]
pub struct DatabaseError {
    /// The five-character SQLSTATE, when the server reported one.
    pub code: Option<String>,
    /// What marten was doing when it failed.
    pub context: String,
    /// The underlying error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Shows what marten was doing and the SQLSTATE; the underlying error is the
/// [`source`](std::error::Error::source), not repeated here.
impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        if let Some(code) = &self.code {
            write!(f, " (SQLSTATE {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}
