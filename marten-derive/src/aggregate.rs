//! `#[derive(Aggregate)]`: a document (id = stream id) with a `version` field that the
//! projection engine keeps at the stream version of the last applied event.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::document::document_impls;
use crate::internals::ast::Container;
use crate::internals::check;
use crate::internals::ctxt::Ctxt;

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let private = crate::krate::private();
    let cx = Ctxt::new();
    let Some(cont) = Container::from_ast(&cx, input, "Aggregate") else {
        cx.check()?;
        return Ok(TokenStream::new());
    };
    check::no_generics(&cx, &cont);
    check::table_name(&cx, &cont);
    check::full_text_config(&cx, &cont);
    check::container_serde(&cx, &cont, "Aggregate");
    let id = check::id_field(&cx, &cont);
    let version = version_field(&cx, &cont);
    crate::fields::check(&cx, &cont, id, version);
    if let Some(version) = version {
        check::version_serde(&cx, version);
    }
    if let Some(span) = cont.attrs.soft_delete {
        cx.syn_error(syn::Error::new(
            span,
            "an aggregate cannot be `soft_delete`: its projection writes and deletes it; \
             mark a `#[derive(Document)]` type `#[document(soft_delete)]` instead",
        ));
    }
    if let Some(id) = id {
        check::id_type(&cx, id, true);
        check::id_serde(&cx, id);
    }
    cx.check()?;
    let (Some(id), Some(version)) = (id, version) else {
        return Ok(TokenStream::new());
    };
    let document = document_impls(&cont, id);
    let ident = cont.ident;
    let version_ident = version.ident;
    let id_ty = id.ty;
    let id_assert = quote_spanned! {id_ty.span()=>
        let _ = #private::assert_aggregate_id::<#id_ty>;
    };
    let version_ty = version.ty;
    let version_assert = quote_spanned! {version_ty.span()=>
        let _: fn(#version_ty) -> i64 = |v: i64| v;
    };
    Ok(quote! {
        #document

        #[doc(hidden)]
        #[allow(unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl #private::Aggregate for #ident {
                #[inline]
                fn version(&self) -> i64 {
                    self.#version_ident
                }
                #[inline]
                fn set_version(&mut self, version: i64) {
                    self.#version_ident = version;
                }
            }

            fn __assert_aggregate() {
                #id_assert
                #version_assert
            }
        };
    })
}

/// The field marked `#[aggregate(version)]`, else the one named `version`.
fn version_field<'c, 'a>(
    cx: &Ctxt,
    cont: &'c Container<'a>,
) -> Option<&'c crate::internals::ast::Field<'a>> {
    let mut marked = None;
    for (field, attrs) in cont.fields.iter().zip(field_attrs(cont)) {
        for attr in attrs.iter().filter(|a| a.path().is_ident("aggregate")) {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("version") {
                    if marked.is_some() {
                        return Err(meta.error(
                            "a second #[aggregate(version)] field: an aggregate has one version",
                        ));
                    }
                    marked = Some(field);
                    Ok(())
                } else {
                    Err(meta.error("unknown aggregate field attribute: expected `version`"))
                }
            });
            if let Err(e) = result {
                cx.syn_error(e);
            }
        }
    }
    if marked.is_some() {
        return marked;
    }
    let named = cont.fields.iter().find(|f| f.ident == "version");
    if named.is_none() {
        cx.error_spanned_by(
            cont.ident,
            format!(
                "aggregate `{}` has no version field: add `version: i64` or mark an i64 field with #[aggregate(version)]",
                cont.ident
            ),
        );
    }
    named
}

fn field_attrs<'a>(cont: &'a Container) -> Vec<&'a [syn::Attribute]> {
    match &cont.original.data {
        syn::Data::Struct(s) => s.fields.iter().map(|f| f.attrs.as_slice()).collect(),
        _ => Vec::new(),
    }
}
