//! Derive macros of marten. Use them through the `marten` crate, which re-exports them;
//! the generated code refers to `::marten::__private`, or to `<path>::__private` when the
//! input says `#[marten(crate = "path")]` (`#[marten::apply(crate = "path")]`): for a
//! crate that re-exports marten and whose users do not depend on `marten` themselves.
//!
//! Each derive parses its input into a model (`internals::ast`), accumulating every
//! attribute error with its span (`internals::ctxt`), checks the model
//! (`internals::check`) and only then generates code.

mod aggregate;
mod apply;
mod document;
mod document_id;
mod event;
mod fields;
mod internals;
mod krate;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput, ItemImpl};

/// Parses a derive's input, reads its `#[marten(crate = "...")]` and runs `expand` with it.
fn derive(
    input: TokenStream,
    expand: fn(&DeriveInput) -> syn::Result<proc_macro2::TokenStream>,
) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    krate::from_attrs(&input.attrs)
        .and_then(|path| krate::with_path(path, || expand(&input)))
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `marten::Document` for a struct with named fields.
///
/// Attributes: `#[document(table = "name")]` and `#[concurrency(optimistic | numeric | off)]`
/// on the struct, `#[document(id)]` on the id field (otherwise the field named `id`).
///
/// marten reads a document from the JSON serde writes, so some serde options are refused:
/// on the struct `into`, `transparent` and `remote` (no longer one key per field); on the
/// id field any option that skips it or writes or reads it with other code (`skip*`,
/// `with`, `serialize_with`, `deserialize_with`, `getter`, `flatten`), as a loaded
/// document's id is read back from its JSON; on any other field `skip`, `skip_serializing`,
/// `flatten`, `with`, `serialize_with` and `getter` unless it is `#[query(skip)]` (query
/// values are written by the field type's own `Serialize`), and always with
/// `#[document(index)]` or `#[document(unique)]` (the column is cast from the field's key).
#[proc_macro_derive(Document, attributes(document, concurrency, query, marten))]
pub fn derive_document(input: TokenStream) -> TokenStream {
    derive(input, document::expand)
}

/// Derives `marten::Event` for a struct or enum: its stored type name is the type name in
/// snake case (`TaskRecorded` -> `task_recorded`) or `#[event(name = "...")]`.
/// A field marked `#[tag]` is a tag of the event, under its field name (without `r#`) or
/// `#[tag(name = "...")]` for a plain value.
#[proc_macro_derive(Event, attributes(event, tag, marten))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    derive(input, event::expand)
}

/// Derives `marten::Aggregate` (and `marten::Document`) for a struct whose id is its
/// stream id (`Uuid` or `String`, or a `#[derive(DocumentId)]` newtype over one) and whose `version: i64` field (or the field marked
/// `#[aggregate(version)]`) is kept at the stream version of the last applied event.
/// Accepts the `#[document(..)]` and `#[concurrency(..)]` attributes of `Document`.
#[proc_macro_derive(Aggregate, attributes(document, concurrency, aggregate, query, marten))]
pub fn derive_aggregate(input: TokenStream) -> TokenStream {
    derive(input, aggregate::expand)
}

/// Generates the event dispatch (`marten::Apply`) of a type from the methods of the
/// `impl` block it is put on: `create*(e: &E) -> Self`, `apply*(&mut self, e: &E)` or
/// `apply*(self, e: &E) -> Self`, `should_delete*(&self, e: &E) -> bool`, each optionally
/// taking `meta: &EventEnvelope` second and returning a `Result` to fail. Multi-stream
/// projections add `identity*(e: &E) -> Id` or `identities*(e: &E) -> Vec<Id>`.
#[proc_macro_attribute]
pub fn apply(args: TokenStream, input: TokenStream) -> TokenStream {
    let item = parse_macro_input!(input as ItemImpl);
    krate::from_args(args.into())
        .and_then(|path| krate::with_path(path, || apply::expand(item)))
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `marten::Tag` for a newtype id (`struct CourseId(Uuid)`): the tag type is the
/// type name in snake case (`course_id`) or `#[tag(name = "...")]`, the value the inner
/// value's text.
#[proc_macro_derive(Tag, attributes(tag, marten))]
pub fn derive_tag(input: TokenStream) -> TokenStream {
    derive(input, event::expand_tag)
}

/// Derives a strong-typed id for a tuple struct with one field over `Uuid`, `i64`, `i32`
/// or `String` (`struct OrderId(Uuid);`): usable as a document id, as an aggregate's
/// stream id (over `Uuid` or `String`) and, with `Tag` derived too, as a tag. Generates
/// `Display`, `From` both ways, transparent `Serialize` / `Deserialize` and `ToSql` /
/// `FromSql` (stored as the inner type); derive `Debug`, `Clone`, `PartialEq`, `Eq` and
/// `Hash` yourself.
#[proc_macro_derive(DocumentId, attributes(marten))]
pub fn derive_document_id(input: TokenStream) -> TokenStream {
    derive(input, document_id::expand)
}

/// Derives query field paths for a struct nested in documents (a field marked
/// `#[query(nested)]`) or held in a collection queried with `any`.
/// Its fields follow the rules of `Document`'s fields on serde options.
#[proc_macro_derive(Queryable, attributes(query, marten))]
pub fn derive_queryable(input: TokenStream) -> TokenStream {
    derive(input, expand_queryable)
}

fn expand_queryable(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let cx = internals::ctxt::Ctxt::new();
    let Some(cont) = internals::ast::Container::from_ast(&cx, input, "Queryable") else {
        cx.check()?;
        return Ok(proc_macro2::TokenStream::new());
    };
    internals::check::no_generics(&cx, &cont);
    internals::check::container_serde(&cx, &cont, "Queryable");
    fields::check(&cx, &cont, None, None);
    cx.check()?;
    Ok(fields::expand(&cont, None))
}
