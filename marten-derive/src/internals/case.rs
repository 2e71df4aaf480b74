//! serde's `rename_all` rules, as serde_derive applies them to struct fields: the JSON
//! key a field is written under, and so the key marten's typed queries must name.
//!
//! The rules follow serde_derive (`internals/case.rs`) exactly, quirks included: on a
//! field, `lowercase` and `snake_case` leave the name as it is (a field is taken to be
//! snake case already), and only ASCII letters change case (`straße` in `UPPERCASE` is
//! `STRAßE`, `first_ärger` in `camelCase` is `firstärger`). Anything else would make a
//! query name a key serde never writes, and match nothing.

/// A `rename_all` rule, by its name in the attribute.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum RenameRule {
    /// No `rename_all`: fields keep their names.
    #[default]
    None,
    /// `"lowercase"`
    LowerCase,
    /// `"UPPERCASE"`
    UpperCase,
    /// `"PascalCase"`
    PascalCase,
    /// `"camelCase"`
    CamelCase,
    /// `"snake_case"`
    SnakeCase,
    /// `"SCREAMING_SNAKE_CASE"`
    ScreamingSnakeCase,
    /// `"kebab-case"`
    KebabCase,
    /// `"SCREAMING-KEBAB-CASE"`
    ScreamingKebabCase,
}

/// The rules by the names serde accepts (and no others: serde rejects the rest).
const RULES: &[(&str, RenameRule)] = &[
    ("lowercase", RenameRule::LowerCase),
    ("UPPERCASE", RenameRule::UpperCase),
    ("PascalCase", RenameRule::PascalCase),
    ("camelCase", RenameRule::CamelCase),
    ("snake_case", RenameRule::SnakeCase),
    ("SCREAMING_SNAKE_CASE", RenameRule::ScreamingSnakeCase),
    ("kebab-case", RenameRule::KebabCase),
    ("SCREAMING-KEBAB-CASE", RenameRule::ScreamingKebabCase),
];

impl RenameRule {
    /// The rule serde names `name`; `None` for a name serde does not know (serde's derive
    /// reports it).
    pub fn from_name(name: &str) -> Option<Self> {
        RULES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
    }

    /// The key serde writes for a struct field named `field` (the name without `r#`).
    pub fn apply_to_field(self, field: &str) -> String {
        match self {
            RenameRule::None | RenameRule::LowerCase | RenameRule::SnakeCase => field.to_owned(),
            RenameRule::UpperCase | RenameRule::ScreamingSnakeCase => field.to_ascii_uppercase(),
            RenameRule::PascalCase => pascal(field),
            RenameRule::CamelCase => {
                // serde lower-cases the first byte of the Pascal form; for a form that is
                // empty or starts outside ASCII, serde's derive panics, so that field
                // never compiles and its key here does not matter.
                let mut out = pascal(field);
                if let Some(first) = out.get_mut(..1) {
                    first.make_ascii_lowercase();
                }
                out
            }
            RenameRule::KebabCase => field.replace('_', "-"),
            RenameRule::ScreamingKebabCase => field.to_ascii_uppercase().replace('_', "-"),
        }
    }
}

/// Underscores dropped, the character after each (and the first) ASCII upper-cased, the
/// rest as they are.
fn pascal(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut capitalize = true;
    for c in field.chars() {
        if c == '_' {
            capitalize = true;
        } else if capitalize {
            out.push(c.to_ascii_uppercase());
            capitalize = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::RenameRule::{self, *};

    #[test]
    fn every_serde_rule_name_parses_and_no_other() {
        for (name, rule) in super::RULES {
            assert_eq!(RenameRule::from_name(name), Some(*rule));
        }
        for other in [
            "",
            "camelcase",
            "Lowercase",
            "snake-case",
            "SCREAMING_KEBAB_CASE",
        ] {
            assert!(RenameRule::from_name(other).is_none(), "{other}");
        }
    }

    /// serde_derive's own table (`rename_fields` in its `case.rs`).
    #[test]
    fn serde_field_table() {
        for &(original, upper, pascal, camel, screaming, kebab, screaming_kebab) in &[
            (
                "outcome", "OUTCOME", "Outcome", "outcome", "OUTCOME", "outcome", "OUTCOME",
            ),
            (
                "very_tasty",
                "VERY_TASTY",
                "VeryTasty",
                "veryTasty",
                "VERY_TASTY",
                "very-tasty",
                "VERY-TASTY",
            ),
            ("a", "A", "A", "a", "A", "a", "A"),
            ("z42", "Z42", "Z42", "z42", "Z42", "z42", "Z42"),
        ] {
            assert_eq!(None.apply_to_field(original), original);
            assert_eq!(LowerCase.apply_to_field(original), original);
            assert_eq!(UpperCase.apply_to_field(original), upper);
            assert_eq!(PascalCase.apply_to_field(original), pascal);
            assert_eq!(CamelCase.apply_to_field(original), camel);
            assert_eq!(SnakeCase.apply_to_field(original), original);
            assert_eq!(ScreamingSnakeCase.apply_to_field(original), screaming);
            assert_eq!(KebabCase.apply_to_field(original), kebab);
            assert_eq!(ScreamingKebabCase.apply_to_field(original), screaming_kebab);
        }
    }

    /// Names where a Unicode-aware or word-splitting rule would differ from serde's
    /// (checked against serde_json in `tests/derive_naming.rs`).
    #[test]
    fn awkward_fields() {
        let cases: &[(RenameRule, &str, &str)] = &[
            (LowerCase, "userName", "userName"),
            (LowerCase, "ÄRGER", "ÄRGER"),
            (SnakeCase, "userName", "userName"),
            (UpperCase, "straße", "STRAßE"),
            (UpperCase, "über_x", "üBER_X"),
            (ScreamingSnakeCase, "a__b_", "A__B_"),
            (CamelCase, "first_ärger", "firstärger"),
            (CamelCase, "_leading", "leading"),
            (CamelCase, "a__b", "aB"),
            (CamelCase, "trailing_", "trailing"),
            (CamelCase, "x1_2y", "x12y"),
            (CamelCase, "userName", "userName"),
            (CamelCase, "Already", "already"),
            (PascalCase, "ärger_first", "ärgerFirst"),
            (PascalCase, "_a_b_", "AB"),
            (PascalCase, "v2_beta", "V2Beta"),
            (KebabCase, "__double__", "--double--"),
            (KebabCase, "userName", "userName"),
            (ScreamingKebabCase, "straße_x", "STRAßE-X"),
            (ScreamingKebabCase, "_a", "-A"),
        ];
        for (rule, field, key) in cases {
            assert_eq!(rule.apply_to_field(field), *key, "{rule:?} {field}");
        }
    }

    /// Where serde's derive panics (no ASCII first letter to lower-case), this does not.
    #[test]
    fn camel_case_without_an_ascii_first_letter_does_not_panic() {
        assert_eq!(CamelCase.apply_to_field("__"), "");
        assert_eq!(CamelCase.apply_to_field("ärger"), "ärger");
    }
}
