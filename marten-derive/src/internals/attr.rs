//! The attributes marten's derives understand, parsed into values with their spans.
//! A repeated attribute is reported at its second occurrence.

use proc_macro2::Span;
use syn::{Attribute, Ident, LitStr};

use super::case::RenameRule;
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
    /// `#[document(gin)]`: a GIN index over the whole document.
    pub gin: bool,
    /// `#[document(tenancy = "conjoined")]`: rows carry their tenant.
    pub conjoined: bool,
    /// `#[document(full_text)]` (`english`) or `#[document(full_text = "config")]`: the
    /// text search configuration of a full-text index, with its span.
    pub full_text: Option<(String, Span)>,
    /// `#[document(soft_delete)]`: deletes mark rows deleted, with the attribute's span.
    pub soft_delete: Option<Span>,
    /// `#[serde(rename_all = "...")]` or `#[serde(rename_all(serialize = "..."))]`: how
    /// serde writes the fields' keys (`None` without one, or with a rule serde rejects).
    pub rename_all: RenameRule,
    /// `#[serde(into = "..")]`, `#[serde(transparent)]` and `#[serde(remote = "..")]`, each
    /// with its span: options that make serde write something other than one key per
    /// field (refused on documents and queryable types, `check::container_serde`).
    pub reshaped: Vec<(ContainerSerde, Span)>,
}

/// A serde container option that replaces the JSON object of a struct's fields with
/// something else.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ContainerSerde {
    /// `into = ".."`: serialized as another type.
    Into,
    /// `transparent`: serialized as its one field's value.
    Transparent,
    /// `remote = ".."`: the serde impls are for another type.
    Remote,
}

impl ContainerSerde {
    fn from_path(path: &syn::Path) -> Option<Self> {
        let ident = path.get_ident()?;
        Some(match ident.to_string().as_str() {
            "into" => Self::Into,
            "transparent" => Self::Transparent,
            "remote" => Self::Remote,
            _ => return None,
        })
    }

    /// The option as it is written, e.g. `#[serde(into = "..")]`.
    pub fn shown(self) -> &'static str {
        match self {
            Self::Into => "#[serde(into = \"..\")]",
            Self::Transparent => "#[serde(transparent)]",
            Self::Remote => "#[serde(remote = \"..\")]",
        }
    }

    /// What serde writes for `ident` with the option, instead of one key per field.
    pub fn effect(self, ident: &Ident) -> String {
        match self {
            Self::Into => format!("`{ident}` as another type"),
            Self::Transparent => format!("`{ident}` as its one field's value"),
            Self::Remote => format!("another type with the fields of `{ident}`, and no `Serialize` for `{ident}` itself"),
        }
    }
}

impl Container {
    /// Parses the struct's attributes.
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut table = Attr::none("table");
        let mut mode = Attr::none("concurrency");
        let mut gin = Attr::none("gin");
        let mut tenancy = Attr::none("tenancy");
        let mut full_text = Attr::none("full_text");
        let mut soft_delete = Attr::none("soft_delete");
        let mut rename_all = RenameRule::None;
        let mut reshaped = Vec::new();
        for attr in attrs {
            if attr.path().is_ident("serde") {
                // Only what changes the JSON keys or the JSON's shape; other serde options
                // are serde's business, and so are its errors (serde's derive reports them).
                let _ = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("rename_all") {
                        if let Some(rule) = serde_serialize_str(&meta)? {
                            rename_all = RenameRule::from_name(&rule).unwrap_or_default();
                        }
                    } else {
                        if let Some(option) = ContainerSerde::from_path(&meta.path) {
                            reshaped.push((option, meta.path.span_of()));
                        }
                        skip_serde_meta(&meta)?;
                    }
                    Ok(())
                });
            } else if attr.path().is_ident("document") {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("table") {
                        let lit: LitStr = meta.value()?.parse()?;
                        table.set(cx, lit.span(), lit.value());
                        Ok(())
                    } else if meta.path.is_ident("gin") {
                        gin.set(cx, meta.path.span_of(), ());
                        Ok(())
                    } else if meta.path.is_ident("full_text") {
                        if meta.input.peek(syn::Token![=]) {
                            let lit: LitStr = meta.value()?.parse()?;
                            full_text.set(cx, lit.span(), lit.value());
                        } else {
                            full_text.set(cx, meta.path.span_of(), "english".to_owned());
                        }
                        Ok(())
                    } else if meta.path.is_ident("soft_delete") {
                        soft_delete.set(cx, meta.path.span_of(), ());
                        Ok(())
                    } else if meta.path.is_ident("tenancy") {
                        let lit: LitStr = meta.value()?.parse()?;
                        match lit.value().as_str() {
                            "conjoined" => tenancy.set(cx, lit.span(), true),
                            "single" => tenancy.set(cx, lit.span(), false),
                            other => cx.syn_error(syn::Error::new(
                                lit.span(),
                                format!("unknown tenancy `{other}`: expected `\"conjoined\"` or `\"single\"`"),
                            )),
                        }
                        Ok(())
                    } else if meta.path.is_ident("id") {
                        Err(meta.error("`#[document(id)]` belongs on a field, not on the struct"))
                    } else {
                        Err(meta.error(format!(
                            "unknown document attribute `{}`: expected `table = \"...\"`, `gin`, `full_text`, `soft_delete` or `tenancy = \"...\"`",
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
            gin: gin.get().is_some(),
            conjoined: tenancy.get().is_some_and(|(c, _)| c),
            full_text: full_text.get(),
            soft_delete: soft_delete.get().map(|(_, span)| span),
            rename_all,
            reshaped,
        }
    }
}

/// Attributes on a field.
pub struct Field {
    /// `#[document(id)]`, with its span.
    pub id: Option<Span>,
    /// `#[document(index)]`: duplicate into a typed, indexed column (with its span).
    pub index: Option<Span>,
    /// `#[document(unique)]`: like `index`, with a unique index (with its span).
    pub unique: Option<Span>,
    /// `#[query(nested)]`: the field is a struct with query fields of its own.
    pub nested: bool,
    /// `#[query(skip)]`: no query path for this field.
    pub skip: bool,
    /// `#[serde(rename = "...")]` or `#[serde(rename(serialize = "..."))]`: the key serde
    /// writes the field under.
    pub rename: Option<String>,
    /// The serde options that change whether or how serde writes or reads the field
    /// (`skip`, `with`, `flatten`, ...), each with its span, in the order written.
    pub serde: Vec<(SerdeField, Span)>,
}

impl Field {
    /// `#[document(index)]` or `#[document(unique)]`: the field has a column.
    pub fn indexed(&self) -> bool {
        self.index.is_some() || self.unique.is_some()
    }

    /// `#[document(unique)]` or `#[document(index)]` as written, if either is given.
    pub fn index_attr(&self) -> Option<&'static str> {
        if self.unique.is_some() {
            Some("#[document(unique)]")
        } else if self.index.is_some() {
            Some("#[document(index)]")
        } else {
            None
        }
    }
}

/// A serde field option that changes whether serde writes a field under its own key,
/// reads it back, or which code writes or reads its value: what marten's id, query paths
/// and index columns depend on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SerdeField {
    /// `skip`: neither written nor read.
    Skip,
    /// `skip_serializing`: never written.
    SkipSerializing,
    /// `skip_deserializing`: written, never read back.
    SkipDeserializing,
    /// `skip_serializing_if = ".."`: not written when the predicate holds.
    SkipSerializingIf,
    /// `with = ".."`: written and read by a module's functions.
    With,
    /// `serialize_with = ".."`: written by a function.
    SerializeWith,
    /// `deserialize_with = ".."`: read by a function.
    DeserializeWith,
    /// `getter = ".."`: written from a getter's value (remote types).
    Getter,
    /// `flatten`: its keys are written into the parent's object.
    Flatten,
}

impl SerdeField {
    fn from_path(path: &syn::Path) -> Option<Self> {
        let ident = path.get_ident()?;
        Some(match ident.to_string().as_str() {
            "skip" => Self::Skip,
            "skip_serializing" => Self::SkipSerializing,
            "skip_deserializing" => Self::SkipDeserializing,
            "skip_serializing_if" => Self::SkipSerializingIf,
            "with" => Self::With,
            "serialize_with" => Self::SerializeWith,
            "deserialize_with" => Self::DeserializeWith,
            "getter" => Self::Getter,
            "flatten" => Self::Flatten,
            _ => return None,
        })
    }

    /// The option as it is written, e.g. `#[serde(with = "..")]`.
    pub fn shown(self) -> &'static str {
        match self {
            Self::Skip => "#[serde(skip)]",
            Self::SkipSerializing => "#[serde(skip_serializing)]",
            Self::SkipDeserializing => "#[serde(skip_deserializing)]",
            Self::SkipSerializingIf => "#[serde(skip_serializing_if = \"..\")]",
            Self::With => "#[serde(with = \"..\")]",
            Self::SerializeWith => "#[serde(serialize_with = \"..\")]",
            Self::DeserializeWith => "#[serde(deserialize_with = \"..\")]",
            Self::Getter => "#[serde(getter = \"..\")]",
            Self::Flatten => "#[serde(flatten)]",
        }
    }

    /// The option's key alone, e.g. `with`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::SkipSerializing => "skip_serializing",
            Self::SkipDeserializing => "skip_deserializing",
            Self::SkipSerializingIf => "skip_serializing_if",
            Self::With => "with",
            Self::SerializeWith => "serialize_with",
            Self::DeserializeWith => "deserialize_with",
            Self::Getter => "getter",
            Self::Flatten => "flatten",
        }
    }

    /// serde never writes the field's value under the field's own key.
    pub fn never_written(self) -> bool {
        matches!(self, Self::Skip | Self::SkipSerializing | Self::Flatten)
    }

    /// serde writes the field's value with other code than its type's `Serialize` (which
    /// is what writes query values).
    pub fn custom_serialize(self) -> bool {
        matches!(self, Self::With | Self::SerializeWith | Self::Getter)
    }
}

impl Field {
    /// Parses a field's attributes.
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut id = Attr::none("id");
        let mut index = Attr::none("index");
        let mut unique = Attr::none("unique");
        let mut nested = Attr::none("nested");
        let mut skip = Attr::none("skip");
        let mut rename = None;
        let mut serde = Vec::new();
        for attr in attrs {
            if attr.path().is_ident("document") {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("id") {
                        id.set(cx, meta.path.span_of(), ());
                        Ok(())
                    } else if meta.path.is_ident("index") {
                        index.set(cx, meta.path.span_of(), ());
                        Ok(())
                    } else if meta.path.is_ident("unique") {
                        unique.set(cx, meta.path.span_of(), ());
                        Ok(())
                    } else {
                        Err(meta.error(format!(
                            "unknown document field attribute `{}`: expected `id`, `index` or `unique`",
                            path_name(&meta.path)
                        )))
                    }
                });
                if let Err(e) = result {
                    cx.syn_error(e);
                }
            } else if attr.path().is_ident("query") {
                let result = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("nested") {
                        nested.set(cx, meta.path.span_of(), ());
                        Ok(())
                    } else if meta.path.is_ident("skip") {
                        skip.set(cx, meta.path.span_of(), ());
                        Ok(())
                    } else {
                        Err(meta.error(format!(
                            "unknown query attribute `{}`: expected `nested` or `skip`",
                            path_name(&meta.path)
                        )))
                    }
                });
                if let Err(e) = result {
                    cx.syn_error(e);
                }
            } else if attr.path().is_ident("serde") {
                // Only what changes the JSON key or whether and how the value is written
                // and read; other serde options are serde's business, and so are its errors.
                let _ = attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("rename") {
                        if let Some(name) = serde_serialize_str(&meta)? {
                            rename = Some(name);
                        }
                    } else {
                        if let Some(option) = SerdeField::from_path(&meta.path) {
                            serde.push((option, meta.path.span_of()));
                        }
                        skip_serde_meta(&meta)?;
                    }
                    Ok(())
                });
            }
        }
        Field {
            id: id.get().map(|(_, span)| span),
            index: index.get().map(|(_, span)| span),
            unique: unique.get().map(|(_, span)| span),
            nested: nested.get().is_some(),
            skip: skip.get().is_some(),
            rename,
            serde,
        }
    }
}

/// The serialize side of a serde name attribute, as serde reads it: `key = "..."` (both
/// sides) or `key(serialize = "...", deserialize = "...")`. A value that is not a string
/// literal (serde's error) is `None`.
fn serde_serialize_str(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<Option<String>> {
    if meta.input.peek(syn::Token![=]) {
        return Ok(serde_lit_str(meta.value()?.parse()?));
    }
    let mut out = None;
    if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| {
            let value: syn::Expr = inner.value()?.parse()?;
            if inner.path.is_ident("serialize") {
                out = serde_lit_str(value);
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// A string literal, through the invisible groups a `macro_rules!` fragment puts around
/// it (as serde reads it).
fn serde_lit_str(mut expr: syn::Expr) -> Option<String> {
    while let syn::Expr::Group(g) = expr {
        expr = *g.expr;
    }
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Some(lit.value()),
        _ => None,
    }
}

/// Steps over a serde option marten does not read: `key`, `key = value` or `key(...)`.
fn skip_serde_meta(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in meta.input);
    }
    Ok(())
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
    /// `#[event(aliases = ["old_name", ...])]`: former stored names, each with its span.
    pub aliases: Vec<(String, Span)>,
}

impl Event {
    /// Parses an event type's attributes.
    pub fn from_ast(cx: &Ctxt, attrs: &[Attribute]) -> Self {
        let mut name = Attr::none("name");
        let mut aliases = Attr::none("aliases");
        for attr in attrs {
            if !attr.path().is_ident("event") {
                continue;
            }
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let lit: LitStr = meta.value()?.parse()?;
                    name.set(cx, lit.span(), lit.value());
                    Ok(())
                } else if meta.path.is_ident("aliases") {
                    let span = meta.path.span_of();
                    let list = parse_aliases(meta.value()?)?;
                    aliases.set(cx, span, list);
                    Ok(())
                } else {
                    Err(meta.error(format!(
                        "unknown event attribute `{}`: expected `name = \"...\"` or `aliases = [\"...\"]`",
                        path_name(&meta.path)
                    )))
                }
            });
            if let Err(e) = result {
                cx.syn_error(e);
            }
        }
        Event {
            name: name.get(),
            aliases: aliases.get().map(|(a, _)| a).unwrap_or_default(),
        }
    }
}

/// `["a", "b"]`: string literals, each once (what they may hold is checked with the
/// event's name, `check::event_names`).
fn parse_aliases(input: syn::parse::ParseStream<'_>) -> syn::Result<Vec<(String, Span)>> {
    let content;
    syn::bracketed!(content in input);
    let lits = content.parse_terminated(|p| p.parse::<LitStr>(), syn::Token![,])?;
    let mut out: Vec<(String, Span)> = Vec::new();
    for lit in lits {
        let value = lit.value();
        if out.iter().any(|(v, _)| *v == value) {
            return Err(syn::Error::new(
                lit.span(),
                format!("duplicate event alias {value:?}"),
            ));
        }
        out.push((value, lit.span()));
    }
    Ok(out)
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
