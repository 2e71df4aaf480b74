//! `where_sql` with typed parameters (timestamps, arrays, floats; tuples, run-time lists
//! mixing typed and untyped values): on a conjoined type the tenant binds `$1` and the
//! fragment cannot widen its match; a wrong type or a NUL character is an error.

mod common;

use common::invoices::{ids, seeded, Invoice};
use common::ok;

#[tokio::test]
async fn where_sql_takes_typed_parameters_after_the_tenant() {
    use marten::query::{param, RawParam};
    let (schema, store) = seeded("agg_where_sql").await;
    let mut red = ok(store.query_session_for("red"));
    let mut blue = ok(store.query_session_for("blue"));
    let hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let q = red
        .query::<Invoice>()
        .where_sql(
            "d.mt_last_modified > $1 AND d.id = ANY($2) AND (d.data ->> 'rate')::float8 >= $3",
            (hour_ago, vec![1i64, 2, 3], 5.0f64),
        )
        .order_by(|f| f.id.asc());
    let sql = q.to_sql();
    assert!(
        sql.contains("d.tenant_id = $1") && sql.contains("d.mt_last_modified > $2"),
        "the tenant binds $1, the fragment's parameters follow: {sql}"
    );
    assert_eq!(ids(&ok(q.to_list().await)), [2, 3]);
    let blue_found = ok(blue
        .query::<Invoice>()
        .where_sql("d.id = ANY($1)", (vec![1i64, 2, 3],))
        .to_list()
        .await);
    assert!(blue_found.iter().all(|i| i.total > 1000) && blue_found.len() == 3);
    // A fragment cannot widen the tenant's match.
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .where_sql("TRUE OR TRUE", ())
            .count()
            .await),
        4
    );
    // Nor can a fragment that closes the parenthesis it is wrapped in: it is refused
    // before anything is sent, and so is one that leaves a parenthesis open.
    // The server's lexer decides where a comment or a literal ends: a `--` comment ends
    // at a carriage return too, and an escape string continued after a line break keeps
    // its backslash escapes (its `\'` is a quote), so the `)` after either is code.
    for escape in [
        "TRUE) OR (TRUE",
        "TRUE)) OR ((TRUE",
        "(TRUE",
        "d.id = (1))",
        "d.data ->> 'customer' = 'x' --\r) OR (TRUE",
        "d.data ->> 'customer' = E'a'\n'\\' || ' ) OR (TRUE --'",
    ] {
        let widened = red.query::<Invoice>().where_sql(escape, ()).to_list().await;
        match widened {
            Err(marten::Error::InvalidQuery(reason)) => {
                assert!(reason.contains("parenthes"), "{escape}: {reason}")
            }
            other => panic!("{escape}: {other:?}"),
        }
    }
    // Parentheses inside literals, quoted names and comments do not count, and a
    // trailing line comment does not swallow the statement's own closing parenthesis.
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .where_sql(
                "(d.data ->> 'customer') <> ')' /* ( */ AND d.id > $1::bigint -- ) or (true",
                vec![RawParam::Int(2)],
            )
            .count()
            .await),
        2
    );
    // A connection that reads backslashes in literals as escapes would disagree with
    // the scanner on where a literal ends ('\'' ) OR (TRUE --'): refused at build.
    let off = marten::DocumentStore::builder()
        .connection_string(schema.url())
        .schema(schema.name())
        .after_connect(|client| {
            Box::pin(async move {
                client
                    .batch_execute("SET standard_conforming_strings = off")
                    .await
            })
        })
        .build()
        .await;
    assert!(
        matches!(&off, Err(marten::Error::Configuration(r)) if r.contains("standard_conforming_strings")),
        "{:?}",
        off.err()
    );
    // Mixed lists and the older enum still work.
    let mixed = vec![
        param(vec!["a".to_owned(), "c".to_owned()]),
        RawParam::Int(15),
    ];
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .where_sql(
                "d.data ->> 'customer' = ANY($1) AND d.id * 10 > $2::bigint",
                mixed
            )
            .count()
            .await),
        2
    );
    assert_eq!(
        ok(red
            .query::<Invoice>()
            .where_sql("d.id > $1::bigint", vec![RawParam::Int(2)])
            .count()
            .await),
        2
    );
    // A value of the wrong type for its placeholder is a typed error, nothing is read.
    let wrong = red
        .query::<Invoice>()
        .where_sql("d.id = $1::bigint", ("one".to_owned(),))
        .to_list()
        .await;
    assert!(wrong.is_err(), "{wrong:?}");
    let nul = red
        .query::<Invoice>()
        .where_sql("d.data ->> 'customer' = $1", ("a\u{0}".to_owned(),))
        .to_list()
        .await;
    assert!(
        matches!(nul, Err(marten::Error::InvalidQuery(_))),
        "{nul:?}"
    );
    // So is one inside a list or an option of text, before anything is sent.
    let in_list = red
        .query::<Invoice>()
        .where_sql(
            "d.data ->> 'customer' = ANY($1)",
            (vec!["b".to_owned(), "a\u{0}".to_owned()],),
        )
        .to_list()
        .await;
    assert!(
        matches!(in_list, Err(marten::Error::InvalidQuery(_))),
        "{in_list:?}"
    );
    let in_option = red
        .query::<Invoice>()
        .where_sql("d.data ->> 'customer' = $1", (Some("a\u{0}".to_owned()),))
        .to_list()
        .await;
    assert!(
        matches!(in_option, Err(marten::Error::InvalidQuery(_))),
        "{in_option:?}"
    );
}
