//! The errors of a tenant's database, naming the tenant (never the connection string,
//! which may carry a password), and the check of a connection string before it is kept.
//!
//! May use: connection (parsing a connection string).

use marten_core::{Error, Result, TenantId};

use crate::connection::split_connection_string;

/// `e`, a failure of opening or using `tenant`'s database, with the tenant named in its
/// context (connection, authentication, timeout and configuration errors, and the other
/// database errors); other errors as they are.
pub(super) fn naming_tenant(e: Error, tenant: &TenantId) -> Error {
    let at = |context: &mut String| {
        context.push_str(&format!(" (the database of tenant {tenant:?})"));
    };
    match e {
        Error::Connection(mut d) => {
            at(&mut d.context);
            Error::Connection(d)
        }
        Error::Authentication(mut d) => {
            at(&mut d.context);
            Error::Authentication(d)
        }
        Error::TooManyConnections(mut d) => {
            at(&mut d.context);
            Error::TooManyConnections(d)
        }
        Error::Database(mut d) => {
            at(&mut d.context);
            Error::Database(d)
        }
        Error::Tls { kind, mut source } => {
            at(&mut source.context);
            Error::Tls { kind, source }
        }
        Error::Timeout { mut what } => {
            at(&mut what);
            Error::Timeout { what }
        }
        Error::Configuration(message) => {
            Error::Configuration(format!("the database of tenant {tenant:?}: {message}"))
        }
        other => other,
    }
}

/// Fails with [`Error::Configuration`] naming `tenant` unless `url` is a connection
/// string the store can use (a `postgres://` URL or `key=value` pairs).
pub(super) fn check_connection_string(url: &str, tenant: &TenantId) -> Result<()> {
    let parsed = split_connection_string(url).and_then(|(rest, _)| {
        rest.parse::<tokio_postgres::Config>()
            .map(|_| ())
            .map_err(|e| Error::Configuration(format!("invalid connection string: {e}")))
    });
    parsed.map_err(|e| naming_tenant(e, tenant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use marten_core::DatabaseError;

    #[test]
    fn errors_name_the_tenant_and_not_the_connection_string() {
        let tenant = TenantId::new("acme").unwrap();
        let e = naming_tenant(
            Error::Connection(DatabaseError {
                code: None,
                context: "connecting".into(),
                source: "refused".into(),
            }),
            &tenant,
        );
        match &e {
            Error::Connection(d) => {
                assert_eq!(d.context, "connecting (the database of tenant \"acme\")")
            }
            other => panic!("{other:?}"),
        }
        let e = naming_tenant(Error::Timeout { what: "x".into() }, &tenant);
        assert!(e.to_string().contains("tenant \"acme\""), "{e}");
        assert!(check_connection_string("postgres://u:secret@h/db", &tenant).is_ok());
        assert!(check_connection_string("host=h dbname=db", &tenant).is_ok());
        let bad = check_connection_string("postgres://u:secret@h:notaport/db", &tenant)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("acme") && !bad.contains("secret"), "{bad}");
    }
}
