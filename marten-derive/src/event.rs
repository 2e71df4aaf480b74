//! `#[derive(Event)]`: a stable stored type name for a serde type.

use proc_macro2::TokenStream;
use quote::quote;
use syn::DeriveInput;

use crate::internals::attr;
use crate::internals::ctxt::Ctxt;

pub fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let cx = Ctxt::new();
    let attrs = attr::Event::from_ast(&cx, &input.attrs);
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
    cx.check()?;
    let ident = &input.ident;
    let name = attrs
        .name
        .map_or_else(|| attr::snake_case(&ident.to_string()), |(n, _)| n);
    Ok(quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl ::marten::__private::Event for #ident {
                const EVENT_TYPE: &'static str = #name;
            }
        };
    })
}
