//! Query field paths: for a struct, a `{Name}Fields<R>` struct with one typed path per
//! field (serde renames applied, nested structs followed where marked), and its
//! `HasFields` impl. Used by `#[derive(Document)]` and `#[derive(Queryable)]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use crate::internals::ast::{Container, Field};
use crate::internals::attr::SerdeField;
use crate::internals::ctxt::Ctxt;

/// The JSON key of a field, as serde writes it: its serialize `rename`, else its name
/// (without `r#`) under the struct's `rename_all` rule.
fn json_key(cont: &Container, field: &Field) -> String {
    match &field.attrs.rename {
        Some(r) => r.clone(),
        None => cont
            .attrs
            .rename_all
            .apply_to_field(&field.ident.unraw().to_string()),
    }
}

/// The duplicated column of an indexed field: `mt_f_{field}` (a raw identifier's `r#`
/// dropped).
fn column_name(field: &Field) -> String {
    format!("mt_f_{}", field.ident.unraw().to_string().to_lowercase())
}

/// The SQL type of an indexed field's column: an expression reading the field type's
/// `ColumnType` (spanned at the type, so a type without it is reported there, with the
/// trait's advice); `None` when the field is not indexed.
fn column_sql_type(field: &Field) -> Option<TokenStream> {
    let private = crate::krate::private();
    if !field.attrs.indexed() {
        return None;
    }
    let ty = field.ty;
    Some(quote_spanned! {ty.span()=>
        <#ty as #private::ColumnType>::SQL_TYPE
    })
}

/// Checks the query and index attributes of the fields against their serde options: a
/// field with a query path must be written by serde under its own key by its type's own
/// `Serialize` (query values are written that way), and an indexed field (whose column is
/// cast from the field's key in the JSON) must be written that way whether it is queried
/// or not. The id field is left to `check::id_serde`, which refuses more; on an
/// aggregate's `version` field the options `check::version_serde` refuses are left to
/// it (the others are checked here, as on any field). Each problem is reported once, at
/// the serde option's span.
pub fn check(cx: &Ctxt, cont: &Container, id: Option<&Field>, version: Option<&Field>) {
    let is = |f: &Field, other: Option<&Field>| other.is_some_and(|o| o.ident == f.ident);
    for f in &cont.fields {
        if is(f, id) {
            continue;
        }
        for &(option, span) in &f.attrs.serde {
            if is(f, version) && crate::internals::check::version_consequence(option).is_some() {
                continue;
            }
            if let Some(index) = f.attrs.index_attr() {
                if let Some(message) = index_conflict(f, option, index) {
                    cx.syn_error(syn::Error::new(span, message));
                    continue;
                }
            }
            if !f.attrs.skip {
                if let Some(message) = query_conflict(f, option) {
                    cx.syn_error(syn::Error::new(span, message));
                }
            }
        }
    }
}

/// Why serde's `option` on the indexed field `f` (`index`: the attribute as written) makes
/// its column wrong, if it does.
fn index_conflict(f: &Field, option: SerdeField, index: &str) -> Option<String> {
    let name = f.ident;
    let shown = option.shown();
    if option.never_written() {
        let enforced = if f.attrs.unique.is_some() {
            " and the unique index would enforce nothing"
        } else {
            ""
        };
        Some(format!(
            "`{name}` has `{index}` and `{shown}`: serde never writes `{name}` under its own key, so its column would always be NULL{enforced}; remove `{index}`"
        ))
    } else if option.custom_serialize() {
        Some(format!(
            "`{name}` has `{index}` and `{shown}`: its column is cast from what `{key}` writes, but query values are written by the field type's own `Serialize`, so the column would not hold what queries compare it with (or would fail to cast); drop `{key}`, or drop `{index}` and mark the field #[query(skip)]",
            key = option.key(),
        ))
    } else {
        None
    }
}

/// Why serde's `option` on the queried field `f` makes its query path wrong, if it does.
fn query_conflict(f: &Field, option: SerdeField) -> Option<String> {
    let name = f.ident;
    let shown = option.shown();
    match option {
        SerdeField::Flatten => Some(format!(
            "`{name}` is flattened by serde: its keys cannot be queried by path; mark it #[query(skip)]"
        )),
        SerdeField::Skip | SerdeField::SkipSerializing => Some(format!(
            "`{name}` has `{shown}`: serde never writes it, so a query on it could never match a stored document; mark it #[query(skip)]"
        )),
        SerdeField::With | SerdeField::SerializeWith | SerdeField::Getter => Some(format!(
            "`{name}` has `{shown}`: the stored JSON holds what `{key}` writes, but query values are written by the field type's own `Serialize`, so a typed query on `{name}` would not match what is stored; add #[query(skip)] or drop `{key}`",
            key = option.key(),
        )),
        SerdeField::SkipDeserializing
        | SerdeField::SkipSerializingIf
        | SerdeField::DeserializeWith => None,
    }
}

/// The index specs of a document, as a `&'static [IndexSpec]` expression.
pub fn index_specs(cont: &Container) -> TokenStream {
    let private = crate::krate::private();
    let specs = cont.fields.iter().filter_map(|f| {
        let sql_type = column_sql_type(f)?;
        let field = f.ident.unraw().to_string();
        let key = json_key(cont, f);
        let column = column_name(f);
        let unique = f.attrs.unique.is_some();
        Some(quote! {
            #private::IndexSpec {
                field: #field,
                json_key: #key,
                column: #column,
                sql_type: #sql_type,
                unique: #unique,
            }
        })
    });
    quote!(&[#(#specs),*])
}

/// The column a field's path names for queries: the document's `id` column for its id
/// field (`id`), the duplicated column of an indexed field, or none.
fn path_column(field: &Field, id: Option<&Field>) -> TokenStream {
    let private = crate::krate::private();
    if id.is_some_and(|id| id.ident == field.ident) {
        let ty = field.ty;
        return quote_spanned! {ty.span()=>
            ::core::option::Option::Some(("id", <#ty as #private::PgId>::SQL_TYPE))
        };
    }
    match column_sql_type(field) {
        Some(sql_type) => {
            let col = column_name(field);
            quote!(::core::option::Option::Some((#col, #sql_type)))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// The `{Name}Fields` struct and the `HasFields` impl; a document's `id` field (its path
/// names the `id` column, so queries on it use the primary key).
pub fn expand(cont: &Container, id: Option<&Field>) -> TokenStream {
    let private = crate::krate::private();
    let ident = cont.ident;
    let vis = &cont.original.vis;
    let fields_ident = format_ident!("{}Fields", ident);
    let q = quote!(#private::query);
    let doc = format!("Query field paths of [`{ident}`], rooted at `R` (generated by marten).");
    let mut decls = Vec::new();
    let mut inits = Vec::new();
    for f in cont.fields.iter().filter(|f| !f.attrs.skip) {
        let name = f.ident;
        let ty = f.ty;
        let key = json_key(cont, f);
        let fdoc = format!("The path of `{name}` (JSON key `{key}`).");
        if f.attrs.nested {
            decls.push(quote! { #[doc = #fdoc] pub #name: <#ty as #q::HasFields>::Fields<R> });
            inits.push(quote! { #name: <#ty as #q::HasFields>::fields_at(base.nested(#key, |s: &#ident| &s.#name)) });
        } else {
            let column = path_column(f, id);
            decls.push(quote! { #[doc = #fdoc] pub #name: #q::Field<R, #ty> });
            inits.push(quote! { #name: base.field(#key, #column, |s: &#ident| &s.#name) });
        }
    }
    quote! {
        #[doc = #doc]
        #[allow(dead_code)]
        #vis struct #fields_ident<R: 'static> {
            #(#decls,)*
        }

        #[doc(hidden)]
        #[allow(unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl #q::HasFields for #ident {
                type Fields<R: 'static> = #fields_ident<R>;
                fn fields_at<R: 'static>(base: #q::Base<R, Self>) -> #fields_ident<R> {
                    #fields_ident {
                        #(#inits,)*
                    }
                }
            }

            #[automatically_derived]
            impl #ident {
                /// The typed query paths of this type's fields.
                #[allow(dead_code)]
                pub fn fields() -> #fields_ident<#ident> {
                    <Self as #q::HasFields>::fields_at(#q::Base::root())
                }
            }
        };
    }
}
