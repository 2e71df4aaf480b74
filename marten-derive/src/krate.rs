//! The path of the `marten` crate in generated code: `::marten` unless the input says
//! otherwise with `#[marten(crate = "path")]` (a derive) or
//! `#[marten::apply(crate = "path")]`, for crates that re-export marten under another
//! name. The entry points parse it and set it for the one expansion they run
//! ([`with_path`]); generating code asks [`private`] for the `__private` module.

use std::cell::RefCell;

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::{Attribute, LitStr, Path};

thread_local! {
    /// The path set for the expansion running on this thread.
    static PATH: RefCell<Option<Path>> = const { RefCell::new(None) };
}

/// `<marten>::__private`, the module generated code uses.
pub fn private() -> TokenStream {
    PATH.with(|p| match &*p.borrow() {
        Some(path) => quote!(#path::__private),
        None => quote!(::marten::__private),
    })
}

/// Runs `expand` with `path` as the crate's path, then restores the default.
pub fn with_path<T>(path: Option<Path>, expand: impl FnOnce() -> T) -> T {
    let previous = PATH.with(|p| p.replace(path));
    let out = expand();
    PATH.with(|p| *p.borrow_mut() = previous);
    out
}

/// The path in `#[marten(crate = "path")]` among a derive input's attributes; an
/// error for anything else inside `#[marten(..)]` or a second `crate`.
pub fn from_attrs(attrs: &[Attribute]) -> syn::Result<Option<Path>> {
    let mut found: Option<Path> = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("marten")) {
        attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident("crate") {
                return Err(meta.error("expected `crate = \"path\"`"));
            }
            let lit: LitStr = meta.value()?.parse()?;
            if found.is_some() {
                return Err(syn::Error::new(lit.span(), "duplicate `crate` path"));
            }
            found = Some(lit.parse()?);
            Ok(())
        })?;
    }
    Ok(found)
}

/// The path in the arguments of `#[marten::apply(crate = "path")]`; no arguments: none.
pub fn from_args(args: TokenStream) -> syn::Result<Option<Path>> {
    let mut found: Option<Path> = None;
    let parser = syn::meta::parser(|meta| {
        if !meta.path.is_ident("crate") {
            return Err(meta.error("`#[marten::apply]` takes only `crate = \"path\"`"));
        }
        let lit: LitStr = meta.value()?.parse()?;
        if found.is_some() {
            return Err(syn::Error::new(lit.span(), "duplicate `crate` path"));
        }
        found = Some(lit.parse()?);
        Ok(())
    });
    parser.parse2(args)?;
    Ok(found)
}
