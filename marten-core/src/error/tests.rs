//! The inspection methods of [`Error`] and the messages its variants and helper types
//! show.

use super::*;
use crate::IdKey;

fn db(code: Option<&str>) -> DatabaseError {
    DatabaseError {
        code: code.map(str::to_owned),
        context: "saving changes".to_owned(),
        source: "boom".into(),
    }
}

#[test]
fn a_database_error_shows_its_context_and_sqlstate_not_its_source() {
    assert_eq!(
        db(Some("40001")).to_string(),
        "saving changes (SQLSTATE 40001)"
    );
    assert_eq!(db(None).to_string(), "saving changes");
    let e = db(None);
    let source = std::error::Error::source(&e).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("boom"));
}

#[test]
fn every_database_variant_exposes_its_failure_and_sqlstate() {
    let variants: Vec<Error> = vec![
        Error::Database(db(Some("X1"))),
        Error::Connection(db(Some("X1"))),
        Error::Authentication(db(Some("X1"))),
        Error::Canceled(db(Some("X1"))),
        Error::LockNotAvailable(db(Some("X1"))),
        Error::TooManyConnections(db(Some("X1"))),
        Error::OutcomeUnknown(db(Some("X1"))),
        Error::Conflict {
            kind: ConflictKind::Deadlock,
            source: db(Some("X1")),
        },
        Error::Tls {
            kind: TlsFailure::Certificate,
            source: db(Some("X1")),
        },
    ];
    for e in &variants {
        assert_eq!(e.sqlstate(), Some("X1"), "{e:?}");
        assert!(e.database_error().is_some(), "{e:?}");
    }
    assert_eq!(Error::Database(db(None)).sqlstate(), None);
    let other = Error::Configuration("x".into());
    assert!(other.database_error().is_none());
    assert_eq!(other.sqlstate(), None);
}

#[test]
fn only_transient_failures_that_wrote_nothing_are_retryable() {
    let retryable = [
        Error::Connection(db(None)),
        Error::Conflict {
            kind: ConflictKind::Serialization,
            source: db(None),
        },
        Error::LockNotAvailable(db(None)),
        Error::TooManyConnections(db(None)),
        Error::PoolExhausted {
            size: 4,
            waited_ms: 10,
        },
        Error::StreamLocked {
            stream: crate::StreamId::from("s"),
            waited_ms: 10,
        },
        Error::ProjectionConflict { attempts: 3 },
        Error::TransactionLost {
            cause: "the connection closed",
        },
        Error::ReplicaBehind {
            position: "0/3000148".into(),
            replayed: Some("0/3000060".into()),
            waited_ms: 250,
        },
    ];
    for e in &retryable {
        assert!(e.is_retryable(), "{e:?}");
    }
    let not_retryable = [
        Error::OutcomeUnknown(db(None)),
        Error::Database(db(None)),
        Error::Authentication(db(None)),
        Error::Canceled(db(None)),
        Error::InvalidQuery("x".into()),
        Error::Rejected(Vec::new()),
        Error::Tls {
            kind: TlsFailure::NotOffered,
            source: db(None),
        },
    ];
    for e in &not_retryable {
        assert!(!e.is_retryable(), "{e:?}");
    }
}

fn rejection(kind: RejectionKind) -> Rejection {
    Rejection::new("User", IdKey::I64(7), kind)
}

#[test]
fn a_rejected_save_lists_its_rejections_joined_by_semicolons() {
    let e = Error::Rejected(vec![
        rejection(RejectionKind::AlreadyExists),
        rejection(RejectionKind::NotFound),
    ]);
    assert_eq!(e.rejections().len(), 2);
    assert_eq!(
        e.to_string(),
        "save rejected, nothing was written: document User 7 already exists; \
         document User 7 does not exist"
    );
    assert!(Error::Configuration("x".into()).rejections().is_empty());
}

#[test]
fn rejection_messages_name_the_versions() {
    let cases = [
        (
            RejectionKind::VersionMismatch {
                expected: "3".into(),
                actual: None,
            },
            "concurrency check failed for User 7: expected version 3, found no document",
        ),
        (
            RejectionKind::RevisionNotNewer {
                requested: 2,
                actual: 5,
            },
            "revision 2 for User 7 is not newer than the stored revision 5",
        ),
        (
            RejectionKind::UnexpectedStreamVersion {
                expected: 1,
                actual: Some(4),
            },
            "stream 7 is at version 4, not the expected 1",
        ),
        (
            RejectionKind::UnexpectedStreamVersion {
                expected: 4,
                actual: Some(4),
            },
            "stream 7 was at the expected version 4, but an earlier write of the same save \
             moved it (or the stream was started anew)",
        ),
        (
            RejectionKind::UnexpectedStreamVersion {
                expected: 1,
                actual: None,
            },
            "stream 7 does not exist (expected version 1)",
        ),
        (
            RejectionKind::DcbConcurrency {
                tag_type: "Student".into(),
                expected: 0,
                actual: 2,
            },
            "consistency boundary moved: tag Student=7 is at version 2, read at 0",
        ),
    ];
    for (kind, message) in cases {
        assert_eq!(rejection(kind).to_string(), message);
    }
}

#[test]
fn duplicate_events_list_their_ids_joined_by_commas() {
    let (a, b) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
    let e = Error::DuplicateEvent { ids: vec![a, b] };
    assert_eq!(
        e.to_string(),
        format!("events already appended: {a}, {b}; nothing of this save was written")
    );
}

#[test]
fn input_and_data_messages_show_the_id_only_when_there_is_one() {
    let input = |id: Option<&str>| Error::InvalidInput {
        owner: "User".into(),
        id: id.map(str::to_owned),
        field: "name".into(),
        reason: "contains a NUL character",
    };
    assert_eq!(
        input(Some("u1")).to_string(),
        "invalid input for User u1: name contains a NUL character; nothing was sent"
    );
    assert_eq!(
        input(None).to_string(),
        "invalid input for User: name contains a NUL character; nothing was sent"
    );
    let corrupt = Error::CorruptData {
        owner: "stream".into(),
        id: None,
        detail: "negative version".into(),
    };
    assert_eq!(
        corrupt.to_string(),
        "stored data of stream is unusable: negative version"
    );
}

#[test]
fn a_conflict_names_its_kind() {
    let e = Error::Conflict {
        kind: ConflictKind::Deadlock,
        source: db(Some("40P01")),
    };
    assert_eq!(
        e.to_string(),
        "transaction conflict (deadlock): rolled back, retry it"
    );
    assert_eq!(
        ConflictKind::Serialization.to_string(),
        "serialization failure"
    );
}

#[test]
fn a_schema_mismatch_lists_every_difference_with_its_object_and_shapes() {
    let differences = vec![
        SchemaDifference::MissingColumn {
            table: "s.t".into(),
            column: "c".into(),
            expected: "int8".into(),
        },
        SchemaDifference::IndexChanged {
            table: "s.t".into(),
            index: "s.t_uidx_email".into(),
            expected: "UNIQUE btree (email)".into(),
            found_index: "s.t_idx_email".into(),
            found: "btree (email)".into(),
        },
    ];
    assert_eq!(differences[0].object(), "s.t.c");
    assert_eq!(differences[1].object(), "s.t_uidx_email");
    let err = Error::SchemaMismatch { differences };
    assert_eq!(
        err.to_string(),
        "the database schema differs from the registered types: column s.t.c (int8) is missing; \
         index s.t_uidx_email on s.t: expected UNIQUE btree (email), found btree (email) as s.t_idx_email"
    );
    let old = Error::UnsupportedServerVersion {
        found: "12.9".into(),
        required: 13,
    };
    assert_eq!(
        old.to_string(),
        "PostgreSQL 12.9 is not supported: marten needs PostgreSQL 13 or later"
    );
}

#[test]
fn a_tls_failure_says_what_failed() {
    let e = Error::Tls {
        kind: TlsFailure::Certificate,
        source: db(None),
    };
    assert_eq!(
        e.to_string(),
        "TLS connection failed: the server's certificate was refused"
    );
}
