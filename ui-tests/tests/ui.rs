//! Compile-fail tests of marten's macros and typed APIs, grouped by kind of mistake
//! (one folder per kind). Each case's expected compiler output is in its `.stderr` file;
//! regenerate with `TRYBUILD=overwrite cargo test -p marten-ui-tests` and review the diff.
//! One `TestCases` builds every case in one batch.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    // The shape of a document: structs with named fields, not generic.
    t.compile_fail("tests/ui/shape/*.rs");
    // The id field: present, single, of a supported type.
    t.compile_fail("tests/ui/id/*.rs");
    // Strong-typed ids (`#[derive(DocumentId)]`): their shape, their inner type, the
    // traits they need, and where a newtype over `i64` cannot go.
    t.compile_fail("tests/ui/typed_ids/*.rs");
    // Struct attributes: modes, table names, full-text configurations, unknown keys, several errors at once.
    t.compile_fail("tests/ui/attributes/*.rs");
    // Operations that exist only for some concurrency modes.
    t.compile_fail("tests/ui/modes/*.rs");
    // Session operations on a type the backend cannot store (a hand-written `Document`
    // without the derive's storage).
    t.compile_fail("tests/ui/sessions/*.rs");
    // Apply methods and aggregates.
    t.compile_fail("tests/ui/apply/*.rs");
    // Events and tags.
    t.compile_fail("tests/ui/events/*.rs");
    // Typed queries: wrong root, wrong value type, operators the field type lacks, an
    // indexed field whose type has no `ColumnType`, `sum` of a string, a selection of
    // another document's field, a raw parameter PostgreSQL cannot take, a full-text search of a type
    // without `#[document(full_text)]`, a compiled query of an unknown return kind or a type
    // that is not one.
    t.compile_fail("tests/ui/queries/*.rs");
    // Patches: operations the field type lacks, values of the wrong type.
    t.compile_fail("tests/ui/patches/*.rs");
    // Soft deletes: deleted rows of a type that removes them, a soft-deleted aggregate.
    t.compile_fail("tests/ui/soft_deletes/*.rs");
    // serde options marten cannot follow: on the id (read back from the JSON), on queried
    // and indexed fields (query values and columns follow what serde writes), and on the
    // whole struct (`into`, `transparent`, `remote`).
    t.compile_fail("tests/ui/serde/*.rs");
    // Every valid shape compiles.
    t.pass("tests/ui/pass/*.rs");
}
