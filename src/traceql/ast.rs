//! The TraceQL syntax tree.
//!
//! The tree is what the parser produced, with two normalisations: `{}` is `{ true }`, and
//! constant arithmetic in scalar positions (scalar filters, metrics thresholds, metrics math) is
//! folded into one [`Static`]. Field expressions inside `{ }` are kept as written. Nodes carry
//! no positions; errors that need one are raised by the parser.

/// A whole query: a body and the hints of its last `with(...)` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// What the query computes.
    pub body: Body,
    /// `with(name = value, …)`; only the last block is kept, as in Tempo.
    pub hints: Vec<Hint>,
}

/// One `name = value` pair of a `with(...)` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    /// The hint name, a bare identifier.
    pub name: String,
    /// The hint value, any static literal.
    pub value: Static,
}

/// The three shapes a query can take.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A search: a spanset pipeline.
    Pipeline(Pipeline),
    /// `(pipeline | aggregate) op (…)`: parses, but validation always reports it unsupported.
    ScalarPipelineFilter(ScalarPipelineFilter),
    /// A metrics query.
    Metrics(MetricsExpr),
}

/// Stages joined by `|`, evaluated left to right. Never empty.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    /// The stages in order.
    pub stages: Vec<Stage>,
}

/// One pipeline stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// A spanset expression: filters joined by spanset operators.
    Spanset(SpansetExpr),
    /// `aggregate op value`.
    ScalarFilter(ScalarFilter),
    /// `by(expr)`.
    GroupBy(FieldExpr),
    /// `coalesce()`.
    Coalesce,
    /// `select(attr, …)`.
    Select(Vec<AttrRef>),
}

/// Spanset filters combined with `&&`, `||` and the structural operators.
#[derive(Debug, Clone, PartialEq)]
pub enum SpansetExpr {
    /// `{ expr }`.
    Filter(FieldExpr),
    /// `lhs op rhs`.
    Binary {
        /// The spanset operator.
        op: SpansetOp,
        /// Left operand.
        lhs: Box<SpansetExpr>,
        /// Right operand.
        rhs: Box<SpansetExpr>,
    },
    /// A parenthesised pipeline used as an operand, e.g. `({ a } | count() > 1) && ({ b })`.
    Pipeline(Box<Pipeline>),
}

/// Operators between spansets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpansetOp {
    /// `&&`
    And,
    /// `||`
    Or,
    /// `>`
    Child,
    /// `<`
    Parent,
    /// `>>`
    Descendant,
    /// `<<`
    Ancestor,
    /// `~`
    Sibling,
    /// `!>`
    NotChild,
    /// `!<`
    NotParent,
    /// `!>>`
    NotDescendant,
    /// `!<<`
    NotAncestor,
    /// `!~`
    NotSibling,
    /// `&>`
    UnionChild,
    /// `&<`
    UnionParent,
    /// `&>>`
    UnionDescendant,
    /// `&<<`
    UnionAncestor,
    /// `&~`
    UnionSibling,
}

/// An expression evaluated per span: inside `{ }`, `by()` and aggregates.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldExpr {
    /// A literal.
    Static(Static),
    /// An attribute or intrinsic.
    Attr(AttrRef),
    /// `-expr` or `!expr`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        expr: Box<FieldExpr>,
    },
    /// `lhs op rhs`.
    Binary {
        /// The operator.
        op: BinaryOp,
        /// Left operand.
        lhs: Box<FieldExpr>,
        /// Right operand.
        rhs: Box<FieldExpr>,
    },
}

/// Unary operators of field expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-`
    Neg,
    /// `!`
    Not,
}

/// Binary operators of field expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `=~`
    Regex,
    /// `!~`
    NotRegex,
    /// `&&`
    And,
    /// `||`
    Or,
}

impl BinaryOp {
    /// True for `+ - * / % ^`.
    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            Self::Add | Self::Sub | Self::Mul | Self::Div | Self::Mod | Self::Pow
        )
    }

    /// True for `= != < <= > >=`.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::Neq | Self::Lt | Self::Lte | Self::Gt | Self::Gte
        )
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Static {
    /// `nil`: only valid as an operand of `=` and `!=`.
    Nil,
    /// A 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string.
    String(String),
    /// `true` / `false`.
    Bool(bool),
    /// A duration in nanoseconds.
    Duration(i64),
    /// `ok`, `error`, `unset`.
    Status(Status),
    /// `unspecified`, `internal`, `server`, `client`, `producer`, `consumer`.
    Kind(Kind),
}

/// Span status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `error`
    Error,
    /// `ok`
    Ok,
    /// `unset`
    Unset,
}

/// Span kind values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `unspecified`
    Unspecified,
    /// `internal`
    Internal,
    /// `server`
    Server,
    /// `client`
    Client,
    /// `producer`
    Producer,
    /// `consumer`
    Consumer,
}

/// A reference to span data: an intrinsic or an attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrRef {
    /// A built-in field such as `duration` or `trace:rootService`.
    Intrinsic(Intrinsic),
    /// A user attribute such as `span.http.url`.
    Attribute(Attribute),
}

/// A user attribute: scope and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// True after `parent.`; every such attribute is unsupported at validation.
    pub parent: bool,
    /// The scope prefix.
    pub scope: AttrScope,
    /// The name after the prefix, with quotes and escapes resolved.
    pub name: String,
}

/// Attribute scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrScope {
    /// `.name`: span, then resource.
    None,
    /// `span.`
    Span,
    /// `resource.`
    Resource,
    /// `event.`
    Event,
    /// `link.`
    Link,
    /// `instrumentation.`
    Instrumentation,
}

/// Intrinsics. The unscoped spellings (`duration`) and scoped ones (`span:duration`) map to the
/// same variant; printing uses the scoped spelling where one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intrinsic {
    /// `span:duration`, `duration`
    Duration,
    /// `span:name`, `name`
    Name,
    /// `span:status`, `status`
    Status,
    /// `span:statusMessage`, `statusMessage`
    StatusMessage,
    /// `span:kind`, `kind`
    Kind,
    /// `span:id`
    SpanId,
    /// `span:parentID`
    ParentId,
    /// `span:childCount`
    ChildCount,
    /// `trace:duration`, `traceDuration`
    TraceDuration,
    /// `trace:rootName`, `rootName`
    TraceRootName,
    /// `trace:rootService`, `rootServiceName`
    TraceRootService,
    /// `trace:id`
    TraceId,
    /// `event:name`
    EventName,
    /// `event:timeSinceStart`
    EventTimeSinceStart,
    /// `link:traceID`
    LinkTraceId,
    /// `link:spanID`
    LinkSpanId,
    /// `instrumentation:name`
    InstrumentationName,
    /// `instrumentation:version`
    InstrumentationVersion,
    /// `nestedSetLeft`
    NestedSetLeft,
    /// `nestedSetRight`
    NestedSetRight,
    /// `nestedSetParent`
    NestedSetParent,
    /// `parent`: parses, unsupported at validation.
    Parent,
}

/// `aggregate op value` inside a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarFilter {
    /// The comparison.
    pub op: CmpOp,
    /// Left side.
    pub lhs: ScalarExpr,
    /// Right side.
    pub rhs: ScalarExpr,
}

/// Comparison operators of scalar filters and metrics filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `<`
    Lt,
    /// `<=`
    Lte,
    /// `>`
    Gt,
    /// `>=`
    Gte,
}

/// Arithmetic operators outside field expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `^`
    Pow,
}

/// One side of a scalar filter.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarExpr {
    /// An aggregate over the spanset.
    Aggregate(Aggregate),
    /// A (folded) numeric or duration constant.
    Static(Static),
    /// Arithmetic involving at least one aggregate.
    Binary {
        /// The operator.
        op: ArithOp,
        /// Left operand.
        lhs: Box<ScalarExpr>,
        /// Right operand.
        rhs: Box<ScalarExpr>,
    },
}

/// `count()`, `min(e)`, `max(e)`, `avg(e)`, `sum(e)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// Which aggregate.
    pub op: AggregateOp,
    /// The argument; `None` exactly for `count()`.
    pub expr: Option<FieldExpr>,
}

/// Aggregate functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateOp {
    /// `count`
    Count,
    /// `min`
    Min,
    /// `max`
    Max,
    /// `avg`
    Avg,
    /// `sum`
    Sum,
}

/// `sp op sp` or `sp op literal`, where `sp` is `(pipeline | aggregate)`; always unsupported.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarPipelineFilter {
    /// The comparison.
    pub op: CmpOp,
    /// Left side.
    pub lhs: ScalarPipelineExpr,
    /// Right side.
    pub rhs: ScalarPipelineExpr,
}

/// An operand of a [`ScalarPipelineFilter`].
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarPipelineExpr {
    /// `(pipeline | aggregate)`.
    Pipeline {
        /// The stages before the aggregate.
        pipeline: Pipeline,
        /// The closing aggregate.
        aggregate: Aggregate,
    },
    /// A numeric literal (right side only).
    Static(Static),
    /// Arithmetic between two scalar pipelines.
    Binary {
        /// The operator.
        op: ArithOp,
        /// Left operand.
        lhs: Box<ScalarPipelineExpr>,
        /// Right operand.
        rhs: Box<ScalarPipelineExpr>,
    },
}

/// A metrics query: leaves, math between them, and second stages.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsExpr {
    /// `pipeline | function`.
    Leaf {
        /// The spanset pipeline feeding the function.
        pipeline: Pipeline,
        /// The first-stage metrics function.
        function: MetricsFunction,
    },
    /// A folded numeric constant (never both operands of a `Binary`).
    Scalar(Static),
    /// `lhs op rhs` with `op` one of `+ - * /`.
    Binary {
        /// The operator.
        op: ArithOp,
        /// Left operand.
        lhs: Box<MetricsExpr>,
        /// Right operand.
        rhs: Box<MetricsExpr>,
    },
    /// Second stages applied to `expr`, left to right. `stages` is never empty.
    Staged {
        /// The input series.
        expr: Box<MetricsExpr>,
        /// `topk`, `bottomk` and filters.
        stages: Vec<SecondStage>,
    },
}

/// First-stage metrics functions.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricsFunction {
    /// `rate() by (…)`.
    Rate {
        /// Grouping attributes.
        by: Vec<AttrRef>,
    },
    /// `count_over_time() by (…)`.
    CountOverTime {
        /// Grouping attributes.
        by: Vec<AttrRef>,
    },
    /// `min_over_time(a)`, `max_over_time(a)`, `sum_over_time(a)`, `avg_over_time(a)`,
    /// `histogram_over_time(a)`.
    OverTime {
        /// Which function.
        op: OverTimeOp,
        /// The measured attribute.
        attr: AttrRef,
        /// Grouping attributes.
        by: Vec<AttrRef>,
    },
    /// `quantile_over_time(a, q, …) by (…)`.
    QuantileOverTime {
        /// The measured attribute.
        attr: AttrRef,
        /// The requested quantiles, at least one.
        quantiles: Vec<f64>,
        /// Grouping attributes.
        by: Vec<AttrRef>,
    },
    /// `compare({ filter }, topN, start, end)`.
    Compare {
        /// The selection filter.
        filter: FieldExpr,
        /// Values kept per attribute.
        top_n: Option<i64>,
        /// Optional `(start, end)` bounds in Unix nanoseconds.
        bounds: Option<(i64, i64)>,
    },
}

/// The attribute-taking `_over_time` functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverTimeOp {
    /// `min_over_time`
    Min,
    /// `max_over_time`
    Max,
    /// `sum_over_time`
    Sum,
    /// `avg_over_time`
    Avg,
    /// `histogram_over_time`
    Histogram,
}

/// Operations applied to metrics series after the first stage.
#[derive(Debug, Clone, PartialEq)]
pub enum SecondStage {
    /// `| topk(k)`.
    TopK(i64),
    /// `| bottomk(k)`.
    BottomK(i64),
    /// `op value`, e.g. `> 10`.
    Filter {
        /// The comparison.
        op: CmpOp,
        /// The threshold.
        value: Static,
    },
}
