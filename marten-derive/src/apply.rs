//! `#[marten::apply]` on an `impl` block: finds the `create*`, `apply*` and
//! `should_delete*` methods by name and signature, checks each, and generates the event
//! dispatch (`marten::Apply`) that calls them by the event's Rust type.
//!
//! Several methods may share a name (one per event type, like overloads); the macro then
//! renames them to unique hidden names, since Rust itself has no overloading.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, ReturnType, Type};

use crate::internals::ctxt::Ctxt;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Create,
    Apply { by_value: bool },
    Delete,
    Identity { many: bool },
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Create => "create",
            Role::Apply { .. } => "apply",
            Role::Delete => "should_delete",
            Role::Identity { .. } => "identity",
        }
    }
}

struct Method {
    role: Role,
    name: syn::Ident,
    event: Type,
    with_meta: bool,
}

fn role_of(name: &str) -> Option<Role> {
    if name.starts_with("should_delete") {
        Some(Role::Delete)
    } else if name.starts_with("create") {
        Some(Role::Create)
    } else if name.starts_with("apply") {
        Some(Role::Apply { by_value: false })
    } else if name.starts_with("identities") {
        Some(Role::Identity { many: true })
    } else if name.starts_with("identity") {
        Some(Role::Identity { many: false })
    } else {
        None
    }
}

/// Parses one method; `None` if it is not a dispatch method or is malformed (then the
/// error is recorded on its span).
fn parse_method(cx: &Ctxt, f: &ImplItemFn) -> Option<Method> {
    let name = f.sig.ident.clone();
    let mut role = role_of(&name.to_string())?;
    let sig = &f.sig;
    if sig.asyncness.is_some() {
        cx.error_spanned_by(
            sig.asyncness,
            format!(
                "`{name}` cannot be async: apply methods are plain functions of state and event"
            ),
        );
        return None;
    }
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics,
            format!("`{name}` cannot be generic: each method handles one event type"),
        );
        return None;
    }
    let mut inputs = sig.inputs.iter();
    let receiver = match sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            inputs.next();
            Some(r)
        }
        _ => None,
    };
    let ok_receiver = match (role, receiver) {
        (Role::Create | Role::Identity { .. }, None) => true,
        (Role::Create | Role::Identity { .. }, Some(r)) => {
            cx.error_spanned_by(r, format!("`{name}` takes no `self`: it is called without a state (e.g. `fn {name}(e: &ProjectStarted) -> Self`)"));
            false
        }
        (Role::Apply { .. }, Some(r)) if r.reference.is_some() && r.mutability.is_some() => true,
        (Role::Apply { .. }, Some(r)) if r.reference.is_none() => {
            role = Role::Apply { by_value: true };
            true
        }
        (Role::Apply { .. }, other) => {
            let msg = format!("`{name}` takes `&mut self` (change the state in place) or `self` (return the new state)");
            match other {
                Some(r) => cx.error_spanned_by(r, msg),
                None => cx.error_spanned_by(&sig.ident, msg),
            }
            false
        }
        (Role::Delete, Some(r)) if r.reference.is_some() && r.mutability.is_none() => true,
        (Role::Delete, other) => {
            let msg = format!("`{name}` takes `&self` and returns `bool`");
            match other {
                Some(r) => cx.error_spanned_by(r, msg),
                None => cx.error_spanned_by(&sig.ident, msg),
            }
            false
        }
    };
    if !ok_receiver {
        return None;
    }
    let Some(event_arg) = inputs.next() else {
        cx.error_spanned_by(
            &sig.ident,
            format!("`{name}` needs the event as its parameter, e.g. `e: &TaskRecorded`"),
        );
        return None;
    };
    let event = match event_arg {
        FnArg::Typed(pt) => match &*pt.ty {
            Type::Reference(r) if r.mutability.is_none() => (*r.elem).clone(),
            other => {
                cx.error_spanned_by(other, format!("the event parameter of `{name}` is a shared reference to the event, e.g. `e: &TaskRecorded`"));
                return None;
            }
        },
        FnArg::Receiver(r) => {
            cx.error_spanned_by(r, "unexpected `self`");
            return None;
        }
    };
    let with_meta = match inputs.next() {
        None => false,
        Some(FnArg::Typed(pt)) if matches!(&*pt.ty, Type::Reference(r) if r.mutability.is_none()) => {
            true
        }
        Some(other) => {
            cx.error_spanned_by(other, format!("the second parameter of `{name}`, if any, is the event's metadata: `meta: &EventEnvelope`"));
            return None;
        }
    };
    if let Some(extra) = inputs.next() {
        cx.error_spanned_by(
            extra,
            format!("`{name}` takes the event and, optionally, its metadata; nothing more"),
        );
        return None;
    }
    let returns = !matches!(sig.output, ReturnType::Default);
    match role {
        Role::Create | Role::Apply { by_value: true } | Role::Delete | Role::Identity { .. }
            if !returns =>
        {
            let what = match role {
                Role::Delete => "`bool`",
                Role::Identity { many: false } => "the document id",
                Role::Identity { many: true } => "a `Vec` of document ids",
                _ => "`Self` (or `Result<Self, E>`)",
            };
            cx.error_spanned_by(&sig.ident, format!("`{name}` must return {what}"));
            return None;
        }
        _ => {}
    }
    Some(Method {
        role,
        name,
        event,
        with_meta,
    })
}

pub fn expand(args: TokenStream, mut item: ItemImpl) -> syn::Result<TokenStream> {
    let cx = Ctxt::new();
    if !args.is_empty() {
        cx.error_spanned_by(&args, "`#[marten::apply]` takes no arguments");
    }
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
    let mut methods: Vec<(usize, Method)> = Vec::new();
    let mut named = 0;
    for (idx, it) in item.items.iter().enumerate() {
        if let ImplItem::Fn(f) = it {
            if role_of(&f.sig.ident.to_string())
                .is_some_and(|r| !matches!(r, Role::Identity { .. }))
            {
                named += 1;
            }
            if let Some(m) = parse_method(&cx, f) {
                methods.push((idx, m));
            }
        }
    }
    // One method per (role, event type); a second is reported where it is.
    let mut seen: HashMap<(&'static str, String), Span> = HashMap::new();
    for (_, m) in &methods {
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
    if named == 0 {
        cx.error_spanned_by(
            &item.self_ty,
            "no `create`, `apply` or `should_delete` methods found: name them `create*`, `apply*`, `should_delete*`",
        );
    }
    cx.check()?;

    // Rename methods whose names repeat.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (_, m) in &methods {
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

    let self_ty = &item.self_ty;
    let p = quote!(::marten::__private);
    let call = |m: &Method, recv: TokenStream| {
        let name = &m.name;
        let meta = m.with_meta.then(|| quote!(, event));
        quote!(#recv #name(e #meta))
    };
    let deletes = methods
        .iter()
        .filter(|(_, m)| m.role == Role::Delete)
        .map(|(_, m)| {
            let ty = &m.event;
            let c = call(m, quote!(s.));
            quote! {
                if let ::core::option::Option::Some(e) = #p::support::event_as::<#ty>(data) {
                    if let ::core::option::Option::Some(s) = &state {
                        if #c {
                            return ::core::result::Result::Ok(::core::option::Option::None);
                        }
                    }
                }
            }
        });
    let creates = methods.iter().filter(|(_, m)| m.role == Role::Create).map(|(_, m)| {
        let ty = &m.event;
        let c = call(m, quote!(Self::));
        quote! {
            if let ::core::option::Option::Some(e) = #p::support::event_as::<#ty>(data) {
                return #p::support::IntoApplyResult::<Self>::into_apply_result(#c).map(::core::option::Option::Some);
            }
        }
    });
    let applies = methods.iter().filter_map(|(_, m)| match m.role {
        Role::Apply { by_value: false } => {
            let ty = &m.event;
            let c = call(m, quote!(state.));
            Some(quote! {
                if let ::core::option::Option::Some(e) = #p::support::event_as::<#ty>(data) {
                    let mut state = state;
                    #p::support::IntoApplyResult::<()>::into_apply_result(#c)?;
                    return ::core::result::Result::Ok(::core::option::Option::Some(state));
                }
            })
        }
        Role::Apply { by_value: true } => {
            let ty = &m.event;
            let c = call(m, quote!(state.));
            Some(quote! {
                if let ::core::option::Option::Some(e) = #p::support::event_as::<#ty>(data) {
                    return #p::support::IntoApplyResult::<Self>::into_apply_result(#c).map(::core::option::Option::Some);
                }
            })
        }
        _ => None,
    });
    let handled: Vec<&Type> = {
        let mut v: Vec<&Type> = Vec::new();
        for (_, m) in &methods {
            if !matches!(m.role, Role::Identity { .. })
                && !v.iter().any(|t| {
                    t.to_token_stream().to_string() == m.event.to_token_stream().to_string()
                })
            {
                v.push(&m.event);
            }
        }
        v
    };
    let identities: Vec<TokenStream> = methods
        .iter()
        .filter_map(|(_, m)| match m.role {
            Role::Identity { many } => {
                let ty = &m.event;
                let c = call(m, quote!(Self::));
                let push = if many {
                    quote!(out.extend(#c);)
                } else {
                    quote!(out.push(#c);)
                };
                Some(quote! {
                    if let ::core::option::Option::Some(e) = #p::support::event_as::<#ty>(data) {
                        #push
                    }
                })
            }
            _ => None,
        })
        .collect();
    let identity_impl = (!identities.is_empty()).then(|| {
        quote! {
            #[automatically_derived]
            impl #p::Identities for #self_ty {
                fn identities(event: &#p::EventEnvelope) -> ::std::vec::Vec<<Self as #p::Document>::Id> {
                    let data = event.data.as_ref();
                    let mut out = ::std::vec::Vec::new();
                    #(#identities)*
                    out
                }
            }
        }
    });

    Ok(quote! {
        #item

        #[doc(hidden)]
        #[allow(unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl #p::Apply for #self_ty {
                fn apply_event(
                    state: ::core::option::Option<Self>,
                    event: &#p::EventEnvelope,
                ) -> ::core::result::Result<::core::option::Option<Self>, #p::ApplyError> {
                    #[allow(unused_imports)]
                    use #p::support::{NoDefault as _, ViaDefault as _};
                    let data = event.data.as_ref();
                    #(#deletes)*
                    let state = match state {
                        ::core::option::Option::Some(s) => s,
                        ::core::option::Option::None => {
                            #(#creates)*
                            match (&&#p::support::Initial::<Self>::new()).initial() {
                                ::core::option::Option::Some(s) => s,
                                ::core::option::Option::None => return ::core::result::Result::Ok(::core::option::Option::None),
                            }
                        }
                    };
                    #(#applies)*
                    ::core::result::Result::Ok(::core::option::Option::Some(state))
                }

                fn handles(data: &dyn #p::AnyEvent) -> bool {
                    false #(|| #p::support::event_as::<#handled>(data).is_some())*
                }

                fn event_types() -> ::std::vec::Vec<#p::EventDecoder> {
                    #[allow(unused_imports)]
                    use #p::support::{NotEvent as _, ViaEvent as _};
                    [#((&&#p::support::Probe::<#handled>::new()).decoder()),*]
                        .into_iter()
                        .flatten()
                        .collect()
                }
            }

            #identity_impl

        };
    })
}
