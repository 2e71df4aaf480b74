//! The errors of a tenant's database, naming the tenant (never the connection string,
//! which may carry a password), and the check of a connection string before it is kept.
//!
//! May use: connection (parsing a connection string).

use marten_core::{Error, Result, TenantId};

use crate::connection::split_connection_string;

/// `e`, a failure of opening or using `tenant`'s database (or of looking it up), with
/// the tenant named in the text of the variant where it has one: the context of every
/// variant carrying a [`DatabaseError`](marten_core::DatabaseError) (connection,
/// authentication, TLS, too many connections, conflict, canceled, lock not available,
/// outcome unknown, other database errors), the `what` of a timeout, the message of a
/// configuration error, the object of a missing schema object and the version found of an
/// unsupported server. Left as they are, having no text to carry it: a schema mismatch
/// (its differences are structured), an exhausted pool, a name conflict between document
/// types (the same in every tenant database), an unknown tenant (which names it already),
/// and the variants opening a database does not fail with.
pub(super) fn naming_tenant(e: Error, tenant: &TenantId) -> Error {
    let named = format!("the database of tenant {tenant:?}");
    let at = |context: &mut String| {
        context.push_str(&format!(" ({named})"));
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
        Error::Configuration(message) => Error::Configuration(format!("{named}: {message}")),
        Error::Canceled(mut d) => {
            at(&mut d.context);
            Error::Canceled(d)
        }
        Error::LockNotAvailable(mut d) => {
            at(&mut d.context);
            Error::LockNotAvailable(d)
        }
        Error::OutcomeUnknown(mut d) => {
            at(&mut d.context);
            Error::OutcomeUnknown(d)
        }
        Error::Conflict { kind, mut source } => {
            at(&mut source.context);
            Error::Conflict { kind, source }
        }
        Error::SchemaObjectMissing { mut object } => {
            at(&mut object);
            Error::SchemaObjectMissing { object }
        }
        Error::UnsupportedServerVersion {
            mut found,
            required,
        } => {
            at(&mut found);
            Error::UnsupportedServerVersion { found, required }
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
        for e in [
            Error::SchemaObjectMissing {
                object: "app.mt_doc_note".into(),
            },
            Error::UnsupportedServerVersion {
                found: "12.1".into(),
                required: 13,
            },
        ] {
            let e = naming_tenant(e, &tenant);
            assert!(e.to_string().contains("tenant \"acme\""), "{e}");
        }
        let canceled = naming_tenant(
            Error::Canceled(DatabaseError {
                code: Some("57014".into()),
                context: "checking the schema".into(),
                source: "canceled".into(),
            }),
            &tenant,
        );
        match &canceled {
            Error::Canceled(d) => assert!(d.context.contains("tenant \"acme\""), "{d}"),
            other => panic!("{other:?}"),
        }
        assert!(check_connection_string("postgres://u:secret@h/db", &tenant).is_ok());
        assert!(check_connection_string("host=h dbname=db", &tenant).is_ok());
        let bad = check_connection_string("postgres://u:secret@h:notaport/db", &tenant)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("acme") && !bad.contains("secret"), "{bad}");
    }
}
