//! The derive input as a model: a struct with named fields and its parsed attributes.

use syn::{Data, DeriveInput, Fields, Ident, Type};

use super::attr;
use super::ctxt::Ctxt;

/// A struct a derive was applied to.
pub struct Container<'a> {
    /// The struct's name.
    pub ident: &'a Ident,
    /// The struct's attributes.
    pub attrs: attr::Container,
    /// The named fields.
    pub fields: Vec<Field<'a>>,
    /// The derive input, for spans.
    pub original: &'a DeriveInput,
}

/// A named field.
pub struct Field<'a> {
    /// The field's name.
    pub ident: &'a Ident,
    /// The field's type.
    pub ty: &'a Type,
    /// The field's attributes.
    pub attrs: attr::Field,
}

impl<'a> Container<'a> {
    /// Builds the model, or records why the input is not a struct with named fields.
    pub fn from_ast(cx: &Ctxt, input: &'a DeriveInput, derive: &str) -> Option<Self> {
        let attrs = attr::Container::from_ast(cx, &input.attrs);
        let fields = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named
                    .named
                    .iter()
                    .filter_map(|f| {
                        Some(Field {
                            ident: f.ident.as_ref()?,
                            ty: &f.ty,
                            attrs: attr::Field::from_ast(cx, &f.attrs),
                        })
                    })
                    .collect(),
                Fields::Unnamed(unnamed) => {
                    cx.error_spanned_by(
                        unnamed,
                        format!("{derive} can only be derived for structs with named fields, not tuple structs"),
                    );
                    return None;
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        input.ident.clone(),
                        format!("{derive} can only be derived for structs with named fields, not unit structs"),
                    );
                    return None;
                }
            },
            Data::Enum(data) => {
                cx.error_spanned_by(
                    data.enum_token,
                    format!(
                        "{derive} can only be derived for structs with named fields, not enums"
                    ),
                );
                return None;
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    format!(
                        "{derive} can only be derived for structs with named fields, not unions"
                    ),
                );
                return None;
            }
        };
        Some(Container {
            ident: &input.ident,
            attrs,
            fields,
            original: input,
        })
    }
}
