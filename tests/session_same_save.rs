//! Several operations on one document in one save: a write the session queued earlier in
//! the save (unchecked, or a patch by filter whose ids are unknown when queued) moves the
//! version first in the save's transaction, so a later write of the same document must
//! not assert the version the session knew before (the save would reject itself); a
//! stale version is still rejected when nothing earlier in the save wrote the document.
//! And the commit-time cleanup of a delete or patch keeps the document a later write of
//! the same save stored (identity map, dirty tracking). Each for optimistic (uuid) and
//! numeric (revision) documents.

mod common;

use common::{builder, ok};
use marten::prelude::*;
use marten::RejectionKind;
use serde::{Deserialize, Serialize};

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(optimistic)]
struct Shop {
    id: String,
    name: String,
    n: i64,
}

#[derive(Document, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[concurrency(numeric)]
struct Tally {
    id: String,
    name: String,
    n: i64,
}

/// The same tests for each document type (`$doc`: a type with `id: String`,
/// `name: String`, `n: i64`).
macro_rules! same_save_tests {
    ($module:ident, $doc:ident) => {
        mod $module {
            use super::*;

            fn doc(id: &str, name: &str, n: i64) -> $doc {
                $doc {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    n,
                }
            }

            async fn store(label: &str) -> (marten_testing::TestSchema, DocumentStore) {
                let (schema, b) = builder(label);
                let store = ok(b.document::<$doc>().build().await);
                (schema, store)
            }

            /// Stores `docs` with a session of their own.
            async fn saved(store: &DocumentStore, docs: &[$doc]) {
                let mut s = store.lightweight_session();
                for d in docs {
                    ok(s.store(d.clone()));
                }
                ok(s.save_changes().await);
            }

            /// The stored document and its version, read by a session of its own.
            async fn stored(
                store: &DocumentStore,
                id: &str,
            ) -> Option<($doc, marten::concurrency::VersionOf<$doc>)> {
                let id = id.to_owned();
                let mut q = store.query_session();
                let d = ok(q.load::<$doc>(&id).await)?;
                let meta = ok(q.metadata::<$doc>(&id).await).expect("metadata");
                Some((d, meta.version))
            }

            /// A patch by filter in a save leaves later writes of its type in that save
            /// checked: its ids are known only once it ran, and a document it did not
            /// match must stay protected from another session's change (left unchecked,
            /// the store below overwrote it). A document it did match is rejected (its
            /// version moved in the save's own transaction), never silently overwritten.
            #[tokio::test]
            async fn a_store_after_a_patch_by_filter_is_still_checked() {
                let (_schema, store) = store(concat!(stringify!($module), "_ss_where")).await;
                saved(&store, &[doc("a", "old", 1), doc("b", "other", 1)]).await;
                let id = "b".to_owned();
                let mut s = store.lightweight_session();
                let mut b = ok(s.load::<$doc>(&id).await).expect("stored");
                // Another session changes b.
                saved(&store, &[doc("b", "theirs", 2)]).await;
                ok(s.patch_where::<$doc>($doc::fields().name.eq("old"))
                    .increment(|f| f.n, 10)
                    .queue());
                b.name = "mine".into();
                ok(s.store(b.clone()));
                let saved_over = s.save_changes().await;
                assert!(
                    matches!(&saved_over, Err(marten::Error::Rejected(r)) if matches!(r[0].kind, marten::RejectionKind::VersionMismatch { .. })),
                    "{saved_over:?}"
                );
                let (found, _) = stored(&store, "b").await.expect("b");
                assert_eq!(found.name, "theirs", "the other session's change stays");
                let (a, _) = stored(&store, "a").await.expect("a");
                assert_eq!(a.n, 1, "nothing of the rejected save was written");

                // Without the other session, a document the filter did not match saves.
                let mut s = store.lightweight_session();
                let mut b = ok(s.load::<$doc>(&id).await).expect("stored");
                ok(s.patch_where::<$doc>($doc::fields().name.eq("old"))
                    .increment(|f| f.n, 10)
                    .queue());
                b.name = "mine".into();
                ok(s.store(b.clone()));
                ok(s.save_changes().await);
                let (found, version) = stored(&store, "b").await.expect("b");
                assert_eq!(found, b);
                assert_eq!(s.version_of::<$doc>(&id), Some(version));
                let (a, _) = stored(&store, "a").await.expect("a");
                assert_eq!(a.n, 11, "the patch by filter was applied");
            }

            /// A patch by id whose version the session does not know yet, then a load
            /// (the version becomes known), then a store, in one save.
            #[tokio::test]
            async fn a_store_after_an_unchecked_patch_of_the_same_document_is_saved() {
                let (_schema, store) = store(concat!(stringify!($module), "_ss_patch")).await;
                saved(&store, &[doc("a", "old", 1)]).await;
                let id = "a".to_owned();
                let mut s = store.lightweight_session();
                ok(s.patch::<$doc>(&id).increment(|f| f.n, 5).queue());
                let mut a = ok(s.load::<$doc>(&id).await).expect("stored");
                a.name = "stored".into();
                ok(s.store(a.clone()));
                ok(s.save_changes().await);
                let (found, version) = stored(&store, "a").await.expect("a");
                assert_eq!(found, a);
                assert_eq!(s.version_of::<$doc>(&id), Some(version));
            }

            /// Trigger 2: a lightweight session stores a document whose version it does
            /// not know, loads it (the version becomes known) and stores it again.
            #[tokio::test]
            async fn store_load_store_of_one_document_is_saved() {
                let (_schema, store) = store(concat!(stringify!($module), "_ss_sls")).await;
                saved(&store, &[doc("a", "old", 1)]).await;
                let id = "a".to_owned();
                let mut s = store.lightweight_session();
                ok(s.store(doc("a", "first", 2)));
                let loaded = ok(s.load::<$doc>(&id).await).expect("stored");
                assert_eq!(loaded.name, "old", "not saved yet");
                assert!(s.version_of::<$doc>(&id).is_some());
                ok(s.store(doc("a", "second", 3)));
                ok(s.save_changes().await);
                let (found, version) = stored(&store, "a").await.expect("a");
                assert_eq!(found, doc("a", "second", 3));
                assert_eq!(s.version_of::<$doc>(&id), Some(version));

                // An unchecked update, then a store of the loaded document.
                let mut s = store.lightweight_session();
                ok(s.update(doc("a", "updated", 4)));
                let mut a = ok(s.load::<$doc>(&id).await).expect("stored");
                a.name = "stored".into();
                ok(s.store(a.clone()));
                ok(s.save_changes().await);
                let (found, version) = stored(&store, "a").await.expect("a");
                assert_eq!(found, a);
                assert_eq!(s.version_of::<$doc>(&id), Some(version));
            }

            /// What the earlier writes of a save do not excuse: a write whose version the
            /// session knew, which nothing earlier in the save touched, is still checked
            /// (also after writes of other documents, and as the first of two writes of
            /// the document).
            #[tokio::test]
            async fn a_stale_write_is_still_rejected() {
                let (_schema, store) = store(concat!(stringify!($module), "_ss_stale")).await;
                saved(&store, &[doc("a", "old", 1), doc("b", "old", 1)]).await;
                let id = "a".to_owned();

                for case in ["alone", "after another document", "first of two"] {
                    let mut s = store.lightweight_session();
                    let mut a = ok(s.load::<$doc>(&id).await).expect("stored");
                    let known = s.version_of::<$doc>(&id).expect("known");
                    // Another session moves the version.
                    let mut other = store.lightweight_session();
                    ok(other.store(doc("a", "theirs", 7)));
                    ok(other.save_changes().await);
                    let (_, theirs) = stored(&store, "a").await.expect("a");

                    match case {
                        "alone" => {}
                        "after another document" => {
                            ok(s.store(doc("b", "mine", 2)));
                        }
                        _ => {}
                    }
                    a.name = "mine".into();
                    ok(s.store(a.clone()));
                    if case == "first of two" {
                        ok(s.patch::<$doc>(&id).increment(|f| f.n, 1).queue());
                    }
                    let err = s.save_changes().await.expect_err(case);
                    let rejections = err.rejections();
                    assert_eq!(rejections.len(), 1, "{case}: {err}");
                    match &rejections[0].kind {
                        RejectionKind::VersionMismatch { expected, actual } => {
                            assert_eq!(expected, &known.to_string(), "{case}");
                            assert_eq!(actual.as_deref(), Some(theirs.to_string().as_str()));
                        }
                        other => panic!("{case}: wrong rejection {other:?}"),
                    }
                    let (found, _) = stored(&store, "a").await.expect("a");
                    assert_eq!(found.name, "theirs", "{case}: nothing written");
                    let (b, _) = stored(&store, "b").await.expect("b");
                    assert_eq!(b.name, "old", "{case}: nothing written");
                }
            }

            /// A delete, a patch by id or a patch or delete by filter, then a store of
            /// the same document, in one save of a dirty-tracked session: the tracker
            /// holds the stored document afterwards, and saves its later changes.
            #[tokio::test]
            async fn a_document_stored_after_a_delete_or_patch_of_the_save_stays_tracked() {
                let (_schema, store) = store(concat!(stringify!($module), "_ss_dirty")).await;
                let id = "a".to_owned();
                let mut wrong = Vec::new();
                for case in ["delete", "patch", "patch_where", "delete_where"] {
                    saved(&store, &[doc("a", "old", 1), doc("b", "other", 1)]).await;
                    let mut s = store.dirty_tracked_session();
                    assert!(ok(s.load::<$doc>(&id).await).is_some());
                    match case {
                        "delete" => ok(s.delete::<$doc>(&id)),
                        "patch" => ok(s.patch::<$doc>(&id).increment(|f| f.n, 1).queue()),
                        // A filter that matches another document: one matching `a` would
                        // move its version, and the store (checked) would be rejected.
                        "patch_where" => ok(s
                            .patch_where::<$doc>($doc::fields().name.eq("other"))
                            .increment(|f| f.n, 1)
                            .queue()),
                        _ => ok(s.delete_where::<$doc>($doc::fields().name.eq("old"))),
                    }
                    let new = doc("a", case, 20);
                    ok(s.store(new.clone()));
                    ok(s.save_changes().await);
                    assert_eq!(stored(&store, "a").await.map(|(d, _)| d), Some(new.clone()));
                    let (_, version) = stored(&store, "a").await.expect("a");
                    assert_eq!(s.version_of::<$doc>(&id), Some(version), "{case}");
                    let held = s.get_mut::<$doc>(&id).cloned();
                    if held.as_ref() != Some(&new) {
                        wrong.push(format!("{case}: the tracker holds {held:?}"));
                        continue;
                    }
                    if let Some(d) = s.get_mut::<$doc>(&id) {
                        d.n = 21;
                    }
                    ok(s.save_changes().await);
                    let (found, _) = stored(&store, "a").await.expect("a");
                    assert_eq!(found.n, 21, "{case}: a change in place is saved");
                }
                assert!(wrong.is_empty(), "{wrong:#?}");
            }

            /// The same in an identity session: its next load answers the stored document
            /// from the identity map, without reading what another session wrote since.
            #[tokio::test]
            async fn a_document_stored_after_a_delete_or_patch_of_the_save_stays_in_the_map() {
                let (_schema, store) = store(concat!(stringify!($module), "_ss_identity")).await;
                let id = "a".to_owned();
                let mut wrong = Vec::new();
                for case in ["delete", "patch", "patch_where", "delete_where"] {
                    saved(&store, &[doc("a", "old", 1), doc("b", "other", 1)]).await;
                    let mut s = store.identity_session();
                    assert!(ok(s.load::<$doc>(&id).await).is_some());
                    match case {
                        "delete" => ok(s.delete::<$doc>(&id)),
                        "patch" => ok(s.patch::<$doc>(&id).increment(|f| f.n, 1).queue()),
                        // A filter that matches another document: one matching `a` would
                        // move its version, and the store (checked) would be rejected.
                        "patch_where" => ok(s
                            .patch_where::<$doc>($doc::fields().name.eq("other"))
                            .increment(|f| f.n, 1)
                            .queue()),
                        _ => ok(s.delete_where::<$doc>($doc::fields().name.eq("old"))),
                    }
                    let new = doc("a", case, 20);
                    ok(s.store(new.clone()));
                    ok(s.save_changes().await);
                    // Another session writes the document; the identity map answers.
                    saved(&store, &[doc("a", "theirs", 30)]).await;
                    let loaded = ok(s.load::<$doc>(&id).await);
                    if loaded.as_ref() != Some(&new) {
                        wrong.push(format!("{case}: the session loads {loaded:?}"));
                    }
                }
                assert!(wrong.is_empty(), "{wrong:#?}");
            }
        }
    };
}

same_save_tests!(optimistic, Shop);
same_save_tests!(numeric, Tally);
