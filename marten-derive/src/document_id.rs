//! `#[derive(DocumentId)]`: a strong-typed id, a single-field tuple struct over `Uuid`,
//! `i64`, `i32` or `String` (`struct OrderId(Uuid);`). Parse (the shape and the inner
//! type, every problem reported at its own span), then generate the hidden `Newtype`
//! impls that let it into marten's sealed id traits, and the conversions, `Display`,
//! serde and `ToSql` / `FromSql` impls, each delegating to the inner value.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Type};

use crate::internals::check;
use crate::internals::ctxt::Ctxt;

/// The example every shape error shows.
const EXAMPLE: &str = "`#[derive(DocumentId)] struct OrderId(Uuid);`";

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let cx = Ctxt::new();
    let inner = inner_type(&cx, input);
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "a strong-typed id cannot be generic: it wraps one concrete id type",
        );
    }
    if let Some(ty) = inner {
        check::newtype_inner(&cx, ty);
    }
    cx.check()?;
    let Some(inner) = inner else {
        return Ok(TokenStream::new());
    };
    Ok(generate(&input.ident, inner))
}

/// The type of the one field of a tuple struct; records why the input is another shape.
fn inner_type<'a>(cx: &Ctxt, input: &'a DeriveInput) -> Option<&'a Type> {
    let name = &input.ident;
    match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                fields.unnamed.first().map(|f| &f.ty)
            }
            Fields::Unnamed(fields) => {
                cx.error_spanned_by(
                    fields,
                    format!(
                        "DocumentId is derived for a tuple struct with exactly one field, and `{name}` has {}: an id wraps one value, e.g. {EXAMPLE}",
                        fields.unnamed.len()
                    ),
                );
                None
            }
            Fields::Named(fields) => {
                cx.error_spanned_by(
                    fields,
                    format!("DocumentId is derived for a tuple struct with one field, not a struct with named fields: write `struct {name}(Uuid);` (e.g. {EXAMPLE})"),
                );
                None
            }
            Fields::Unit => {
                cx.error_spanned_by(
                    name,
                    format!("DocumentId is derived for a tuple struct with one field, not a unit struct, e.g. {EXAMPLE}"),
                );
                None
            }
        },
        Data::Enum(data) => {
            cx.error_spanned_by(
                data.enum_token,
                format!("DocumentId is derived for a tuple struct with one field, not an enum, e.g. {EXAMPLE}"),
            );
            None
        }
        Data::Union(data) => {
            cx.error_spanned_by(
                data.union_token,
                format!("DocumentId is derived for a tuple struct with one field, not a union, e.g. {EXAMPLE}"),
            );
            None
        }
    }
}

/// The impls of a checked newtype, in a `const _` block.
fn generate(ident: &syn::Ident, inner: &Type) -> TokenStream {
    let private = crate::krate::private();
    let impls = [
        newtype(ident, inner, &private),
        conversions(ident, inner, &private),
        query(ident, inner, &private),
        serde(ident, inner, &private),
        postgres(ident, inner, &private),
    ];
    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            #(#impls)*
        };
    }
}

/// `Newtype` and `PgNewtype` (what lets the id into marten's sealed id traits), and the
/// assertion that reports a newtype lacking a trait an id needs.
fn newtype(ident: &syn::Ident, inner: &Type, private: &TokenStream) -> TokenStream {
    // Spanned at the inner type, so an inner type that is no id is reported there.
    let inner_decl = quote_spanned! {inner.span()=>
        type Inner = #inner;
    };
    let assert = quote_spanned! {ident.span()=>
        #private::assert_document_id::<#ident>();
    };
    let pg = quote!(#private::postgres_types);
    quote! {
        #[automatically_derived]
        impl #private::Newtype for #ident {
            #inner_decl
            #[inline]
            fn from_inner(inner: #inner) -> Self {
                #ident(inner)
            }
            #[inline]
            fn inner(&self) -> &#inner {
                &self.0
            }
            #[inline]
            fn inner_mut(&mut self) -> &mut #inner {
                &mut self.0
            }
        }

        #[automatically_derived]
        impl #private::PgNewtype for #ident
        where
            for<'__m> #ident: #pg::ToSql,
            for<'__m> #inner: #private::PgId,
        {
        }

        // The one place a newtype lacking a trait an id needs is reported.
        fn __assert_document_id() {
            #assert
        }
    }
}

/// `Display`, the conversions from and to the inner value, and to a stream id.
fn conversions(ident: &syn::Ident, inner: &Type, private: &TokenStream) -> TokenStream {
    quote! {
        #[automatically_derived]
        impl ::core::fmt::Display for #ident where for<'__m> #inner: ::core::fmt::Display {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0, f)
            }
        }

        #[automatically_derived]
        impl ::core::convert::From<#inner> for #ident {
            #[inline]
            fn from(inner: #inner) -> Self {
                #ident(inner)
            }
        }

        #[automatically_derived]
        impl ::core::convert::From<#ident> for #inner {
            #[inline]
            fn from(id: #ident) -> Self {
                id.0
            }
        }

        // Some impls below hold only for some newtypes (a stream id is a `Uuid` or a
        // `String`; the store generates integer ids only; ordering needs `PartialOrd`;
        // `ToSql` needs `Debug`): a bound under
        // `for<'__m>` is not checked where the impl is written, so where it does not
        // hold the impl simply does not apply (and a missing derive is reported once,
        // by the assertion above).
        #[automatically_derived]
        impl ::core::convert::From<#ident> for #private::StreamId
        where
            for<'__m> #ident: #private::AggregateId,
        {
            #[inline]
            fn from(id: #ident) -> Self {
                #private::AggregateId::to_stream_id(&id)
            }
        }

        #[automatically_derived]
        impl ::core::convert::From<&#ident> for #private::StreamId
        where
            for<'__m> #ident: #private::AggregateId,
        {
            #[inline]
            fn from(id: &#ident) -> Self {
                #private::AggregateId::to_stream_id(id)
            }
        }
    }
}

/// What typed queries, generated ids and the schema ask of an id.
fn query(ident: &syn::Ident, inner: &Type, private: &TokenStream) -> TokenStream {
    quote! {
        #[automatically_derived]
        impl #private::query::Comparable for #ident
        where
            for<'__m> #ident: ::core::cmp::PartialEq,
            for<'__m> #inner: #private::query::Comparable,
        {
            const KIND: #private::query::ValueKind =
                <#inner as #private::query::Comparable>::KIND;
        }

        #[automatically_derived]
        impl #private::query::Orderable for #ident
        where
            for<'__m> #ident: ::core::cmp::PartialOrd + #private::query::Comparable,
        {
        }

        #[automatically_derived]
        impl #private::HiLoId for #ident
        where
            for<'__m> #ident: #private::PgId,
            for<'__m> #inner: #private::HiLoId,
        {
            #[inline]
            fn is_unassigned(&self) -> bool {
                #private::HiLoId::is_unassigned(&self.0)
            }
            #[inline]
            fn from_generated(value: i64) -> ::core::option::Option<Self> {
                <#inner as #private::HiLoId>::from_generated(value).map(#ident)
            }
        }

        #[automatically_derived]
        impl #private::ColumnType for #ident where for<'__m> #inner: #private::ColumnType {
            const SQL_TYPE: &'static str = <#inner as #private::ColumnType>::SQL_TYPE;
        }
    }
}

/// `Serialize` and `Deserialize` as the inner value.
fn serde(ident: &syn::Ident, inner: &Type, private: &TokenStream) -> TokenStream {
    let serde = quote!(#private::serde);
    let result = quote!(::core::result::Result);
    quote! {
        #[automatically_derived]
        impl #serde::Serialize for #ident where for<'__m> #inner: #serde::Serialize {
            fn serialize<S: #serde::Serializer>(&self, serializer: S) -> #result<S::Ok, S::Error> {
                #serde::Serialize::serialize(&self.0, serializer)
            }
        }

        #[automatically_derived]
        impl<'de> #serde::Deserialize<'de> for #ident where #inner: #serde::Deserialize<'de> {
            fn deserialize<D: #serde::Deserializer<'de>>(deserializer: D) -> #result<Self, D::Error> {
                <#inner as #serde::Deserialize<'de>>::deserialize(deserializer).map(#ident)
            }
        }
    }
}

/// `ToSql` and `FromSql` as the inner value.
fn postgres(ident: &syn::Ident, inner: &Type, private: &TokenStream) -> TokenStream {
    let pg = quote!(#private::postgres_types);
    let result = quote!(::core::result::Result);
    let sql_error = quote!(
        ::std::boxed::Box<dyn ::std::error::Error + ::core::marker::Sync + ::core::marker::Send>
    );
    quote! {
        #[automatically_derived]
        impl #pg::ToSql for #ident
        where
            for<'__m> #ident: ::core::fmt::Debug,
            for<'__m> #inner: #pg::ToSql,
        {
            fn to_sql(
                &self,
                ty: &#pg::Type,
                out: &mut #private::BytesMut,
            ) -> #result<#pg::IsNull, #sql_error> {
                #pg::ToSql::to_sql(&self.0, ty, out)
            }
            fn accepts(ty: &#pg::Type) -> bool {
                <#inner as #pg::ToSql>::accepts(ty)
            }
            fn to_sql_checked(
                &self,
                ty: &#pg::Type,
                out: &mut #private::BytesMut,
            ) -> #result<#pg::IsNull, #sql_error> {
                #pg::ToSql::to_sql_checked(&self.0, ty, out)
            }
        }

        #[automatically_derived]
        impl<'a> #pg::FromSql<'a> for #ident where #inner: #pg::FromSql<'a> {
            fn from_sql(ty: &#pg::Type, raw: &'a [u8]) -> #result<Self, #sql_error> {
                <#inner as #pg::FromSql<'a>>::from_sql(ty, raw).map(#ident)
            }
            fn accepts(ty: &#pg::Type) -> bool {
                <#inner as #pg::FromSql<'a>>::accepts(ty)
            }
        }
    }
}
