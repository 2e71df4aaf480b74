//! `#[derive(Event)]`: a stable stored type name for a serde type.

use proc_macro2::TokenStream;
use quote::quote;
use syn::ext::IdentExt;
use syn::DeriveInput;

use crate::internals::ctxt::Ctxt;
use crate::internals::{attr, check};

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let private = crate::krate::private();
    let cx = Ctxt::new();
    let attrs = attr::Event::from_ast(&cx, &input.attrs);
    check::event_names(&cx, &attrs);
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "events cannot be generic: each event type needs one stable stored name",
        );
    }
    if let syn::Data::Union(u) = &input.data {
        cx.error_spanned_by(
            u.union_token,
            "Event can be derived for structs and enums, not unions",
        );
    }
    let tags = tag_fields(&cx, input);
    cx.check()?;
    let ident = &input.ident;
    let name = attrs
        .name
        .map_or_else(|| attr::snake_case(&ident.unraw().to_string()), |(n, _)| n);
    if let Some((_, span)) = attrs.aliases.iter().find(|(a, _)| *a == name) {
        return Err(syn::Error::new(
            *span,
            format!("an event alias must differ from the type's name {name:?}"),
        ));
    }
    let aliases_const = (!attrs.aliases.is_empty()).then(|| {
        let aliases = attrs.aliases.iter().map(|(a, _)| a);
        quote! { const ALIASES: &'static [&'static str] = &[#(#aliases),*]; }
    });
    let tags_fn = (!tags.is_empty()).then(|| {
        let pushes = tags.iter().map(|(field, tag_name, ty)| {
            let call = quote::quote_spanned! {syn::spanned::Spanned::span(ty)=> #private::plain_tag::<#ty> };
            quote! { #call(&self.#field, #tag_name) }
        });
        quote! {
            fn tags(&self) -> ::std::vec::Vec<#private::EventTag> {
                ::std::vec![#(#pushes),*]
            }
        }
    });
    Ok(quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl #private::Event for #ident {
                const EVENT_TYPE: &'static str = #name;
                #aliases_const
                #tags_fn
            }
        };
    })
}

/// The `#[tag]` / `#[tag(name = "..")]` fields of a struct: (field, tag name for plain
/// values, field type). The default tag name is the field's name without `r#`
/// (`#[tag] r#type: String` is the tag type `type`), `tag{i}` for a tuple field.
fn tag_fields(cx: &Ctxt, input: &DeriveInput) -> Vec<(syn::Member, String, syn::Type)> {
    let mut out = Vec::new();
    let fields = match &input.data {
        syn::Data::Struct(s) => &s.fields,
        syn::Data::Enum(e) => {
            for v in &e.variants {
                for f in &v.fields {
                    if let Some(a) = f.attrs.iter().find(|a| a.path().is_ident("tag")) {
                        cx.error_spanned_by(
                            a,
                            "#[tag] works on struct events; an enum event cannot carry tags",
                        );
                    }
                }
            }
            return out;
        }
        syn::Data::Union(_) => return out,
    };
    for (i, f) in fields.iter().enumerate() {
        for a in f.attrs.iter().filter(|a| a.path().is_ident("tag")) {
            let member = match &f.ident {
                Some(id) => syn::Member::Named(id.clone()),
                None => syn::Member::Unnamed(syn::Index::from(i)),
            };
            let mut name = f
                .ident
                .as_ref()
                .map_or_else(|| format!("tag{i}"), |id| id.unraw().to_string());
            if let syn::Meta::List(_) = &a.meta {
                let result = a.parse_nested_meta(|meta| {
                    if meta.path.is_ident("name") {
                        let lit: syn::LitStr = meta.value()?.parse()?;
                        check::stored_name(cx, "a tag name", &lit.value(), lit.span());
                        name = lit.value();
                        Ok(())
                    } else {
                        Err(meta.error("unknown tag attribute: expected `name = \"...\"`"))
                    }
                });
                if let Err(e) = result {
                    cx.syn_error(e);
                }
            }
            out.push((member, name, f.ty.clone()));
        }
    }
    out
}

/// `#[derive(Tag)]` on a newtype (`struct CourseId(Uuid)`).
pub fn expand_tag(input: &DeriveInput) -> syn::Result<TokenStream> {
    let private = crate::krate::private();
    let cx = Ctxt::new();
    let ident = &input.ident;
    let mut name = attr::snake_case(&ident.unraw().to_string());
    for a in input.attrs.iter().filter(|a| a.path().is_ident("tag")) {
        let result = a.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                check::stored_name(&cx, "a tag name", &lit.value(), lit.span());
                name = lit.value();
                Ok(())
            } else {
                Err(meta.error("unknown tag attribute: expected `name = \"...\"`"))
            }
        });
        if let Err(e) = result {
            cx.syn_error(e);
        }
    }
    let ok_shape = matches!(&input.data, syn::Data::Struct(s) if s.fields.len() == 1);
    if !ok_shape {
        cx.error_spanned_by(
            ident,
            "Tag is derived for newtypes with one field, e.g. `struct CourseId(Uuid)`",
        );
    }
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(&input.generics, "a tag type cannot be generic");
    }
    cx.check()?;
    let inner = match &input.data {
        syn::Data::Struct(s) => match s.fields.iter().next().and_then(|f| f.ident.clone()) {
            Some(id) => quote!(self.#id),
            None => quote!(self.0),
        },
        _ => quote!(self.0),
    };
    Ok(quote! {
        #[doc(hidden)]
        const _: () = {
            #[automatically_derived]
            impl #private::Tag for #ident {
                const TAG_TYPE: &'static str = #name;
                fn tag_value(&self) -> ::std::string::String {
                    ::std::string::ToString::to_string(&#inner)
                }
            }
        };
    })
}

#[cfg(test)]
mod tests {
    use super::{tag_fields, Ctxt};

    fn tag_names(input: syn::DeriveInput) -> Vec<String> {
        let cx = Ctxt::new();
        let tags = tag_fields(&cx, &input);
        assert!(cx.check().is_ok());
        tags.into_iter().map(|(_, name, _)| name).collect()
    }

    #[test]
    fn a_raw_identifier_field_is_tagged_under_its_name_without_r_hash() {
        let input: syn::DeriveInput = syn::parse_quote! {
            struct Moved {
                #[tag]
                r#type: String,
                #[tag]
                room: String,
                #[tag(name = "kind")]
                r#match: String,
            }
        };
        assert_eq!(tag_names(input), ["type", "room", "kind"]);
    }

    #[test]
    fn a_tuple_field_is_tagged_by_its_position() {
        let input: syn::DeriveInput = syn::parse_quote! {
            struct Moved(String, #[tag] String);
        };
        assert_eq!(tag_names(input), ["tag1"]);
    }
}
