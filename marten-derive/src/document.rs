//! `#[derive(Document)]`: parse, check, then generate the `Document` impl and the
//! per-mode storage selection.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::DeriveInput;

use crate::internals::ast::{Container, Field};
use crate::internals::attr::Mode;
use crate::internals::check;
use crate::internals::ctxt::Ctxt;

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let cx = Ctxt::new();
    let Some(cont) = Container::from_ast(&cx, input, "Document") else {
        cx.check()?;
        return Ok(TokenStream::new());
    };
    check::no_generics(&cx, &cont);
    check::table_name(&cx, &cont);
    check::full_text_config(&cx, &cont);
    check::container_serde(&cx, &cont, "Document");
    let id = check::id_field(&cx, &cont);
    crate::fields::check(&cx, &cont, id, None);
    if let Some(id) = id {
        check::id_type(&cx, id, false);
        check::id_serde(&cx, id);
    }
    cx.check()?;
    let Some(id) = id else {
        return Ok(TokenStream::new());
    };

    Ok(document_impls(&cont, id))
}

/// The `Document` and `PgDocument` impls of a checked container, in a `const _` block.
pub fn document_impls(cont: &Container, id: &Field) -> TokenStream {
    let private = crate::krate::private();
    let ident = cont.ident;
    // A raw identifier (`r#match`) names its table and errors without the `r#`.
    let type_name = ident.unraw().to_string();
    let table = cont.attrs.table.as_ref().map_or_else(
        || format!("mt_doc_{}", type_name.to_lowercase()),
        |(t, _)| t.clone(),
    );
    let id_ident = id.ident;
    let indexes = crate::fields::index_specs(cont);
    let gin = cont.attrs.gin;
    let (full_text, searchable) = match &cont.attrs.full_text {
        Some((config, _)) => (
            quote!(::core::option::Option::Some(#config)),
            quote! {
                #[automatically_derived]
                impl #private::query::FullTextSearch for #ident {}
            },
        ),
        None => (quote!(::core::option::Option::None), TokenStream::new()),
    };
    let soft_delete = cont.attrs.soft_delete.is_some();
    let soft_deleted = soft_delete.then(|| {
        quote! {
            #[automatically_derived]
            impl #private::SoftDeleted for #ident {}
        }
    });
    let tenancy = if cont.attrs.conjoined {
        quote!(Conjoined)
    } else {
        quote!(Single)
    };
    let fields = crate::fields::expand(cont, Some(id));
    let id_ty = id.ty;
    // Spanned at the id type, so an unsupported id type is reported there.
    let id_assert = quote_spanned! {id_ty.span()=>
        let _ = #private::assert_document_id::<#id_ty>;
    };
    let (mode, storage) = match cont.attrs.mode {
        Mode::Optimistic => (quote!(Optimistic), quote!(OptimisticStorage)),
        Mode::Numeric => (quote!(Numeric), quote!(NumericStorage)),
        Mode::Off => (quote!(Off), quote!(OffStorage)),
    };

    quote! {
        #fields

        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl #private::Document for #ident {
                type Id = #id_ty;
                type Mode = #private::concurrency::#mode;
                const DOCUMENT_TYPE: &'static str = #type_name;
                const TABLE_NAME: &'static str = #table;
                const INDEXES: &'static [#private::IndexSpec] = #indexes;
                const GIN_INDEX: bool = #gin;
                const FULL_TEXT: ::core::option::Option<&'static str> = #full_text;
                const TENANCY: #private::Tenancy = #private::Tenancy::#tenancy;
                const SOFT_DELETE: bool = #soft_delete;
                #[inline]
                fn id(&self) -> &Self::Id {
                    &self.#id_ident
                }
                #[inline]
                fn id_mut(&mut self) -> &mut Self::Id {
                    &mut self.#id_ident
                }
            }

            #searchable
            #soft_deleted

            #[automatically_derived]
            impl #private::PgDocument for #ident {
                type Storage = #private::#storage<Self>;
                #[inline]
                fn storage() -> &'static Self::Storage {
                    static STORAGE: #private::OnceLock<#private::#storage<#ident>> =
                        #private::OnceLock::new();
                    STORAGE.get_or_init(<#private::#storage<#ident> as #private::DocumentStorage<#ident>>::new)
                }
            }

            fn __assert_id() {
                #id_assert
            }
        };
    }
}
