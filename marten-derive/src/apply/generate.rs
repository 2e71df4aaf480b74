//! The code `#[marten::apply]` generates from its checked methods: the `Apply` impl
//! (delete, create and apply dispatch by event type, the handled event types) and, for
//! multi-stream projections, the `Identities` impl.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::{ItemImpl, Type};

use super::parse::{Method, Role};

/// The impl block itself, then the generated impls in a `const _` block.
pub fn expand(item: &ItemImpl, methods: &[Method]) -> TokenStream {
    let self_ty = &item.self_ty;
    let p = crate::krate::private();
    let deletes = by_role(methods, |m| m.role == Role::Delete, delete_arm);
    let creates = by_role(methods, |m| m.role == Role::Create, create_arm);
    let applies = by_role(methods, |m| matches!(m.role, Role::Apply { .. }), apply_arm);
    let absent_unless_applied = absent_unless_applied(methods);
    let handled = handled(methods);
    let identity_impl = identity_impl(self_ty, methods);
    let one_per_event = one_per_event(self_ty, methods);
    let uses_metadata = methods.iter().any(|m| m.with_meta);

    quote! {
        #item

        #[doc(hidden)]
        #[allow(unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl #p::Apply for #self_ty {
                const USES_METADATA: bool = #uses_metadata;

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
                            #absent_unless_applied
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

            #one_per_event
        };
    }
}

/// One method per (role, event type), decided by the compiler: a marker trait per role,
/// implemented for the state once per method with the method's event type as its
/// parameter. Two methods of one role whose event types are one type under different
/// spellings (`X` and `crate::X`, `events::X`, an alias), which the macro cannot tell
/// apart by their tokens, are then two impls of one trait for one type: a "conflicting
/// implementations" error naming the trait (which says what is wrong), pointing at the
/// second method and labelling the first. Without it only the first would ever be called.
fn one_per_event(self_ty: &Type, methods: &[Method]) -> TokenStream {
    let mut out = TokenStream::new();
    for label in ["create", "apply", "should_delete", "identity"] {
        let of_role: Vec<&Method> = methods.iter().filter(|m| m.role.label() == label).collect();
        if of_role.len() < 2 {
            continue;
        }
        let marker = format_ident!("Only_one_{}_method_per_event_type", label);
        let doc = format!(
            "Implemented once per `{label}*` method, for its event type: a second `{label}*` method for one event type, however spelled, is a conflicting implementation."
        );
        out.extend(quote! {
            #[doc = #doc]
            #[allow(non_camel_case_types, dead_code)]
            trait #marker<E: ?::core::marker::Sized> {}
        });
        for m in of_role {
            let ty = &m.event;
            out.extend(quote_spanned! {m.name.span()=>
                impl #marker<#ty> for #self_ty {}
            });
        }
    }
    out
}

/// The dispatch arms of the methods `keep` selects, in declaration order.
fn by_role(
    methods: &[Method],
    keep: impl Fn(&Method) -> bool,
    arm: fn(&Method) -> TokenStream,
) -> Vec<TokenStream> {
    methods.iter().filter(|m| keep(m)).map(arm).collect()
}

/// The call of a method on `recv` (`s.`, `Self::`), passing the metadata if it takes it.
fn call(m: &Method, recv: TokenStream) -> TokenStream {
    let name = &m.name;
    let meta = m.with_meta.then(|| quote!(, event));
    quote!(#recv #name(e #meta))
}

fn delete_arm(m: &Method) -> TokenStream {
    let p = crate::krate::private();
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
}

fn create_arm(m: &Method) -> TokenStream {
    let p = crate::krate::private();
    let ty = &m.event;
    let c = call(m, quote!(Self::));
    quote! {
        if let ::core::option::Option::Some(e) = #p::support::event_as::<#ty>(data) {
            return #p::support::IntoApplyResult::<Self>::into_apply_result(#c).map(::core::option::Option::Some);
        }
    }
}

fn apply_arm(m: &Method) -> TokenStream {
    let p = crate::krate::private();
    let ty = &m.event;
    let c = call(m, quote!(state.));
    if m.role == (Role::Apply { by_value: true }) {
        quote! {
            if let ::core::option::Option::Some(e) = #p::support::event_as::<#ty>(data) {
                return #p::support::IntoApplyResult::<Self>::into_apply_result(#c).map(::core::option::Option::Some);
            }
        }
    } else {
        quote! {
            if let ::core::option::Option::Some(e) = #p::support::event_as::<#ty>(data) {
                let mut state = state;
                #p::support::IntoApplyResult::<()>::into_apply_result(#c)?;
                return ::core::result::Result::Ok(::core::option::Option::Some(state));
            }
        }
    }
}

/// On an absent state, after the `create` arms: an event no `apply*` method takes (one
/// only `should_delete*` methods take, which are asked only of an existing state, or one
/// the type has no method for) creates no state, `Default` or not: the state stays
/// absent, as the trait promises for events without a method. Decided by the event's
/// runtime type, as the arms are, so two spellings of one type (`X`, `events::X`) are one
/// event type.
fn absent_unless_applied(methods: &[Method]) -> TokenStream {
    let p = crate::krate::private();
    let applied: Vec<&Type> = methods
        .iter()
        .filter(|m| matches!(m.role, Role::Apply { .. }))
        .map(|m| &m.event)
        .collect();
    quote! {
        if !(false #(|| #p::support::event_as::<#applied>(data).is_some())*) {
            return ::core::result::Result::Ok(::core::option::Option::None);
        }
    }
}

/// The event types the state handles (identity methods aside), each once.
fn handled(methods: &[Method]) -> Vec<&Type> {
    let mut v: Vec<&Type> = Vec::new();
    for m in methods {
        if !matches!(m.role, Role::Identity { .. })
            && !v
                .iter()
                .any(|t| t.to_token_stream().to_string() == m.event.to_token_stream().to_string())
        {
            v.push(&m.event);
        }
    }
    v
}

/// The `Identities` impl, when there are `identity*` / `identities*` methods.
fn identity_impl(self_ty: &Type, methods: &[Method]) -> Option<TokenStream> {
    let p = crate::krate::private();
    let identities: Vec<TokenStream> = methods
        .iter()
        .filter_map(|m| match m.role {
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
    (!identities.is_empty()).then(|| {
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
    })
}
