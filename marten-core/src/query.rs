//! Typed, compiler-checked document queries: field paths the derive generates, operators
//! bounded by the field's type, and filters that carry both their SQL-neutral syntax
//! tree and a Rust predicate computing the same answer.
//!
//! A [`Field<R, T>`] is a path from root document `R` to a value of type `T`. Its
//! operators accept only `T` (or what converts into it), ordering exists only for
//! [`Orderable`] types, string operators only for `String`, collection operators only for
//! `Vec`. A [`Filter<R>`] only combines with filters of the same root and is only
//! accepted by a query of that root.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;

/// How to get from a root `R` to a value `T` (for evaluating a filter in Rust).
pub type Getter<R, T> = Arc<dyn for<'a> Fn(&'a R) -> Option<&'a T> + Send + Sync>;

/// The JSON path of a field below the root document (or below a collection element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// JSON keys, outermost first (serde renames applied).
    pub segments: Vec<&'static str>,
    /// A duplicated column holding this field, when it is marked for an index.
    pub column: Option<(&'static str, &'static str)>,
}

/// Where a field's parent sits: the path to it and how to reach it.
pub struct Base<R, S> {
    segments: Vec<&'static str>,
    get: Getter<R, S>,
}

impl<R: 'static> Base<R, R> {
    /// The root document itself.
    pub fn root() -> Self {
        Base {
            segments: Vec::new(),
            get: Arc::new(|r: &R| Some(r)),
        }
    }
}

impl<R: 'static, S: 'static> Base<R, S> {
    /// A field of the parent: its JSON key and accessor.
    pub fn field<T: 'static>(
        &self,
        key: &'static str,
        column: Option<(&'static str, &'static str)>,
        access: fn(&S) -> &T,
    ) -> Field<R, T> {
        let parent = self.get.clone();
        let mut segments = self.segments.clone();
        segments.push(key);
        let column = if self.segments.is_empty() {
            column
        } else {
            None
        };
        Field {
            path: Path { segments, column },
            get: Arc::new(move |r: &R| parent(r).map(access)),
        }
    }

    /// A nested struct field, for its own fields.
    pub fn nested<T: 'static>(&self, key: &'static str, access: fn(&S) -> &T) -> Base<R, T> {
        let parent = self.get.clone();
        let mut segments = self.segments.clone();
        segments.push(key);
        Base {
            segments,
            get: Arc::new(move |r: &R| parent(r).map(access)),
        }
    }

    /// A nested struct behind an `Option`.
    pub fn nested_option<T: 'static>(
        &self,
        key: &'static str,
        access: fn(&S) -> &Option<T>,
    ) -> Base<R, T> {
        let parent = self.get.clone();
        let mut segments = self.segments.clone();
        segments.push(key);
        Base {
            segments,
            get: Arc::new(move |r: &R| parent(r).and_then(|s| access(s).as_ref())),
        }
    }
}

/// A typed path from root document `R` to a value of type `T`.
pub struct Field<R, T> {
    path: Path,
    get: Getter<R, T>,
}

impl<R, T> Clone for Field<R, T> {
    fn clone(&self) -> Self {
        Field {
            path: self.path.clone(),
            get: self.get.clone(),
        }
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `<>`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// How a value compares in SQL: as JSON, as text (byte order), as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// Compare the JSON values (equality of any serde value).
    Json,
    /// Compare as text, byte order (`COLLATE "C"`), like Rust's `str` ordering.
    Text,
    /// Compare as numbers.
    Number,
    /// Compare as booleans.
    Bool,
}

/// A filter's syntax tree; backends render it (PostgreSQL: SQL over `jsonb`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Node {
    /// `path op value`
    Compare {
        /// The field.
        path: Path,
        /// The operator.
        op: CompareOp,
        /// How to compare.
        kind: ValueKind,
        /// The value, serialized.
        value: serde_json::Value,
    },
    /// A string test.
    Text {
        /// The field.
        path: Path,
        /// The test.
        op: TextOp,
        /// The argument.
        value: String,
    },
    /// The field is missing or `null` (`negated`: present and not null).
    IsNull {
        /// The field.
        path: Path,
        /// `is_some` rather than `is_none`.
        negated: bool,
    },
    /// A collection contains the value.
    Contains {
        /// The collection.
        path: Path,
        /// The value, serialized.
        value: serde_json::Value,
    },
    /// A collection is empty (or missing).
    IsEmpty {
        /// The collection.
        path: Path,
    },
    /// Some element of a collection matches `inner` (whose paths are relative to the
    /// element).
    Any {
        /// The collection.
        path: Path,
        /// The element filter.
        inner: Box<Node>,
    },
    /// All of them.
    And(Vec<Node>),
    /// Any of them.
    Or(Vec<Node>),
    /// Not this.
    Not(Box<Node>),
    /// A raw SQL fragment with `$1..` parameters (numbered from 1 within the fragment).
    Raw {
        /// The SQL.
        sql: String,
        /// The parameters, serialized as JSON text values.
        params: Vec<RawParam>,
    },
}

/// A parameter of a raw SQL fragment.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RawParam {
    /// A text parameter.
    Text(String),
    /// A 64-bit integer parameter.
    Int(i64),
    /// A float parameter.
    Float(f64),
    /// A boolean parameter.
    Bool(bool),
    /// A `jsonb` parameter.
    Json(serde_json::Value),
    /// A `uuid` parameter.
    Uuid(uuid::Uuid),
}

/// A string test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    /// Starts with.
    StartsWith,
    /// Ends with.
    EndsWith,
    /// Contains.
    Contains,
    /// Equal ignoring ASCII case.
    EqIgnoreCase,
}

/// A filter on documents of type `R`: a syntax tree for the database and the same
/// predicate as a Rust function.
pub struct Filter<R> {
    node: Node,
    eval: Arc<dyn Fn(&R) -> bool + Send + Sync>,
}

impl<R> Clone for Filter<R> {
    fn clone(&self) -> Self {
        Filter {
            node: self.node.clone(),
            eval: self.eval.clone(),
        }
    }
}

impl<R> std::fmt::Debug for Filter<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Filter").field(&self.node).finish()
    }
}

impl<R: 'static> Filter<R> {
    fn new(node: Node, eval: impl Fn(&R) -> bool + Send + Sync + 'static) -> Self {
        Filter {
            node,
            eval: Arc::new(eval),
        }
    }

    /// The syntax tree.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Whether a document matches, computed in Rust.
    pub fn matches(&self, doc: &R) -> bool {
        (self.eval)(doc)
    }

    /// Both this and `other`.
    pub fn and(self, other: Filter<R>) -> Filter<R> {
        let (a, b) = (self.eval, other.eval);
        Filter::new(Node::And(vec![self.node, other.node]), move |r| {
            a(r) && b(r)
        })
    }

    /// This or `other`.
    pub fn or(self, other: Filter<R>) -> Filter<R> {
        let (a, b) = (self.eval, other.eval);
        Filter::new(Node::Or(vec![self.node, other.node]), move |r| a(r) || b(r))
    }

    /// Not this.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Filter<R> {
        let a = self.eval;
        Filter::new(Node::Not(Box::new(self.node)), move |r| !a(r))
    }

    /// Every document.
    pub fn all() -> Filter<R> {
        Filter::new(Node::And(Vec::new()), |_| true)
    }

    /// A raw SQL condition with `$1..` parameters. It cannot be evaluated in Rust:
    /// [`matches`](Self::matches) treats it as true.
    pub fn raw(sql: impl Into<String>, params: Vec<RawParam>) -> Filter<R> {
        Filter::new(
            Node::Raw {
                sql: sql.into(),
                params,
            },
            |_| true,
        )
    }
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Comparison semantics of a type whose values can be compared for equality in queries.
pub trait Comparable: Serialize + PartialEq + Send + Sync + 'static {
    /// How the database compares it.
    const KIND: ValueKind;
}

/// Types with an order the database reproduces (integers, floats, strings, uuids, bools).
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no order a query can use",
    label = "cannot compare or sort by this field",
    note = "ordering (`gt`, `lt`, `asc`, `desc`, ...) exists for numbers, `String`, `Uuid` and `bool` fields"
)]
pub trait Orderable: Comparable + PartialOrd {}

macro_rules! kinds {
    ($kind:ident: $($t:ty),*) => {$(
        impl Comparable for $t {
            const KIND: ValueKind = ValueKind::$kind;
        }
        impl Orderable for $t {}
    )*};
}

kinds!(Number: i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);
kinds!(Text: String, uuid::Uuid);
kinds!(Bool: bool);

impl<T: Comparable> Comparable for Option<T> {
    const KIND: ValueKind = ValueKind::Json;
}

impl<T: Comparable> Comparable for Vec<T> {
    const KIND: ValueKind = ValueKind::Json;
}

/// String fields: `starts_with`, `ends_with`, `contains`, `eq_ignore_case`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a string field",
    label = "string operators need a `String` field",
    note = "`starts_with`, `ends_with` and `eq_ignore_case` exist only for `String` fields"
)]
pub trait TextField: Comparable + AsRef<str> {}
impl TextField for String {}

/// `Option` fields: `is_none`, `is_some`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `Option` field",
    label = "`is_none` / `is_some` need an `Option` field"
)]
pub trait OptionField {
    /// Whether the value is `None`.
    fn is_none_value(&self) -> bool;
}
impl<T> OptionField for Option<T> {
    fn is_none_value(&self) -> bool {
        self.is_none()
    }
}

/// Collection fields: `contains`, `is_empty`, `any`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a collection field",
    label = "collection operators need a `Vec` field",
    note = "`is_empty` and `any` exist only for `Vec` fields"
)]
pub trait Collection {
    /// The element type.
    type Item;
    /// The elements.
    fn items(&self) -> &[Self::Item];
}
impl<E> Collection for Vec<E> {
    type Item = E;
    fn items(&self) -> &[E] {
        self
    }
}

/// A Rust-side test of a field's value.
pub type Test<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

/// `contains`: a substring of a `String` field, or an element of a `Vec` field.
#[diagnostic::on_unimplemented(
    message = "`contains` is not defined for a `{Self}` field with a `{V}` argument",
    note = "a `String` field contains a substring; a `Vec<T>` field contains a `T`"
)]
pub trait ContainsOp<V> {
    #[doc(hidden)]
    fn contains_node(path: Path, value: V) -> (Node, Test<Self>);
}

impl<V: Into<String>> ContainsOp<V> for String {
    fn contains_node(path: Path, value: V) -> (Node, Test<Self>) {
        let value: String = value.into();
        let node = Node::Text {
            path,
            op: TextOp::Contains,
            value: value.clone(),
        };
        (node, Box::new(move |s: &String| s.contains(value.as_str())))
    }
}

impl<E: Comparable, V: Into<E>> ContainsOp<V> for Vec<E> {
    fn contains_node(path: Path, value: V) -> (Node, Test<Self>) {
        let value: E = value.into();
        let node = Node::Contains {
            path,
            value: serde_json::Value::Array(vec![to_json(&value)]),
        };
        (node, Box::new(move |v: &Vec<E>| v.contains(&value)))
    }
}

impl<R: 'static, T: 'static> Field<R, T> {
    /// The field's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn filter(&self, node: Node, test: impl Fn(&T) -> bool + Send + Sync + 'static) -> Filter<R> {
        let get = self.get.clone();
        Filter::new(node, move |r| get(r).is_some_and(&test))
    }

    fn compare(&self, op: CompareOp, value: T, test: fn(&T, &T) -> bool) -> Filter<R>
    where
        T: Comparable,
    {
        let node = Node::Compare {
            path: self.path.clone(),
            op,
            kind: T::KIND,
            value: to_json(&value),
        };
        self.filter(node, move |v| test(v, &value))
    }

    /// Equal to `value`.
    pub fn eq(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Comparable,
    {
        self.compare(CompareOp::Eq, value.into(), |a, b| a == b)
    }

    /// Not equal to `value` (a missing field matches neither `eq` nor `ne`).
    pub fn ne(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Comparable,
    {
        self.compare(CompareOp::Ne, value.into(), |a, b| a != b)
    }

    /// Greater than `value`.
    pub fn gt(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Orderable,
    {
        self.compare(CompareOp::Gt, value.into(), |a, b| a > b)
    }

    /// Greater than or equal to `value`.
    pub fn ge(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Orderable,
    {
        self.compare(CompareOp::Ge, value.into(), |a, b| a >= b)
    }

    /// Less than `value`.
    pub fn lt(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Orderable,
    {
        self.compare(CompareOp::Lt, value.into(), |a, b| a < b)
    }

    /// Less than or equal to `value`.
    pub fn le(&self, value: impl Into<T>) -> Filter<R>
    where
        T: Orderable,
    {
        self.compare(CompareOp::Le, value.into(), |a, b| a <= b)
    }

    /// Sort ascending by this field.
    pub fn asc(&self) -> Order<R>
    where
        T: Orderable,
    {
        Order::new(self.path.clone(), T::KIND, false)
    }

    /// Sort descending by this field.
    pub fn desc(&self) -> Order<R>
    where
        T: Orderable,
    {
        Order::new(self.path.clone(), T::KIND, true)
    }

    fn text(&self, op: TextOp, value: String, test: fn(&str, &str) -> bool) -> Filter<R>
    where
        T: TextField,
    {
        let node = Node::Text {
            path: self.path.clone(),
            op,
            value: value.clone(),
        };
        self.filter(node, move |v| test(v.as_ref(), &value))
    }

    /// Starts with `prefix`.
    pub fn starts_with(&self, prefix: impl Into<String>) -> Filter<R>
    where
        T: TextField,
    {
        self.text(TextOp::StartsWith, prefix.into(), |v, p| v.starts_with(p))
    }

    /// Ends with `suffix`.
    pub fn ends_with(&self, suffix: impl Into<String>) -> Filter<R>
    where
        T: TextField,
    {
        self.text(TextOp::EndsWith, suffix.into(), |v, p| v.ends_with(p))
    }

    /// Equal ignoring ASCII case.
    pub fn eq_ignore_case(&self, value: impl Into<String>) -> Filter<R>
    where
        T: TextField,
    {
        self.text(TextOp::EqIgnoreCase, value.into(), |v, p| {
            v.eq_ignore_ascii_case(p)
        })
    }

    /// A `String` field contains a substring; a `Vec<T>` field contains a `T`.
    pub fn contains<V>(&self, value: V) -> Filter<R>
    where
        T: ContainsOp<V>,
    {
        let (node, test) = T::contains_node(self.path.clone(), value);
        self.filter(node, test)
    }

    /// The field is `None` (or missing).
    pub fn is_none(&self) -> Filter<R>
    where
        T: OptionField,
    {
        let get = self.get.clone();
        Filter::new(
            Node::IsNull {
                path: self.path.clone(),
                negated: false,
            },
            move |r| get(r).is_none_or(OptionField::is_none_value),
        )
    }

    /// The field is `Some`.
    pub fn is_some(&self) -> Filter<R>
    where
        T: OptionField,
    {
        let get = self.get.clone();
        Filter::new(
            Node::IsNull {
                path: self.path.clone(),
                negated: true,
            },
            move |r| get(r).is_some_and(|v| !v.is_none_value()),
        )
    }

    /// The collection is empty (or missing).
    pub fn is_empty(&self) -> Filter<R>
    where
        T: Collection,
    {
        let get = self.get.clone();
        Filter::new(
            Node::IsEmpty {
                path: self.path.clone(),
            },
            move |r| get(r).is_none_or(|v| v.items().is_empty()),
        )
    }

    /// Some element matches: `f.lines.any(|l| l.sku.eq("A-1"))`.
    pub fn any<E>(&self, predicate: impl FnOnce(E::Fields<E>) -> Filter<E>) -> Filter<R>
    where
        T: Collection<Item = E>,
        E: HasFields,
    {
        let inner = predicate(E::fields_at(Base::root()));
        let node = Node::Any {
            path: self.path.clone(),
            inner: Box::new(inner.node.clone()),
        };
        self.filter(node, move |v| v.items().iter().any(|e| inner.matches(e)))
    }
}

/// A type whose fields queries can name; `#[derive(Document)]` and `#[derive(Queryable)]`
/// implement it. Nested struct fields of documents (`#[query(nested)]`) and elements of
/// collections queried with `any` need it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no query fields",
    note = "derive `marten::Queryable` for it (or `Document`)"
)]
pub trait HasFields: Send + Sync + 'static {
    /// The field paths of this type, rooted at `R`.
    type Fields<R: 'static>;
    /// The field paths below `base`.
    fn fields_at<R: 'static>(base: Base<R, Self>) -> Self::Fields<R>
    where
        Self: Sized;
}

/// A sort key of a query on `R`.
pub struct Order<R> {
    /// The field.
    pub path: Path,
    /// How it compares.
    pub kind: ValueKind,
    /// Descending.
    pub descending: bool,
    _r: PhantomData<fn(&R)>,
}

impl<R> Order<R> {
    fn new(path: Path, kind: ValueKind, descending: bool) -> Self {
        Order {
            path,
            kind,
            descending,
            _r: PhantomData,
        }
    }
}
