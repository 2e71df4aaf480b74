//! The attributes marten's derives understand, parsed into values with their spans.
//! A repeated attribute is reported at its second occurrence.

use proc_macro2::Span;
use syn::{Attribute, Ident, LitStr};

use super::ctxt::Ctxt;

/// A value seen once, remembering where.
pub struct Attr<T> {
    name: &'static str,
    value: Option<(T, Span)>,
}

impl<T> Attr<T> {
    fn none(name: &'static str) -> Self {
        Self { name, value: None }
    }

    fn set(&mut self, cx: &Ctxt, span: Span, value: T) {
        if self.value.is_some() {
            cx.syn_error(syn::Error::new(
                span,
                format!("duplicate marten attribute `{}`", self.name),
            ));
        } else {
            self.value = Some((value, span));
        }
    }

    /// The value and its span, if the attribute was given.
    pub fn get(self) -> Option<(T, Span)> {
        self.value
    }
}

/// The concurrency mode named by `#[concurrency(...)]`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// `optimistic`
    Optimistic,
    /// `numeric`
    Numeric,
    /// `off`
    Off,
}

/// Attributes on the struct.
pub struct Container {
    /// `#[document(table = "...")]`
    pub table: Option<(String, Span)>,
    /// `#[concurrency(...)]`, `Off` when absent.
    pub mode: Mode,
}

impl Container {
    /// Parses the struct's attributes.
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut table = Attr::none("table");
        let mut mode = Attr::none("concurrency");
        for attr in attrs {
            if attr.path().is_ident("document") {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("table") {
                        let lit: LitStr = meta.value()?.parse()?;
                        table.set(cx, lit.span(), lit.value());
                        Ok(())
                    } else if meta.path.is_ident("id") {
                        Err(meta.error("`#[document(id)]` belongs on a field, not on the struct"))
                    } else {
                        Err(meta.error(format!(
                            "unknown document attribute `{}`: expected `table = \"...\"`",
                            path_name(&meta.path)
                        )))
                    }
                });
                if let Err(e) = result {
                    cx.syn_error(e);
                }
            } else if attr.path().is_ident("concurrency") {
                let result = attr.parse_args_with(|input: syn::parse::ParseStream| {
                    let ident: Ident = input.parse()?;
                    let parsed = match ident.to_string().as_str() {
                        "optimistic" => Mode::Optimistic,
                        "numeric" => Mode::Numeric,
                        "off" => Mode::Off,
                        other => {
                            return Err(syn::Error::new(
                                ident.span(),
                                format!(
                                    "unknown concurrency mode `{other}`: expected `optimistic`, `numeric` or `off`"
                                ),
                            ))
                        }
                    };
                    Ok((parsed, ident.span()))
                });
                match result {
                    Ok((m, span)) => mode.set(cx, span, m),
                    Err(e) => cx.syn_error(e),
                }
            }
        }
        Container {
            table: table.get(),
            mode: mode.get().map_or(Mode::Off, |(m, _)| m),
        }
    }
}

/// Attributes on a field.
pub struct Field {
    /// `#[document(id)]`, with its span.
    pub id: Option<Span>,
}

impl Field {
    /// Parses a field's attributes.
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut id = Attr::none("id");
        for attr in attrs {
            if !attr.path().is_ident("document") {
                continue;
            }
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("id") {
                    id.set(cx, meta.path.span_of(), ());
                    Ok(())
                } else {
                    Err(meta.error(format!(
                        "unknown document field attribute `{}`: expected `id`",
                        path_name(&meta.path)
                    )))
                }
            });
            if let Err(e) = result {
                cx.syn_error(e);
            }
        }
        Field {
            id: id.get().map(|(_, span)| span),
        }
    }
}

fn path_name(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

trait SpanOf {
    fn span_of(&self) -> Span;
}

impl SpanOf for syn::Path {
    fn span_of(&self) -> Span {
        self.segments
            .first()
            .map_or_else(Span::call_site, |s| s.ident.span())
    }
}

/// Attributes on an event type.
pub struct Event {
    /// `#[event(name = "...")]`
    pub name: Option<(String, Span)>,
}

impl Event {
    /// Parses an event type's attributes.
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut name = Attr::none("name");
        for attr in attrs {
            if !attr.path().is_ident("event") {
                continue;
            }
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let lit: LitStr = meta.value()?.parse()?;
                    if lit.value().trim().is_empty() {
                        return Err(syn::Error::new(
                            lit.span(),
                            "an event name must not be empty",
                        ));
                    }
                    name.set(cx, lit.span(), lit.value());
                    Ok(())
                } else {
                    Err(meta.error(format!(
                        "unknown event attribute `{}`: expected `name = \"...\"`",
                        path_name(&meta.path)
                    )))
                }
            });
            if let Err(e) = result {
                cx.syn_error(e);
            }
        }
        Event { name: name.get() }
    }
}

/// `SomeTypeName` -> `some_type_name`: the default stored name of an event type.
pub fn snake_case(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 4);
    let chars: Vec<char> = ident.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}
