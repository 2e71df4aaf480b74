//! The placeholder scanner and the rendering of the query DSL: examples for each place a
//! `$` may stand, and properties over generated fragments and filter trees.

use marten_core::query::{CompareOp, Node, Path, RawParam, TextOp, ValueKind};
use proptest::prelude::*;

use super::placeholders::renumber;
use super::{collect, render, ShapeKey, Sql};

#[test]
fn placeholders_shift_by_the_offset() {
    assert_eq!(
        renumber("$1 + $2 = $1", 3, 2).as_deref(),
        Ok("$4 + $5 = $4")
    );
    assert_eq!(
        renumber("x = $1::bigint", 0, 1).as_deref(),
        Ok("x = $1::bigint")
    );
    assert_eq!(
        renumber("f($10, $1, $2, $3, $4, $5, $6, $7, $8, $9)", 1, 10).as_deref(),
        Ok("f($11, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
    );
}

#[test]
fn dollar_signs_that_are_not_placeholders_stay() {
    // `@` marks the one placeholder: `$1` in the input, `$6` after a shift by 5.
    let same = |s: &str| {
        let shifted = renumber(&s.replace('@', "$1"), 5, 1);
        assert_eq!(shifted, Ok(s.replace('@', "$6")), "{s}");
    };
    same("'$1' = @");
    same("'it''s $1' = @");
    same("E'it\\'s $1' = @");
    same("e'\\\\' = @ AND '$1'");
    same("\"col $1\" = @");
    same("\"it\"\"s $1\" = @");
    same("@ -- it's $1\n AND true");
    same("@ -- it's $1 to the end");
    same("/* it's $1 /* nested $2 */ still $3 */ @");
    same("$$it's $1$$ = @");
    same("$q$it's $1 $$ $q$ = @");
    same("$q1$ $q$ $q1$ = @");
    same("a$1 = @");
    same("@ AND x$1$2 > 0");
    same("name'x' = @");
}

#[test]
fn placeholders_must_match_the_parameters() {
    for (s, n) in [
        ("$0", 0),
        ("$0 = $1", 1),
        ("$2", 1),
        ("$1", 0),
        ("x", 1),
        ("$1", 2),
        ("$99999999999999999999999", 1),
        ("'open", 0),
        ("\"open", 0),
        ("/* open /* */", 0),
        ("$q$ open", 0),
        ("E'open\\'", 0),
    ] {
        assert!(renumber(s, 3, n).is_err(), "{s} with {n} parameters");
    }
}

#[test]
fn parentheses_must_balance_outside_quotes_and_comments() {
    for s in [
        "TRUE) OR (TRUE",
        ")",
        "(",
        "((x)",
        "x = 1) --",
        "'(' = $$)$$ AND (x",
        // A `--` comment ends at a carriage return too: the `)` after it is code.
        "d.data->>'name' = 'x' --\r) OR (TRUE",
        // An escape string continued after a line break keeps its backslash escapes:
        // `\'` in the continuation is a quote, so ` ) OR (TRUE --` is code.
        "d.data->>'name' = E'a'\n'\\' || ' ) OR (TRUE --'",
    ] {
        assert!(renumber(s, 0, 0).is_err(), "{s}");
    }
    for s in [
        "(a) AND (b OR (c))",
        "')' = x",
        "\")(\" = x",
        "x -- )\n",
        "x /* ) */",
        "$$)$$ = x",
        "E'\\')' = x",
    ] {
        assert_eq!(renumber(s, 0, 0).as_deref(), Ok(s), "{s}");
    }
}

/// A piece of a raw fragment: how it is written, and whether it is placeholder `$k`.
#[derive(Debug, Clone)]
enum Tok {
    Text(String),
    Placeholder(usize),
}

fn body(chars: &'static [char]) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(chars), 0..8)
        .prop_map(|v| v.into_iter().collect())
}

fn token() -> impl Strategy<Value = Tok> {
    const ANY: &[char] = &[
        'a', 'q', '$', '1', '2', '\'', '"', '-', '/', '*', ' ', 'E', '\\',
    ];
    prop_oneof![
        3 => (1usize..6).prop_map(Tok::Placeholder),
        2 => proptest::sample::select(vec!["d.id", "=", "AND", "12", "::bigint", "a$1", "x$$", "e", "(", ")"])
            .prop_map(|w| Tok::Text(w.to_owned())),
        1 => body(ANY).prop_map(|b| Tok::Text(format!("'{}'", b.replace('\'', "''").replace('\\', "")))),
        1 => body(ANY).prop_map(|b| Tok::Text(format!("E'{}'", b.replace('\\', "\\\\").replace('\'', "\\'")))),
        1 => body(ANY).prop_map(|b| Tok::Text(format!("\"{}\"", b.replace('"', "\"\"")))),
        1 => body(&['a', '$', '1', '\'', '"', '-', ' ', 'E']).prop_map(|b| Tok::Text(format!("-- {b}\n"))),
        1 => body(&['a', '$', '1', '\'', '"', '-', ' ', 'E']).prop_map(|b| Tok::Text(format!("/* {b} /* {b} */ */"))),
        1 => body(&['a', '1', '\'', '"', '-', ' ', '*', '/']).prop_map(|b| Tok::Text(format!("$${b}$$"))),
        1 => body(ANY).prop_map(|b| Tok::Text(format!("$q$${}$q$", b.replace('q', "")))),
    ]
}

/// Writes tokens with placeholders renumbered densely (1..=m in order of size), and
/// returns the fragment, the expected output at `offset`, and m.
fn write(tokens: &[Tok], offset: usize) -> (String, String, usize) {
    let mut used: Vec<usize> = tokens
        .iter()
        .filter_map(|t| match t {
            Tok::Placeholder(k) => Some(*k),
            Tok::Text(_) => None,
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    let rank = |k: usize| used.iter().position(|u| *u == k).map_or(0, |p| p + 1);
    let (mut input, mut expected) = (Vec::new(), Vec::new());
    // Parentheses balance: a `)` with none open is left out, the open ones are closed.
    let mut depth = 0usize;
    for t in tokens {
        match t {
            Tok::Text(s) if s == ")" && depth == 0 => {}
            Tok::Text(s) => {
                match s.as_str() {
                    "(" => depth += 1,
                    ")" => depth -= 1,
                    _ => {}
                }
                input.push(s.clone());
                expected.push(s.clone());
            }
            Tok::Placeholder(k) => {
                input.push(format!("${}", rank(*k)));
                expected.push(format!("${}", rank(*k) + offset));
            }
        }
    }
    input.extend(std::iter::repeat_n(")".to_owned(), depth));
    expected.extend(std::iter::repeat_n(")".to_owned(), depth));
    (input.join(" "), expected.join(" "), used.len())
}

fn tokens() -> impl Strategy<Value = Vec<Tok>> {
    proptest::collection::vec(token(), 0..12)
}

proptest! {
    #[test]
    fn renumbering_shifts_exactly_the_placeholders(toks in tokens(), offset in 0usize..40) {
        let (input, expected, m) = write(&toks, offset);
        prop_assert_eq!(renumber(&input, offset, m), Ok(expected));
        // One parameter more is unused; one fewer leaves a placeholder without one.
        prop_assert!(renumber(&input, offset, m + 1).is_err());
        if m > 0 {
            prop_assert!(renumber(&input, offset, m - 1).is_err());
        }
    }

    #[test]
    fn rendered_filters_number_their_placeholders_one_to_n(node in node()) {
        let mut sql = Sql::default();
        let text = render(&node, false, &mut sql);
        prop_assert!(sql.invalid.is_none(), "{:?}", sql.invalid);
        // Every placeholder outside quoted text is one of $1..=$n and each is used.
        prop_assert_eq!(renumber(&text, 0, sql.params.len()), Ok(text.clone()));
    }

    #[test]
    fn an_invalid_fragment_makes_the_query_invalid(toks in tokens(), extra in 1usize..3) {
        let (input, _, m) = write(&toks, 0);
        let node = Node::And(vec![
            Node::Raw { sql: input, params: vec![RawParam::Int(0); m + extra] },
        ]);
        let mut sql = Sql::default();
        let _ = render(&node, false, &mut sql);
        prop_assert!(sql.check().is_err());
    }
}

const KEYS: &[&str] = &["a", "it's", "$1", "x\"y", "-- c", "/* c", "$q$", "E'"];

fn path() -> impl Strategy<Value = Path> {
    let column = prop_oneof![
        Just(None),
        Just(Some(("mt_f_a", "text"))),
        Just(Some(("mt_f_n", "bigint"))),
    ];
    (
        proptest::collection::vec(proptest::sample::select(KEYS), 1..3),
        column,
    )
        .prop_map(|(segments, column)| Path { segments, column })
}

fn value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        "[a$1' \"-]{0,6}".prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ]
}

fn leaf() -> impl Strategy<Value = Node> {
    let op = proptest::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ]);
    let kind = proptest::sample::select(vec![
        ValueKind::Json,
        ValueKind::Text,
        ValueKind::Number,
        ValueKind::Bool,
    ]);
    let text_op = proptest::sample::select(vec![
        TextOp::StartsWith,
        TextOp::EndsWith,
        TextOp::Contains,
        TextOp::EqIgnoreCase,
    ]);
    prop_oneof![
        (path(), op, kind.clone(), value()).prop_map(|(path, op, kind, value)| Node::Compare {
            path,
            op,
            kind,
            value
        }),
        (path(), text_op, "[a$1' ]{0,4}").prop_map(|(path, op, value)| Node::Text {
            path,
            op,
            value
        }),
        (path(), any::<bool>()).prop_map(|(path, negated)| Node::IsNull { path, negated }),
        (
            path(),
            kind.clone(),
            proptest::collection::vec(value(), 0..3)
        )
            .prop_map(|(path, kind, values)| Node::OneOf { path, kind, values }),
        (path(), value()).prop_map(|(path, value)| Node::Contains { path, value }),
        path().prop_map(|path| Node::IsEmpty { path }),
        tokens().prop_map(|toks| {
            let (sql, _, m) = write(&toks, 0);
            Node::Raw {
                sql,
                params: vec![RawParam::Text("$1".into()); m],
            }
        }),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Node::And),
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Node::Or),
            inner.clone().prop_map(|n| Node::Not(Box::new(n))),
            (path(), inner).prop_map(|(path, n)| Node::Any {
                path,
                inner: Box::new(n)
            }),
        ]
    })
}

/// Fresh values for a tree: numbers, texts and booleans, taken in turn.
#[derive(Debug, Clone)]
struct Fresh {
    numbers: Vec<i64>,
    texts: Vec<String>,
    bools: Vec<bool>,
    /// Whether a value keeps its JSON type (else it takes the next fresh value of any type).
    same_type: bool,
    next: usize,
}

impl Fresh {
    fn value(&mut self, old: &serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let i = self.next;
        let number = serde_json::Value::from(self.numbers[i % self.numbers.len()]);
        let text = serde_json::Value::from(self.texts[i % self.texts.len()].clone());
        let boolean = serde_json::Value::from(self.bools[i % self.bools.len()]);
        match (self.same_type, old) {
            (true, serde_json::Value::Number(_)) => number,
            (true, serde_json::Value::String(_)) => text,
            (true, serde_json::Value::Bool(_)) => boolean,
            (true, other) => other.clone(),
            (false, _) => [number, text, boolean, serde_json::Value::Null][i % 4].clone(),
        }
    }

    fn text(&mut self) -> String {
        self.next += 1;
        self.texts[self.next % self.texts.len()].clone()
    }

    /// `node` with every value replaced.
    fn revalue(&mut self, node: &Node) -> Node {
        match node {
            Node::Compare {
                path,
                op,
                kind,
                value,
            } => Node::Compare {
                path: path.clone(),
                op: *op,
                kind: *kind,
                value: self.value(value),
            },
            Node::OneOf { path, kind, values } => Node::OneOf {
                path: path.clone(),
                kind: *kind,
                values: values.iter().map(|v| self.value(v)).collect(),
            },
            Node::Text { path, op, .. } => Node::Text {
                path: path.clone(),
                op: *op,
                value: self.text(),
            },
            Node::Contains { path, value } => Node::Contains {
                path: path.clone(),
                value: self.value(value),
            },
            Node::Raw { sql, params } => Node::Raw {
                sql: sql.clone(),
                params: params.iter().map(|_| RawParam::Text(self.text())).collect(),
            },
            Node::Any { path, inner } => Node::Any {
                path: path.clone(),
                inner: Box::new(self.revalue(inner)),
            },
            Node::And(nodes) => Node::And(nodes.iter().map(|n| self.revalue(n)).collect()),
            Node::Or(nodes) => Node::Or(nodes.iter().map(|n| self.revalue(n)).collect()),
            Node::Not(inner) => Node::Not(Box::new(self.revalue(inner))),
            other => other.clone(),
        }
    }
}

fn fresh(same_type: bool) -> impl Strategy<Value = Fresh> {
    (
        proptest::collection::vec(any::<i64>(), 1..6),
        proptest::collection::vec("[a$1' \"-]{0,6}", 1..6),
        proptest::collection::vec(any::<bool>(), 1..6),
    )
        .prop_map(move |(numbers, texts, bools)| Fresh {
            numbers,
            texts,
            bools,
            same_type,
            next: 0,
        })
}

/// A tree rendered and collected.
struct Run {
    /// The text render writes.
    text: String,
    /// The parameters render binds, as `Debug` shows them, and why it is invalid.
    rendered: (String, Option<String>),
    /// The same of the collecting pass.
    collected: (String, Option<String>),
    /// The collecting pass's key.
    key: ShapeKey,
}

fn both(node: &Node, gin: bool) -> Run {
    let mut rendered = Sql::default();
    let text = render(node, gin, &mut rendered);
    let mut collected = Sql::default();
    let mut key = ShapeKey::default();
    collect(node, gin, &mut collected, &mut key);
    let debug = |sql: Sql| (format!("{:?}", sql.params), sql.invalid);
    Run {
        text,
        rendered: debug(rendered),
        collected: debug(collected),
        key,
    }
}

proptest! {
    /// The collecting pass binds what render binds, in its order; the same tree with values
    /// of the same JSON types has the same key and the same text; any two trees with the
    /// same key have the same text.
    #[test]
    fn collecting_mirrors_render_and_equal_keys_mean_equal_text(
        node in node(),
        gin in any::<bool>(),
        mut same in fresh(true),
        mut other in fresh(false),
    ) {
        let variants = [node.clone(), same.revalue(&node), other.revalue(&node)];
        let runs: Vec<_> = variants.iter().map(|n| both(n, gin)).collect();
        for run in &runs {
            prop_assert_eq!(&run.collected, &run.rendered);
        }
        prop_assert_eq!(&runs[1].key, &runs[0].key);
        prop_assert_eq!(&runs[1].text, &runs[0].text);
        if runs[2].key == runs[0].key {
            prop_assert_eq!(&runs[2].text, &runs[0].text);
        }
    }
}
