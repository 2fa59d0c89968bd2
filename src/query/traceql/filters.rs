//! Spanset filters: field expressions lowered to typed DataFusion expressions (one per
//! run-time type), comparisons, arithmetic, attributes, intrinsics and event/link values.

use super::*;
use crate::schema::otlp::{SERVICE_NAME_KEY, UNKNOWN_SERVICE};

impl Scope<'_> {
    /// `input` with the columns the lowered expressions read besides those of `spans`: the
    /// trace summary and the child count, as needed.
    pub(super) fn with_columns(
        &self,
        input: DataFrame,
        lowering: &FieldLowering,
    ) -> Result<DataFrame> {
        let mut frame = input;
        if lowering.needs_trace {
            frame = frame.join_on(
                self.traces.clone(),
                JoinType::Inner,
                [col(spans::TRACE_ID).eq(col(TRACE_SUMMARY_ID))],
            )?;
        }
        if lowering.needs_child_count {
            frame = frame.join_on(
                self.child_counts()?,
                JoinType::Left,
                [
                    col(spans::TRACE_ID).eq(col(CHILDREN_TRACE_ID)),
                    col(spans::SPAN_ID).eq(col(CHILDREN_PARENT_ID)),
                ],
            )?;
        }
        Ok(frame)
    }

    /// Per (trace, span id) with children in [`Scope::spans`], how many distinct children.
    pub(super) fn child_counts(&self) -> Result<DataFrame> {
        Ok(self
            .spans
            .clone()
            .filter(col(spans::PARENT_SPAN_ID).is_not_null())?
            .aggregate(
                vec![
                    col(spans::TRACE_ID).alias(CHILDREN_TRACE_ID),
                    col(spans::PARENT_SPAN_ID).alias(CHILDREN_PARENT_ID),
                ],
                vec![count_distinct(col(spans::SPAN_ID)).alias(CHILDREN_COUNT)],
            )?)
    }

    pub(super) fn filter(&self, field: &FieldExpr, input: DataFrame) -> Result<DataFrame> {
        let mut lowering = FieldLowering::default();
        let predicate = lowering.filter_predicate(field)?;
        if !lowering.needs_columns() {
            let predicate = predicate.resolve_lambda_variables(input.schema())?.data;
            return Ok(input.filter(predicate)?);
        }
        let columns = columns_of(&input);
        let joined = self.with_columns(input, &lowering)?;
        let predicate = predicate.resolve_lambda_variables(joined.schema())?.data;
        Ok(joined.filter(predicate)?.select(columns)?)
    }
}

/// A field value, one expression per run-time type. Each is NULL on rows where the value has
/// another type or is missing; `None` means the value can never have that type.
#[derive(Clone, Default)]
pub(super) struct Value {
    pub(super) str: Option<Expr>,
    pub(super) int: Option<Expr>,
    pub(super) float: Option<Expr>,
    pub(super) bool: Option<Expr>,
    pub(super) duration: Option<Expr>,
    pub(super) status: Option<Expr>,
    pub(super) kind: Option<Expr>,
    /// True where the value exists (whatever its type); `None` for the literal `nil`.
    pub(super) present: Option<Expr>,
}

impl Value {
    pub(super) fn of(slot: fn(&mut Value) -> &mut Option<Expr>, expr: Expr, present: Expr) -> Self {
        let mut value = Value {
            present: Some(present),
            ..Value::default()
        };
        *slot(&mut value) = Some(expr);
        value
    }

    pub(super) fn literal(slot: fn(&mut Value) -> &mut Option<Expr>, expr: Expr) -> Self {
        Self::of(slot, expr, lit(true))
    }

    /// A column that is always present (an intrinsic).
    pub(super) fn column(slot: fn(&mut Value) -> &mut Option<Expr>, name: &str) -> Self {
        Self::of(slot, col(name), lit(true))
    }

    /// A nullable expression: present where it is not NULL.
    pub(super) fn nullable(slot: fn(&mut Value) -> &mut Option<Expr>, expr: Expr) -> Self {
        let present = expr.clone().is_not_null();
        Self::of(slot, expr, present)
    }

    /// The numeric slots with their kinds.
    pub(super) fn numeric(&self) -> Vec<(Expr, Numeric)> {
        [
            (&self.int, Numeric::Int),
            (&self.duration, Numeric::Duration),
            (&self.float, Numeric::Float),
        ]
        .into_iter()
        .filter_map(|(e, kind)| e.clone().map(|e| (e, kind)))
        .collect()
    }

    /// The value as a float, NULL when it is not a number.
    pub(super) fn as_f64(&self) -> Option<Expr> {
        let parts: Vec<Expr> = self
            .numeric()
            .into_iter()
            .map(|(e, _)| cast(e, DataType::Float64))
            .collect();
        one_of(parts)
    }
}

/// The run-time kinds of numbers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Numeric {
    Int,
    Duration,
    Float,
}

impl Numeric {
    /// Ints and durations are both i64 nanoseconds when compared.
    pub(super) fn is_integral(self) -> bool {
        self != Numeric::Float
    }
}

/// The first non-NULL of `parts`; `None` when there are none.
pub(super) fn one_of(mut parts: Vec<Expr>) -> Option<Expr> {
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(coalesce(parts)),
    }
}

/// `e` for `coalesce(e, false)`, which a filter keeps on the same rows; any other
/// expression unchanged.
fn without_false_default(expr: Expr) -> Expr {
    match expr {
        Expr::ScalarFunction(f)
            if f.func.name() == "coalesce" && f.args.len() == 2 && f.args[1] == lit(false) =>
        {
            f.args.into_iter().next().unwrap_or(lit(false))
        }
        other => other,
    }
}

pub(super) fn any_of(parts: Vec<Expr>) -> Option<Expr> {
    parts.into_iter().reduce(Expr::or)
}

/// Lowers field expressions; remembers which columns besides those of `spans` they read
/// (see [`Scope::with_columns`]).
#[derive(Default)]
pub(super) struct FieldLowering {
    needs_trace: bool,
    needs_child_count: bool,
    /// Inside an `event…`/`link…` comparison: the list column and its element variable.
    element: Option<(&'static str, Expr)>,
}

/// The lambda variable bound to one event or link.
pub(super) const ELEMENT: &str = "__element";

impl FieldLowering {
    /// True when the expressions read columns that must be joined in first.
    pub(super) fn needs_columns(&self) -> bool {
        self.needs_trace || self.needs_child_count
    }

    /// A boolean expression that is true exactly where TraceQL keeps the span.
    pub(super) fn predicate(&mut self, field: &FieldExpr) -> Result<Expr> {
        let value = self.boolean_operand(field)?;
        Ok(match value.bool {
            Some(b) => coalesce(vec![b, lit(false)]),
            None => lit(false),
        })
    }

    /// [`Self::predicate`] for a filter, where NULL drops a row as `false` does: true where
    /// TraceQL keeps the span, and false or NULL elsewhere. Conjunctions need no NULL guards
    /// there and comparisons no `false` default, which leaves the filter one test per
    /// comparison.
    pub(super) fn filter_predicate(&mut self, field: &FieldExpr) -> Result<Expr> {
        if let FieldExpr::Binary {
            op: BinaryOp::And,
            lhs,
            rhs,
        } = field
        {
            return Ok(self.filter_predicate(lhs)?.and(self.filter_predicate(rhs)?));
        }
        let value = self.boolean_operand(field)?;
        Ok(value.bool.map_or(lit(false), without_false_default))
    }

    /// The value of `field` where a boolean is expected. A bare event or link value there,
    /// `{ event.handled }`, means that some element's value is `true`.
    pub(super) fn boolean_operand(&mut self, field: &FieldExpr) -> Result<Value> {
        if let FieldExpr::Attr(attr) = field
            && self.element.is_none()
            && let Some(list) = element_list(attr)
        {
            return self.element_comparison(
                list,
                BinaryOp::Eq,
                field,
                &FieldExpr::Static(Static::Bool(true)),
            );
        }
        self.value(field)
    }

    pub(super) fn value(&mut self, field: &FieldExpr) -> Result<Value> {
        match field {
            FieldExpr::Static(s) => Ok(static_value(s)),
            FieldExpr::Attr(attr) => self.attr(attr),
            FieldExpr::Unary { op, expr } => {
                let v = self.value(expr)?;
                Ok(match op {
                    UnaryOp::Not => Value {
                        bool: v.bool.map(|b| !b),
                        present: Some(lit(true)),
                        ..Value::default()
                    },
                    UnaryOp::Neg => Value {
                        int: v.int.map(|e| -e),
                        float: v.float.map(|e| -e),
                        duration: v.duration.map(|e| -e),
                        present: Some(lit(true)),
                        ..Value::default()
                    },
                })
            }
            FieldExpr::Binary { op, lhs, rhs } => self.binary(*op, lhs, rhs),
        }
    }

    pub(super) fn binary(
        &mut self,
        op: BinaryOp,
        lhs: &FieldExpr,
        rhs: &FieldExpr,
    ) -> Result<Value> {
        let is_test = op.is_comparison() || matches!(op, BinaryOp::Regex | BinaryOp::NotRegex);
        if is_test && self.element.is_none() {
            let mut lists = element_lists(lhs);
            lists.extend(element_lists(rhs));
            lists.dedup();
            match lists.as_slice() {
                [] => {}
                [list] => return self.element_comparison(list, op, lhs, rhs),
                _ => {
                    return unsupported(format!(
                        "`{lhs} {op} {rhs}`: a comparison between event and link values"
                    ));
                }
            }
        }
        if self.element.is_none()
            && let Some(test) = dedicated_string_test(op, lhs, rhs)
        {
            return Ok(boolean(Some(test)));
        }
        if op == BinaryOp::Or
            && let Some(value) = self.or_to_in_list(lhs, rhs)?
        {
            return Ok(value);
        }
        if matches!(op, BinaryOp::Regex | BinaryOp::NotRegex) {
            let FieldExpr::Static(Static::String(pattern)) = rhs else {
                return unsupported(format!(
                    "the right side of a regex operator must be a string literal, not `{rhs}`"
                ));
            };
            let subject = self.value(lhs)?;
            let matched = subject.str.map(|s| regex_test(s, op, pattern));
            return Ok(boolean(matched));
        }
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            let (lhs_value, rhs_value) = (self.boolean_operand(lhs)?, self.boolean_operand(rhs)?);
            let (Some(a), Some(b)) = (lhs_value.bool, rhs_value.bool) else {
                return Ok(boolean(Some(lit(false))));
            };
            let both = a.clone().is_not_null().and(b.clone().is_not_null());
            let combined = if op == BinaryOp::And {
                a.and(b)
            } else {
                a.or(b)
            };
            return Ok(boolean(Some(both.and(combined))));
        }
        let lhs_value = self.value(&strip_trace_id_literal(lhs, rhs))?;
        let rhs_value = self.value(&strip_trace_id_literal(rhs, lhs))?;
        if op.is_arithmetic() {
            return Ok(arithmetic(op, &lhs_value, &rhs_value));
        }
        Ok(boolean(Some(compare(op, &lhs_value, &rhs_value))))
    }

    /// A comparison reading the elements of `list`: true when some element (event or link)
    /// of the span satisfies it. The other operand may read the span too (the lambda
    /// captures its columns).
    pub(super) fn element_comparison(
        &mut self,
        list: &'static str,
        op: BinaryOp,
        lhs: &FieldExpr,
        rhs: &FieldExpr,
    ) -> Result<Value> {
        self.element = Some((list, lambda_var(ELEMENT)));
        let tested = self.binary(op, lhs, rhs);
        self.element = None;
        let predicate = match tested?.bool {
            Some(b) => coalesce(vec![b, lit(false)]),
            None => lit(false),
        };
        let any = array_any_match(col(list), lambda([ELEMENT], predicate));
        Ok(boolean(Some(coalesce(vec![any, lit(false)]))))
    }

    /// `x = a || x = b || …` on one attribute with literals of one type (string or int):
    /// one `IN` list per value slot instead of a chain of ORs. `None` when the disjunction
    /// has another shape.
    pub(super) fn or_to_in_list(
        &mut self,
        lhs: &FieldExpr,
        rhs: &FieldExpr,
    ) -> Result<Option<Value>> {
        let mut disjuncts = Vec::new();
        flatten_or(lhs, &mut disjuncts);
        flatten_or(rhs, &mut disjuncts);
        let mut subject = None;
        let mut literals = Vec::new();
        for d in disjuncts {
            let FieldExpr::Binary {
                op: BinaryOp::Eq,
                lhs,
                rhs,
            } = d
            else {
                return Ok(None);
            };
            let (attr, literal) = match (lhs.as_ref(), rhs.as_ref()) {
                (FieldExpr::Attr(a), FieldExpr::Static(s))
                | (FieldExpr::Static(s), FieldExpr::Attr(a)) => (a, s),
                _ => return Ok(None),
            };
            if *subject.get_or_insert(attr) != attr
                || element_list(attr).is_some()
                || *attr == AttrRef::Intrinsic(Intrinsic::TraceId)
            {
                return Ok(None);
            }
            literals.push(literal);
        }
        let Some(subject) = subject else {
            return Ok(None);
        };
        if let Some(texts) = literals
            .iter()
            .map(|l| match l {
                Static::String(s) => Some(s.as_str()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            && let Some(column) = dedicated_for(subject, |c| texts.iter().all(|t| c.may_hold(t)))
        {
            let items = texts.iter().map(|t| lit(t.to_string())).collect();
            return Ok(Some(boolean(Some(in_list(column, items, false)))));
        }
        let value = self.attr(subject)?;
        let in_slot = |slot: Option<Expr>, items: Vec<Expr>| {
            slot.map(|e| coalesce(vec![in_list(e, items, false), lit(false)]))
        };
        let matched = if let Some(strings) = literals
            .iter()
            .map(|l| match l {
                Static::String(s) => Some(lit(s.clone())),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            in_slot(value.str, strings)
        } else if let Some(ints) = literals
            .iter()
            .map(|l| match l {
                Static::Int(i) => Some(*i),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
        {
            // As `compare`: ints and durations compare as i64, floats as f64.
            let as_int = || ints.iter().map(|i| lit(*i)).collect::<Vec<_>>();
            let as_float = ints.iter().map(|i| lit(*i as f64)).collect();
            let parts = [
                in_slot(value.int, as_int()),
                in_slot(value.duration, as_int()),
                in_slot(value.float.map(|f| cast(f, DataType::Float64)), as_float),
            ];
            any_of(parts.into_iter().flatten().collect())
        } else {
            return Ok(None);
        };
        Ok(Some(boolean(matched)))
    }

    pub(super) fn attr(&mut self, attr: &AttrRef) -> Result<Value> {
        if let Some(list) = element_list(attr) {
            return match &self.element {
                Some((current, element)) if *current == list => element_value(attr, element),
                _ => unsupported(format!(
                    "`{attr}` outside a comparison: event and link values are only lowered \
                     inside comparisons such as `{attr} = 1` or `{attr} > span.x + 1`"
                )),
            };
        }
        match attr {
            AttrRef::Intrinsic(i) => self.intrinsic(*i),
            AttrRef::Attribute(a) => attribute(a),
        }
    }

    pub(super) fn intrinsic(&mut self, intrinsic: Intrinsic) -> Result<Value> {
        use Intrinsic::*;
        let hex = |c: &str| id_hex().call(vec![col(c)]);
        Ok(match intrinsic {
            Duration => Value::column(|v| &mut v.duration, spans::DURATION_NS),
            Name => Value::column(|v| &mut v.str, spans::NAME),
            Status => Value::column(|v| &mut v.status, spans::STATUS_CODE),
            StatusMessage => Value::column(|v| &mut v.str, spans::STATUS_MESSAGE),
            Kind => Value::column(|v| &mut v.kind, spans::KIND),
            SpanId => Value::literal(|v| &mut v.str, hex(spans::SPAN_ID)),
            ParentId => Value::nullable(|v| &mut v.str, hex(spans::PARENT_SPAN_ID)),
            TraceId => Value::literal(|v| &mut v.str, ltrim(vec![hex(spans::TRACE_ID), lit("0")])),
            NestedSetLeft => Value::column(|v| &mut v.int, spans::NESTED_SET_LEFT),
            NestedSetRight => Value::column(|v| &mut v.int, spans::NESTED_SET_RIGHT),
            NestedSetParent => Value::column(|v| &mut v.int, spans::NESTED_SET_PARENT),
            InstrumentationName => Value::column(|v| &mut v.str, spans::SCOPE_NAME),
            InstrumentationVersion => Value::column(|v| &mut v.str, spans::SCOPE_VERSION),
            TraceDuration => {
                self.needs_trace = true;
                Value::nullable(|v| &mut v.duration, col(TRACE_SUMMARY_DURATION))
            }
            TraceRootName => {
                self.needs_trace = true;
                Value::nullable(|v| &mut v.str, col(TRACE_SUMMARY_ROOT_NAME))
            }
            TraceRootService => {
                self.needs_trace = true;
                Value::nullable(|v| &mut v.str, col(TRACE_SUMMARY_ROOT_SERVICE))
            }
            ChildCount => {
                self.needs_child_count = true;
                let count = coalesce(vec![col(CHILDREN_COUNT), lit(0i64)]);
                Value::literal(|v| &mut v.int, cast(count, DataType::Int64))
            }
            EventName | EventTimeSinceStart | LinkTraceId | LinkSpanId | Parent => {
                return unsupported(format!("the intrinsic `{}`", AttrRef::Intrinsic(intrinsic)));
            }
        })
    }
}

/// `trace:id` literals are compared with leading zeros stripped, as the ids are.
pub(super) fn strip_trace_id_literal(this: &FieldExpr, other: &FieldExpr) -> FieldExpr {
    match (this, other) {
        (
            FieldExpr::Static(Static::String(s)),
            FieldExpr::Attr(AttrRef::Intrinsic(Intrinsic::TraceId)),
        ) => FieldExpr::Static(Static::String(s.trim_start_matches('0').to_string())),
        _ => this.clone(),
    }
}

/// The value of `key` in each row's `map`, NULL where it has none (see
/// [`spanlake_udfs::MapValue`]).
pub fn map_value(map: Expr, key: &str) -> Expr {
    static MAP_VALUE: std::sync::LazyLock<Arc<ScalarUDF>> = std::sync::LazyLock::new(|| {
        Arc::new(ScalarUDF::new_from_impl(spanlake_udfs::MapValue::default()))
    });
    MAP_VALUE.call(vec![map, lit(key)])
}

pub(super) fn id_hex() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(spanlake_udfs::IdHex::default()))
}

pub(super) fn boolean(expr: Option<Expr>) -> Value {
    Value {
        bool: Some(expr.unwrap_or(lit(false))),
        present: Some(lit(true)),
        ..Value::default()
    }
}

pub(super) fn status_text(status: Status) -> &'static str {
    status_name(match status {
        Status::Error => STATUS_CODE_ERROR,
        Status::Ok => 1,
        Status::Unset => 0,
    })
}

pub(super) fn kind_text(kind: Kind) -> &'static str {
    kind_name(match kind {
        Kind::Unspecified => 0,
        Kind::Internal => 1,
        Kind::Server => 2,
        Kind::Client => 3,
        Kind::Producer => 4,
        Kind::Consumer => 5,
    })
}

pub(super) fn static_value(s: &Static) -> Value {
    match s {
        Static::Nil => Value::default(),
        Static::Int(i) => Value::literal(|v| &mut v.int, lit(*i)),
        Static::Float(f) => Value::literal(|v| &mut v.float, lit(*f)),
        Static::String(s) => Value::literal(|v| &mut v.str, lit(s.clone())),
        Static::Bool(b) => Value::literal(|v| &mut v.bool, lit(*b)),
        Static::Duration(d) => Value::literal(|v| &mut v.duration, lit(*d)),
        Static::Status(s) => Value::literal(|v| &mut v.status, lit(status_text(*s))),
        Static::Kind(k) => Value::literal(|v| &mut v.kind, lit(kind_text(*k))),
    }
}

/// A literal as a float, for scalar filters.
pub(super) fn static_f64(s: &Static) -> Option<f64> {
    match s {
        Static::Int(i) => Some(*i as f64),
        Static::Float(f) => Some(*f),
        Static::Duration(d) => Some(*d as f64),
        _ => None,
    }
}

/// The typed map columns of an attribute scope (`span_attrs` or `resource_attrs`), or of an
/// event or link element (`attrs`).
pub(super) struct MapColumns {
    str: String,
    int: String,
    float: String,
    bool: String,
    json: String,
}

impl MapColumns {
    pub(super) fn of(prefix: &str) -> Self {
        Self {
            str: attrs::column_name(prefix, attrs::STR),
            int: attrs::column_name(prefix, attrs::INT),
            float: attrs::column_name(prefix, attrs::FLOAT),
            bool: attrs::column_name(prefix, attrs::BOOL),
            json: attrs::column_name(prefix, attrs::JSON),
        }
    }

    pub(super) fn value(&self, key: &str) -> Value {
        self.value_in(None, key)
    }

    /// The attribute `key` of the maps in the struct `base`, or of the table's columns.
    pub(super) fn value_in(&self, base: Option<&Expr>, key: &str) -> Value {
        let get = |column: &str| {
            let map = match base {
                Some(base) => get_field(base.clone(), column),
                None => col(column),
            };
            map_value(map, key)
        };
        let present = [&self.str, &self.int, &self.float, &self.bool, &self.json]
            .into_iter()
            .map(|c| get(c).is_not_null())
            .reduce(Expr::or);
        Value {
            str: Some(get(&self.str)),
            int: Some(get(&self.int)),
            float: Some(get(&self.float)),
            bool: Some(get(&self.bool)),
            present,
            ..Value::default()
        }
    }
}

/// A column holding one attribute's string values: a single-key dedicated span or resource
/// column (NULL where the attribute is missing or not a string), or `service_name` for
/// `resource.service.name` (`unknown_service` there).
struct DedicatedString {
    column: Expr,
    /// The text the column holds where the attribute is missing or not a string, if any.
    placeholder: Option<&'static str>,
}

impl DedicatedString {
    /// Whether a row holding `text` in the column certainly holds it in the attribute.
    fn may_hold(&self, text: &str) -> bool {
        self.placeholder != Some(text)
    }
}

/// The dedicated string column of a scoped attribute, if it has one and `usable` accepts it.
fn dedicated_for(attr: &AttrRef, usable: impl Fn(&DedicatedString) -> bool) -> Option<Expr> {
    let AttrRef::Attribute(a) = attr else {
        return None;
    };
    let scope = match a.scope {
        _ if a.parent => return None,
        AttrScope::Span => spans::AttrScope::Span,
        AttrScope::Resource => spans::AttrScope::Resource,
        _ => return None,
    };
    let dedicated = if scope == spans::AttrScope::Resource && a.name == SERVICE_NAME_KEY {
        DedicatedString {
            column: col(spans::SERVICE_NAME),
            placeholder: Some(UNKNOWN_SERVICE),
        }
    } else {
        let d = spans::DEDICATED.iter().find(|d| {
            d.scope == scope && d.ty == spans::DedicatedType::Str && d.keys == [a.name.as_str()]
        })?;
        DedicatedString {
            column: col(d.column),
            placeholder: None,
        }
    };
    usable(&dedicated).then_some(dedicated.column)
}

/// `attr = "text"`, `attr != "text"`, `attr =~ "re"` or `attr !~ "re"` on an attribute with a
/// dedicated string column, read from that column alone when that gives the same answer as the
/// typed maps: one narrow dictionary column instead of four map lookups, and a predicate
/// Parquet statistics and bloom filters can use. (`!=` and `!~` are false where the attribute is
/// missing, which a placeholder value cannot tell, so they are rewritten only for columns
/// without one.)
fn dedicated_string_test(op: BinaryOp, lhs: &FieldExpr, rhs: &FieldExpr) -> Option<Expr> {
    let (FieldExpr::Attr(attr), FieldExpr::Static(Static::String(text))) = (lhs, rhs) else {
        return None;
    };
    match op {
        BinaryOp::Eq => {
            let column = dedicated_for(attr, |c| c.may_hold(text))?;
            Some(column.eq(lit(text.clone())))
        }
        BinaryOp::Neq => {
            let column = dedicated_for(attr, |c| c.placeholder.is_none())?;
            Some(column.not_eq(lit(text.clone())))
        }
        BinaryOp::Regex | BinaryOp::NotRegex => {
            let matches = |placeholder: &str| match LiteralRegex::of(text) {
                Some(shape) => shape.matches(placeholder),
                None => {
                    regex::Regex::new(&anchored(text)).map_or(true, |re| re.is_match(placeholder))
                }
            };
            let matches_placeholder = |c: &DedicatedString| c.placeholder.is_some_and(&matches);
            let column = if op == BinaryOp::Regex {
                dedicated_for(attr, |c| !matches_placeholder(c))?
            } else {
                dedicated_for(attr, |c| c.placeholder.is_none())?
            };
            Some(regex_test(column, op, text))
        }
        _ => None,
    }
}

/// `pattern` as the regex TraceQL runs: matching the whole value, `.` matching newlines too.
fn anchored(pattern: &str) -> String {
    format!("^(?s:{pattern})$")
}

/// `subject =~ pattern` (or `!~` for [`BinaryOp::NotRegex`]), matching the whole value as
/// TraceQL does. Patterns that amount to a string test ([`LiteralRegex`]) become that test,
/// far cheaper than running a regex over every row.
fn regex_test(subject: Expr, op: BinaryOp, pattern: &str) -> Expr {
    use datafusion::functions::string::expr_fn::{contains, ends_with, starts_with};
    let test = LiteralRegex::of(pattern).map(|shape| match shape {
        LiteralRegex::Equals(text) => subject.clone().eq(lit(text)),
        LiteralRegex::Contains(text) => contains(subject.clone(), lit(text)),
        LiteralRegex::StartsWith(text) => starts_with(subject.clone(), lit(text)),
        LiteralRegex::EndsWith(text) => ends_with(subject.clone(), lit(text)),
    });
    match (test, op) {
        (Some(test), BinaryOp::Regex) => test,
        (Some(test), _) => !test,
        (None, _) => {
            let operator = if op == BinaryOp::Regex {
                Operator::RegexMatch
            } else {
                Operator::RegexNotMatch
            };
            binary_expr(subject, operator, lit(anchored(pattern)))
        }
    }
}

pub(super) fn attribute(a: &Attribute) -> Result<Value> {
    if a.parent {
        return unsupported(format!("parent attributes such as `parent.{}`", a.name));
    }
    let span = || MapColumns::of(spans::SPAN_ATTRS).value(&a.name);
    let resource = || MapColumns::of(spans::RESOURCE_ATTRS).value(&a.name);
    match a.scope {
        AttrScope::Span => Ok(span()),
        AttrScope::Resource => Ok(resource()),
        AttrScope::None => {
            // The span's value when the span has the attribute at all, else the resource's.
            let (s, r) = (span(), resource());
            let on_span = s.present.clone().unwrap_or(lit(false));
            let pick = |a: Option<Expr>, b: Option<Expr>| match (a, b) {
                (Some(a), Some(b)) => Some(when(on_span.clone(), a).otherwise(b).ok()?),
                _ => None,
            };
            Ok(Value {
                str: pick(s.str, r.str),
                int: pick(s.int, r.int),
                float: pick(s.float, r.float),
                bool: pick(s.bool, r.bool),
                present: any_of([s.present, r.present].into_iter().flatten().collect()),
                ..Value::default()
            })
        }
        AttrScope::Instrumentation => Ok(MapColumns::of(spans::SCOPE_ATTRS).value(&a.name)),
        AttrScope::Event | AttrScope::Link => unsupported(format!(
            "attributes of scope `{}` (`{}`)",
            if a.scope == AttrScope::Event {
                "event"
            } else {
                "link"
            },
            a.name
        )),
    }
}

/// The list column an attribute reads elements of (`events`, `links`), if any.
pub(super) fn element_list(attr: &AttrRef) -> Option<&'static str> {
    match attr {
        AttrRef::Intrinsic(Intrinsic::EventName | Intrinsic::EventTimeSinceStart) => {
            Some(spans::EVENTS)
        }
        AttrRef::Intrinsic(Intrinsic::LinkTraceId | Intrinsic::LinkSpanId) => Some(spans::LINKS),
        AttrRef::Attribute(a) if !a.parent && a.scope == AttrScope::Event => Some(spans::EVENTS),
        AttrRef::Attribute(a) if !a.parent && a.scope == AttrScope::Link => Some(spans::LINKS),
        _ => None,
    }
}

/// The value of an event or link attribute in the list element `element`.
pub(super) fn element_value(attr: &AttrRef, element: &Expr) -> Result<Value> {
    let field = |name: &str| get_field(element.clone(), name);
    let hex = |name: &str| id_hex().call(vec![field(name)]);
    Ok(match attr {
        AttrRef::Intrinsic(Intrinsic::EventName) => {
            Value::literal(|v| &mut v.str, field(spans::event::NAME))
        }
        AttrRef::Intrinsic(Intrinsic::EventTimeSinceStart) => {
            let ns = |e: Expr| cast(e, DataType::Int64);
            let since = ns(field(spans::event::TIME)) - ns(col(spans::START_TIME));
            Value::literal(|v| &mut v.duration, since)
        }
        AttrRef::Intrinsic(Intrinsic::LinkTraceId) => {
            Value::literal(|v| &mut v.str, hex(spans::link::TRACE_ID))
        }
        AttrRef::Intrinsic(Intrinsic::LinkSpanId) => {
            Value::literal(|v| &mut v.str, hex(spans::link::SPAN_ID))
        }
        AttrRef::Attribute(a) if a.scope == AttrScope::Event => {
            MapColumns::of(spans::event::ATTRS).value_in(Some(element), &a.name)
        }
        AttrRef::Attribute(a) if a.scope == AttrScope::Link => {
            MapColumns::of(spans::link::ATTRS).value_in(Some(element), &a.name)
        }
        other => return unsupported(format!("`{other}`")),
    })
}

/// The distinct list columns (`events`, `links`) that `field` reads elements of.
pub(super) fn element_lists(field: &FieldExpr) -> Vec<&'static str> {
    let mut attrs = Vec::new();
    collect_field_attrs(field, &mut attrs);
    let mut lists: Vec<&'static str> = attrs.iter().filter_map(element_list).collect();
    lists.sort_unstable();
    lists.dedup();
    lists
}

/// The operands of a chain of `||`, left to right.
pub(super) fn flatten_or<'a>(field: &'a FieldExpr, out: &mut Vec<&'a FieldExpr>) {
    match field {
        FieldExpr::Binary {
            op: BinaryOp::Or,
            lhs,
            rhs,
        } => {
            flatten_or(lhs, out);
            flatten_or(rhs, out);
        }
        other => out.push(other),
    }
}

pub(super) fn compare_op(a: Expr, op: Operator, b: Expr) -> Expr {
    binary_expr(a, op, b)
}

pub(super) fn cmp_to_binary(op: CmpOp) -> Operator {
    match op {
        CmpOp::Eq => Operator::Eq,
        CmpOp::Neq => Operator::NotEq,
        CmpOp::Lt => Operator::Lt,
        CmpOp::Lte => Operator::LtEq,
        CmpOp::Gt => Operator::Gt,
        CmpOp::Gte => Operator::GtEq,
    }
}

/// `a op b` for `= != < <= > >=`: true when some pair of same-typed (or both numeric) values
/// satisfies it; missing values and ill-typed pairs give false.
pub(super) fn compare(op: BinaryOp, a: &Value, b: &Value) -> Expr {
    let a_nil = a.present.is_none();
    let b_nil = b.present.is_none();
    if a_nil || b_nil {
        // `x = nil` / `x != nil`: existence tests.
        let other = if a_nil { &b.present } else { &a.present };
        let present = other.clone().unwrap_or(lit(false));
        return match op {
            BinaryOp::Eq => !present,
            BinaryOp::Neq => present,
            _ => lit(false),
        };
    }
    let operator = match op {
        BinaryOp::Eq => Operator::Eq,
        BinaryOp::Neq => Operator::NotEq,
        BinaryOp::Lt => Operator::Lt,
        BinaryOp::Lte => Operator::LtEq,
        BinaryOp::Gt => Operator::Gt,
        BinaryOp::Gte => Operator::GtEq,
        _ => return lit(false),
    };
    let ordered = !matches!(op, BinaryOp::Eq | BinaryOp::Neq);
    let mut pairs = Vec::new();
    let mut same = |x: &Option<Expr>, y: &Option<Expr>| {
        if let (Some(x), Some(y)) = (x, y) {
            pairs.push(binary_expr(x.clone(), operator, y.clone()));
        }
    };
    same(&a.str, &b.str);
    if !ordered {
        same(&a.bool, &b.bool);
        same(&a.status, &b.status);
        same(&a.kind, &b.kind);
    }
    for (x, x_kind) in a.numeric() {
        for (y, y_kind) in b.numeric() {
            pairs.push(if x_kind.is_integral() && y_kind.is_integral() {
                binary_expr(x.clone(), operator, y)
            } else {
                binary_expr(
                    cast(x.clone(), DataType::Float64),
                    operator,
                    cast(y, DataType::Float64),
                )
            });
        }
    }
    match any_of(pairs) {
        Some(e) => coalesce(vec![e, lit(false)]),
        None => lit(false),
    }
}

/// `a op b` for `+ - * / % ^`: int with int stays int (except `^`), everything else is f64.
pub(super) fn arithmetic(op: BinaryOp, a: &Value, b: &Value) -> Value {
    let operator = match op {
        BinaryOp::Add => Operator::Plus,
        BinaryOp::Sub => Operator::Minus,
        BinaryOp::Mul => Operator::Multiply,
        BinaryOp::Div => Operator::Divide,
        BinaryOp::Mod => Operator::Modulo,
        _ => Operator::Plus,
    };
    let apply = |x: Expr, y: Expr| {
        if op == BinaryOp::Pow {
            power(x, y)
        } else {
            binary_expr(x, operator, y)
        }
    };
    let f64_of = |e: Expr| cast(e, DataType::Float64);
    let mut int = None;
    let mut floats = Vec::new();
    for (x, x_kind) in a.numeric() {
        for (y, y_kind) in b.numeric() {
            if x_kind == Numeric::Int && y_kind == Numeric::Int && op != BinaryOp::Pow {
                int = Some(apply(x.clone(), y));
            } else {
                floats.push(apply(f64_of(x.clone()), f64_of(y)));
            }
        }
    }
    Value {
        int,
        float: one_of(floats),
        present: Some(lit(true)),
        ..Value::default()
    }
}
