//! `#[marten::apply]` on an `impl` block: finds the `create*`, `apply*` and
//! `should_delete*` methods by name and signature, checks each, and generates the event
//! dispatch (`marten::Apply`) that calls them by the event's Rust type.
//!
//! Several methods may share a name (one per event type, like overloads); the macro then
//! renames them to unique hidden names, since Rust itself has no overloading.
//!
//! [`parse`] reads and checks each method, this module checks the block as a whole and
//! renames overloads, [`generate`] writes the impls.

mod generate;
mod parse;

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, ToTokens};
use syn::{ImplItem, ItemImpl};

use crate::internals::ctxt::Ctxt;
use parse::{parse_method, role_of, Method, Role};

/// Checks the block and its methods (every error at once), then generates the dispatch.
pub fn expand(mut item: ItemImpl) -> syn::Result<TokenStream> {
    let cx = Ctxt::new();
    check_block(&cx, &item);
    let (mut methods, named) = collect_methods(&cx, &item);
    check_one_per_event(&cx, &methods);
    if named == 0 {
        cx.error_spanned_by(
            &item.self_ty,
            "no `create`, `apply` or `should_delete` methods found: name them `create*`, `apply*`, `should_delete*`",
        );
    }
    cx.check()?;
    rename_overloads(&mut item, &mut methods);
    let methods: Vec<Method> = methods.into_iter().map(|(_, m)| m).collect();
    Ok(generate::expand(&item, &methods))
}

/// No arguments, an inherent, non-generic impl.
fn check_block(cx: &Ctxt, item: &ItemImpl) {
    if let Some((_, path, _)) = &item.trait_ {
        cx.error_spanned_by(
            path,
            "`#[marten::apply]` goes on an inherent `impl` block, not a trait impl",
        );
    }
    if !item.generics.params.is_empty() {
        cx.error_spanned_by(
            &item.generics,
            "`#[marten::apply]` does not support generic impls",
        );
    }
}

/// The dispatch methods with their item index, and how many methods are named for a
/// state role (`create*`, `apply*`, `should_delete*`), well-formed or not.
fn collect_methods(cx: &Ctxt, item: &ItemImpl) -> (Vec<(usize, Method)>, usize) {
    let mut methods: Vec<(usize, Method)> = Vec::new();
    let mut named = 0;
    for (idx, it) in item.items.iter().enumerate() {
        if let ImplItem::Fn(f) = it {
            if role_of(&f.sig.ident.to_string())
                .is_some_and(|r| !matches!(r, Role::Identity { .. }))
            {
                named += 1;
            }
            if let Some(m) = parse_method(cx, f) {
                methods.push((idx, m));
            }
        }
    }
    (methods, named)
}

/// One method per (role, event type); a second is reported where it is. This compares
/// the types' tokens, so it catches a repeated spelling only; one type spelled two ways
/// (`X`, `crate::X`, an alias) is caught by the compiler, in the code
/// `generate::one_per_event` writes.
fn check_one_per_event(cx: &Ctxt, methods: &[(usize, Method)]) {
    let mut seen: HashMap<(&'static str, String), Span> = HashMap::new();
    for (_, m) in methods {
        let key = (m.role.label(), m.event.to_token_stream().to_string());
        if seen.insert(key.clone(), m.name.span()).is_some() {
            cx.syn_error(syn::Error::new(
                m.name.span(),
                format!(
                    "a second `{}` method for `{}`: each event type has at most one",
                    key.0, key.1
                ),
            ));
        }
    }
}

/// Renames methods whose names repeat to unique hidden names.
fn rename_overloads(item: &mut ItemImpl, methods: &mut [(usize, Method)]) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (_, m) in methods.iter() {
        *counts.entry(m.name.to_string()).or_default() += 1;
    }
    for (n, (idx, m)) in methods.iter_mut().enumerate() {
        if counts[&m.name.to_string()] > 1 {
            let renamed = format_ident!("__marten_{}_{}", m.name, n, span = m.name.span());
            if let ImplItem::Fn(f) = &mut item.items[*idx] {
                f.sig.ident = renamed.clone();
                f.attrs.push(syn::parse_quote!(#[doc(hidden)]));
            }
            m.name = renamed;
        }
    }
}
