//! Derive macros of marten. Use them through the `marten` crate, which re-exports them;
//! the generated code refers to `::marten::__private`.
//!
//! Each derive parses its input into a model ([`internals::ast`]), accumulating every
//! attribute error with its span ([`internals::ctxt`]), checks the model
//! ([`internals::check`]) and only then generates code.

mod document;
mod event;
mod internals;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Derives `marten::Document` for a struct with named fields.
///
/// Attributes: `#[document(table = "name")]` and `#[concurrency(optimistic | numeric | off)]`
/// on the struct, `#[document(id)]` on the id field (otherwise the field named `id`).
#[proc_macro_derive(Document, attributes(document, concurrency))]
pub fn derive_document(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    document::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `marten::Event` for a struct or enum: its stored type name is the type name in
/// snake case (`TaskRecorded` -> `task_recorded`) or `#[event(name = "...")]`.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    event::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
