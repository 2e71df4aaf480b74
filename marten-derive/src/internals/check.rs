//! Checks on the parsed model that need more than one attribute to decide.

use proc_macro2::Span;

use super::ast::{Container, Field};
use super::attr::{self, SerdeField};
use super::ctxt::Ctxt;

/// Finds the id field: the one marked `#[document(id)]`, else the one named `id`.
/// Reports a second `#[document(id)]` at its own span and a missing id at the struct name.
pub fn id_field<'c, 'a>(cx: &Ctxt, cont: &'c Container<'a>) -> Option<&'c Field<'a>> {
    let mut marked: Option<&Field> = None;
    for field in &cont.fields {
        if let Some(span) = field.attrs.id {
            match marked {
                Some(first) => cx.syn_error(syn::Error::new(
                    span,
                    format!(
                        "a document has one id: `{}` is already marked #[document(id)]",
                        first.ident
                    ),
                )),
                None => marked = Some(field),
            }
        }
    }
    if marked.is_some() {
        return marked;
    }
    let named = cont.fields.iter().find(|f| f.ident == "id");
    if named.is_none() {
        cx.error_spanned_by(
            cont.ident,
            format!(
                "document `{}` has no id: add a field named `id` or mark one with #[document(id)]",
                cont.ident
            ),
        );
    }
    named
}

/// Refuses the serde options on the id field that would make a loaded document's id
/// differ from the id it was stored under. Loads decode the `data` column alone, so the id
/// is read back from the JSON serde wrote: serde has to write it, read it, and do both as
/// the id type's own serde impls do (the `id` column is written from `Document::id`).
/// Each option is reported at its span.
pub fn id_serde(cx: &Ctxt, id: &Field) {
    for (option, span) in &id.attrs.serde {
        let consequence = match option {
            SerdeField::Skip | SerdeField::SkipDeserializing => {
                "a loaded document would carry a default id, and storing it again would write a second row"
            }
            SerdeField::SkipSerializing => {
                "the stored JSON would have no id, and every load of the document would fail"
            }
            SerdeField::SkipSerializingIf => {
                "the stored JSON would sometimes have no id, and loading such a document would fail"
            }
            SerdeField::With
            | SerdeField::SerializeWith
            | SerdeField::DeserializeWith
            | SerdeField::Getter => {
                "the JSON would not hold the id as the id type writes it, and a loaded document could carry another id than the one it was stored under"
            }
            SerdeField::Flatten => "an id is one value, not an object whose keys serde could flatten",
        };
        cx.syn_error(syn::Error::new(
            *span,
            format!(
                "`{}` cannot be used on the id field `{}`: marten reads a loaded document's id back from its JSON, so serde must write and read the id as the id type does; with it, {consequence}; remove `{}`",
                option.shown(),
                id.ident,
                option.key(),
            ),
        ));
    }
}

/// Refuses the serde options on an aggregate's version field that would load it with
/// another version than the one its projection stored: the daemon and inline projections
/// read the version back from the JSON to know which of the stream's events the document
/// already holds, so a lost version would have events folded into it twice. Each option
/// is reported at its span.
pub fn version_serde(cx: &Ctxt, version: &Field) {
    for (option, span) in &version.attrs.serde {
        let Some(consequence) = version_consequence(*option) else {
            continue;
        };
        cx.syn_error(syn::Error::new(
            *span,
            format!(
                "`{}` cannot be used on the aggregate version field `{}`: projections read the version back from the stored JSON to know which events the aggregate already holds; with it, {consequence}, and events would be applied twice; remove `{}`",
                option.shown(),
                version.ident,
                option.key(),
            ),
        ));
    }
}

/// What `option` on an aggregate's version field would do to a loaded version, when
/// [`version_serde`] refuses it (`None`: checked there as on any field, see
/// `fields::check`: a queried or indexed version must be written by its type's own
/// `Serialize`).
pub fn version_consequence(option: SerdeField) -> Option<&'static str> {
    Some(match option {
        SerdeField::Skip | SerdeField::SkipDeserializing => {
            "a loaded aggregate would carry version 0"
        }
        SerdeField::SkipSerializing => "the stored JSON would have no version",
        SerdeField::SkipSerializingIf => "the stored JSON would sometimes have no version",
        SerdeField::Flatten => {
            "a version is one number, not an object whose keys serde could flatten"
        }
        SerdeField::With
        | SerdeField::SerializeWith
        | SerdeField::DeserializeWith
        | SerdeField::Getter => return None,
    })
}

/// Refuses the container serde options that replace the JSON object of a struct's fields
/// (`into`, `transparent`, `remote`) on a type marten reads by its fields, derived with
/// `derive` (`Document`, `Aggregate`, `Queryable`): its id, query paths and index columns
/// are read from that object's keys. Each option is reported at its span.
pub fn container_serde(cx: &Ctxt, cont: &Container, derive: &str) {
    let ident = cont.ident;
    let reads = if derive == "Queryable" {
        format!("marten's query paths into `{ident}` follow")
    } else {
        format!("marten reads the id, query paths and indexed columns of `{ident}` from")
    };
    for (option, span) in &cont.attrs.reshaped {
        cx.syn_error(syn::Error::new(
            *span,
            format!(
                "`{}` cannot be used with #[derive({derive})]: serde would write {}, but {reads} a JSON object with one key per field; remove it",
                option.shown(),
                option.effect(ident),
            ),
        ));
    }
}

/// Rejects generic documents: each document type needs its own statics.
pub fn no_generics(cx: &Ctxt, cont: &Container) {
    let generics = &cont.original.generics;
    if !generics.params.is_empty() {
        cx.error_spanned_by(
            generics,
            "documents cannot be generic: each document type has its own table and statements",
        );
    }
}

/// Checks a table name: lower-case letters, digits and underscores, starting with a letter
/// or underscore, at most 63 bytes (PostgreSQL's identifier limit).
pub fn table_name(cx: &Ctxt, cont: &Container) {
    if let Some((name, span)) = &cont.attrs.table {
        if !is_identifier(name) {
            cx.syn_error(syn::Error::new(
                *span,
                format!(
                    "invalid table name {name:?}: use lower-case letters, digits and underscores, starting with a letter, at most 63 characters"
                ),
            ));
        } else if RESERVED_WORDS.binary_search(&name.as_str()).is_ok() {
            cx.syn_error(syn::Error::new(
                *span,
                format!(
                    "table name {name:?} is a reserved word in PostgreSQL: choose another name (or leave the default, `mt_doc_` and the type's name)"
                ),
            ));
        }
    }
}

/// Checks a full-text configuration name (`#[document(full_text = "...")]`): a plain
/// lower-case identifier, as PostgreSQL names its text search configurations (`english`,
/// `simple`, `french`), so it can be written into the index and its queries as a literal.
pub fn full_text_config(cx: &Ctxt, cont: &Container) {
    if let Some((name, span)) = &cont.attrs.full_text {
        if !is_identifier(name) {
            cx.syn_error(syn::Error::new(
                *span,
                format!(
                    "invalid text search configuration {name:?}: name a PostgreSQL configuration (`english`, `simple`, `french`, ...) in lower-case letters, digits and underscores"
                ),
            ));
        }
    }
}

/// Checks an event's `#[event(name = "...")]` and `aliases`: stored names, see
/// [`stored_name`].
pub fn event_names(cx: &Ctxt, attrs: &attr::Event) {
    if let Some((name, span)) = &attrs.name {
        stored_name(cx, "an event name", name, *span);
    }
    for (alias, span) in &attrs.aliases {
        stored_name(cx, "an event alias", alias, *span);
    }
}

/// Checks a name marten stores and matches as text (an event's name or alias, a tag's
/// name), reporting at `span`: not empty or blank, and no control characters, NUL among
/// them (PostgreSQL's text cannot hold NUL; the others would be invisible in every
/// listing of stored names).
pub fn stored_name(cx: &Ctxt, what: &str, name: &str, span: Span) {
    if name.is_empty() {
        cx.syn_error(syn::Error::new(span, format!("{what} must not be empty")));
    } else if name.trim().is_empty() {
        cx.syn_error(syn::Error::new(
            span,
            format!("{what} must not be blank: {name:?} is only white space"),
        ));
    } else if let Some(c) = name.chars().find(|c| c.is_control()) {
        let nul = if c == '\0' { " (NUL)" } else { "" };
        cx.syn_error(syn::Error::new(
            span,
            format!(
                "{what} must not contain control characters: {name:?} contains U+{:04X}{nul}",
                u32::from(c)
            ),
        ));
    }
}

/// PostgreSQL 15's reserved key words and those that cannot name a table
/// (`pg_get_keywords()` categories `R` and `T`), sorted. Statements use table names
/// unquoted, so these cannot be table names.
const RESERVED_WORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// Whether `s` is a plain lower-case SQL identifier that needs no quoting.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// Types that are never ids, by the last segment of their path: reported by name at the
/// id's type, before any trait bound is checked.
const NEVER_IDS: &[&str] = &[
    "f32",
    "f64",
    "bool",
    "char",
    "str",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "usize",
    "i8",
    "i16",
    "i128",
    "isize",
    "Option",
    "Vec",
    "Box",
    "Rc",
    "Arc",
    "HashMap",
    "BTreeMap",
    "OffsetDateTime",
    "Value",
];

/// The last segment of a plain path type, `None` for anything else (a reference, tuple,
/// array, qualified path).
fn type_name(ty: &syn::Type) -> Option<String> {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => {
            p.path.segments.last().map(|s| s.ident.to_string())
        }
        syn::Type::Group(g) => type_name(&g.elem),
        _ => None,
    }
}

/// Checks the id field's type: `Uuid`, `i64`, `i32` or `String` (`aggregate`: `Uuid` or
/// `String`, the stream id types) pass, a type known not to be an id (a float, another
/// integer, an `Option`, a reference, ...) is reported by name, and any other named type
/// (a strong-typed id, `#[derive(DocumentId)] struct OrderId(Uuid)`, or an alias) is left
/// to the `DocumentId` / `AggregateId` bound, which the generated code asserts at the
/// type's span.
pub fn id_type(cx: &Ctxt, id: &Field, aggregate: bool) {
    let refused: &[&str] = if aggregate { &["i64", "i32"] } else { &[] };
    let rejected = match type_name(id.ty) {
        Some(name) => NEVER_IDS.contains(&name.as_str()) || refused.contains(&name.as_str()),
        None => true,
    };
    if rejected {
        let shown = quote::ToTokens::to_token_stream(id.ty).to_string();
        let message = if aggregate {
            format!("unsupported aggregate id type `{shown}`: an aggregate's id is its stream id, a `Uuid` or a `String` (or a `#[derive(DocumentId)]` newtype over one)")
        } else {
            format!("unsupported id type `{shown}`: a document id is a `Uuid`, `i64`, `i32` or `String` (or a `#[derive(DocumentId)]` newtype over one)")
        };
        cx.error_spanned_by(id.ty, message);
    }
}

/// Checks the inner type of a strong-typed id the way [`id_type`] checks a document's
/// id: a type known not to be an id is reported by name at its span.
pub fn newtype_inner(cx: &Ctxt, ty: &syn::Type) {
    let rejected = type_name(ty).is_none_or(|name| NEVER_IDS.contains(&name.as_str()));
    if rejected {
        let shown = quote::ToTokens::to_token_stream(ty).to_string();
        cx.error_spanned_by(
            ty,
            format!("unsupported inner type `{shown}`: a strong-typed id wraps a `Uuid`, `i64`, `i32` or `String`"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{newtype_inner, Ctxt};

    #[test]
    fn reserved_words_are_sorted_for_binary_search() {
        assert!(super::RESERVED_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    fn inner_refused(ty: &str) -> bool {
        let ty: syn::Type = syn::parse_str(ty).expect("a type");
        let cx = Ctxt::new();
        newtype_inner(&cx, &ty);
        cx.check().is_err()
    }

    #[test]
    fn a_newtype_wraps_an_id_type_by_any_path_or_an_unknown_named_type() {
        for ok in [
            "Uuid",
            "uuid::Uuid",
            "i64",
            "i32",
            "String",
            "std::string::String",
            "MyAlias",
        ] {
            assert!(!inner_refused(ok), "{ok}");
        }
        for bad in [
            "f64",
            "u64",
            "bool",
            "Option<i64>",
            "Vec<u8>",
            "&'static str",
            "(i64, i64)",
            "[u8; 16]",
        ] {
            assert!(inner_refused(bad), "{bad}");
        }
    }
}
