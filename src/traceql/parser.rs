//! Builds the [`ast`](super::ast) from tokens (reference §2).
//!
//! Two Pratt parsers share the precedence table of reference §2.3: one for field expressions
//! inside `{ }`, `by()` and aggregates, and one for everything outside braces. Outside braces
//! the same token means different things depending on its operands (`>` is "child" between
//! spansets and "greater than" after an aggregate or a metrics query), so the outer parser
//! classifies each operand as it builds it (`Typed`) and rejects combinations that Tempo's
//! grammar does not derive. Nothing here checks types of field expressions; that is
//! [`validate`](super::validate).

use super::ast::*;
use super::lexer::{IntrinsicScope, Pos, Token, tokenize};
use super::{MAX_NESTING, ParseError};

/// Parses a whole query.
pub fn parse(input: &str) -> Result<Query> {
    let mut parser = Parser {
        tokens: tokenize(input)?,
        at: 0,
        depth: 0,
    };
    parser.query()
}

/// Words that are keywords and so cannot be hint names (reference §1.3).
const KEYWORDS: &[&str] = &[
    "true",
    "false",
    "nil",
    "ok",
    "error",
    "unset",
    "unspecified",
    "internal",
    "server",
    "client",
    "producer",
    "consumer",
    "duration",
    "name",
    "status",
    "statusMessage",
    "kind",
    "parent",
    "rootName",
    "rootServiceName",
    "traceDuration",
    "nestedSetLeft",
    "nestedSetRight",
    "nestedSetParent",
    "id",
    "traceID",
    "spanID",
    "parentID",
    "timeSinceStart",
    "version",
    "rootService",
    "childCount",
    "count",
    "avg",
    "max",
    "min",
    "sum",
    "by",
    "coalesce",
    "select",
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
    "topk",
    "bottomk",
    "with",
];

static EOF: Token = Token::Eof;

/// An operand outside braces, classified by what it can combine with.
enum Typed {
    Spanset(SpansetExpr),
    /// An unparenthesised pipeline of two or more stages.
    Pipeline(Pipeline),
    /// A numeric constant; `literal` is false once folded or parenthesised.
    Scalar {
        value: Static,
        literal: bool,
    },
    /// Arithmetic containing at least one aggregate.
    Agg(ScalarExpr),
    ScalarFilter(ScalarFilter),
    /// `by()`, `select()`, `coalesce()`.
    Stage(Stage),
    /// An unparenthesised `pipeline | aggregate`.
    PipeAgg(Pipeline, Aggregate),
    ScalarPipe(ScalarPipelineExpr),
    ScalarPipeFilter(ScalarPipelineFilter),
    /// A metrics function not yet attached to a pipeline, with any filters written after it.
    MetricsFn(MetricsFunction, Vec<SecondStage>),
    Metrics(MetricsExpr),
    /// `topk()`/`bottomk()` and filters written after them.
    Second(Vec<SecondStage>),
}

impl Typed {
    fn describe(&self) -> &'static str {
        match self {
            Typed::Spanset(_) => "a spanset",
            Typed::Pipeline(_) => "a pipeline",
            Typed::Scalar { .. } => "a number",
            Typed::Agg(_) => "an aggregate",
            Typed::ScalarFilter(_) => "a scalar filter",
            Typed::Stage(_) => "a pipeline operation",
            Typed::PipeAgg(..) => "a pipeline ending in an aggregate",
            Typed::ScalarPipe(_) => "a scalar pipeline",
            Typed::ScalarPipeFilter(_) => "a scalar pipeline filter",
            Typed::MetricsFn(..) => "a metrics function",
            Typed::Metrics(_) => "a metrics query",
            Typed::Second(_) => "topk()/bottomk()",
        }
    }
}

struct Parser {
    tokens: Vec<(Token, Pos)>,
    at: usize,
    depth: usize,
}

type Result<T> = std::result::Result<T, ParseError>;

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.at).map_or(&EOF, |(t, _)| t)
    }

    fn pos(&self) -> Pos {
        self.tokens
            .get(self.at)
            .or(self.tokens.last())
            .map_or(Pos { line: 1, col: 1 }, |(_, p)| *p)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        token
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Token::Punct(q) if *q == p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Token::Word(v) if v == w)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T> {
        Err(ParseError::new(self.pos(), message))
    }

    fn unexpected<T>(&self, expected: &str) -> Result<T> {
        self.error(format!("unexpected {}, expected {expected}", self.peek()))
    }

    fn expect(&mut self, p: &str, why: &str) -> Result<()> {
        if self.is_punct(p) {
            self.next();
            Ok(())
        } else {
            self.unexpected(&format!("'{p}' {why}"))
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return self.error(format!(
                "query nests deeper than {MAX_NESTING} levels; simplify the expression"
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn check_height(&self, height: usize, pos: Pos) -> Result<()> {
        if height > MAX_NESTING {
            return Err(ParseError::new(
                pos,
                format!("expression nests deeper than {MAX_NESTING} levels; simplify it"),
            ));
        }
        Ok(())
    }

    // ---------- query ----------

    fn query(&mut self) -> Result<Query> {
        let start = self.pos();
        let (typed, _) = self.top(0)?;
        let body = self.body(typed, start)?;
        let mut hints = Vec::new();
        while self.is_word("with") {
            self.next();
            hints = self.hints()?;
        }
        if *self.peek() != Token::Eof {
            return self.unexpected("end of query");
        }
        Ok(Query { body, hints })
    }

    /// The body an outermost operand stands for; `pos` is where the query starts.
    fn body(&self, typed: Typed, pos: Pos) -> Result<Body> {
        let fail = |m: &str| Err(ParseError::new(pos, m));
        match typed {
            Typed::Metrics(e) => Ok(Body::Metrics(e)),
            Typed::ScalarPipeFilter(f) => Ok(Body::ScalarPipelineFilter(f)),
            Typed::Scalar { .. } => fail(
                "a query needs a spanset filter such as `{ }`; a constant alone is not a query",
            ),
            Typed::Agg(_) | Typed::PipeAgg(..) | Typed::ScalarPipe(_) => {
                self.unexpected("a comparison after the aggregate, e.g. `{ } | count() > 2`")
            }
            Typed::MetricsFn(..) => {
                fail("a metrics function needs a spanset pipeline before it, e.g. `{ } | rate()`")
            }
            Typed::Second(_) => fail(
                "topk() and bottomk() need a metrics function before them, e.g. `{ } | rate() | topk(5)`",
            ),
            other => Ok(Body::Pipeline(Self::into_pipeline(other, pos)?)),
        }
    }

    fn hints(&mut self) -> Result<Vec<Hint>> {
        self.expect("(", "after 'with'")?;
        let mut hints = Vec::new();
        loop {
            let name = match self.peek() {
                Token::Word(w) if !KEYWORDS.contains(&w.as_str()) => w.clone(),
                _ => return self.unexpected("a hint name such as `sample`"),
            };
            self.next();
            self.expect("=", "after the hint name")?;
            let value = self.hint_value()?;
            hints.push(Hint { name, value });
            if self.is_punct(",") {
                self.next();
                continue;
            }
            self.expect(")", "to close 'with('")?;
            return Ok(hints);
        }
    }

    fn hint_value(&mut self) -> Result<Static> {
        let negative = self.is_punct("-");
        if negative {
            self.next();
        }
        let value = match self.peek() {
            Token::Int(v) => Static::Int(if negative { v.wrapping_neg() } else { *v }),
            Token::Float(v) => Static::Float(if negative { -v } else { *v }),
            Token::Duration(v) => Static::Duration(if negative { v.wrapping_neg() } else { *v }),
            Token::Str(s) if !negative => Static::String(s.clone()),
            Token::Word(w) if !negative => match keyword_static(w) {
                Some(s) if s != Static::Nil => s,
                _ => return self.unexpected("a literal hint value"),
            },
            _ => return self.unexpected("a literal hint value"),
        };
        self.next();
        Ok(value)
    }

    // ---------- outside braces ----------

    fn top(&mut self, min_bp: u8) -> Result<(Typed, usize)> {
        self.enter()?;
        let (mut lhs, mut height) = self.top_prefix()?;
        while let Token::Punct(op) = *self.peek() {
            let Some((bp, right_assoc)) = top_binding(op) else {
                break;
            };
            if bp < min_bp {
                break;
            }
            let pos = self.pos();
            self.next();
            let (rhs, rhs_height) = self.top(if right_assoc { bp } else { bp + 1 })?;
            height = height.max(rhs_height) + usize::from(op != "|");
            self.check_height(height, pos)?;
            lhs = Self::combine(op, lhs, rhs, pos)?;
        }
        self.leave();
        Ok((lhs, height))
    }

    fn top_prefix(&mut self) -> Result<(Typed, usize)> {
        let pos = self.pos();
        match self.peek().clone() {
            Token::Punct("{") => {
                let (filter, height) = self.spanset_filter()?;
                Ok((Typed::Spanset(SpansetExpr::Filter(filter)), height + 1))
            }
            Token::Punct("(") => {
                self.next();
                let (inner, height) = self.top(0)?;
                self.expect(")", "to close '('")?;
                Ok((Self::paren(inner, pos)?, height))
            }
            Token::Punct("-") => {
                self.next();
                let (operand, height) = self.top(9)?;
                let Typed::Scalar { value, .. } = operand else {
                    return Err(ParseError::new(
                        pos,
                        "unary '-' outside braces applies only to numbers",
                    ));
                };
                let value = negate(value).ok_or_else(|| {
                    ParseError::new(pos, "negating this constant overflows 64 bits")
                })?;
                Ok((
                    Typed::Scalar {
                        value,
                        literal: false,
                    },
                    height + 1,
                ))
            }
            Token::Int(v) => self.scalar_literal(Static::Int(v)),
            Token::Float(v) => self.scalar_literal(Static::Float(v)),
            Token::Duration(v) => self.scalar_literal(Static::Duration(v)),
            Token::Word(w) => {
                let typed = self.top_word(&w)?;
                Ok((typed, 2))
            }
            _ => self.unexpected(
                "'{', '(', a number, an aggregate such as count(), by(), select() or a metrics function",
            ),
        }
    }

    fn scalar_literal(&mut self, value: Static) -> Result<(Typed, usize)> {
        self.next();
        Ok((
            Typed::Scalar {
                value,
                literal: true,
            },
            1,
        ))
    }

    fn top_word(&mut self, word: &str) -> Result<Typed> {
        let aggregate = match word {
            "count" => Some(AggregateOp::Count),
            "min" => Some(AggregateOp::Min),
            "max" => Some(AggregateOp::Max),
            "avg" => Some(AggregateOp::Avg),
            "sum" => Some(AggregateOp::Sum),
            _ => None,
        };
        if let Some(op) = aggregate {
            self.next();
            self.expect("(", &format!("after '{word}'"))?;
            let expr = if op == AggregateOp::Count {
                None
            } else {
                Some(self.field_root()?.0)
            };
            self.expect(")", &format!("to close '{word}('"))?;
            return Ok(Typed::Agg(ScalarExpr::Aggregate(Aggregate { op, expr })));
        }
        match word {
            "by" => {
                self.next();
                self.expect("(", "after 'by'")?;
                let (expr, _) = self.field_root()?;
                self.expect(")", "to close 'by('; by() takes exactly one expression")?;
                Ok(Typed::Stage(Stage::GroupBy(expr)))
            }
            "select" => {
                self.next();
                self.expect("(", "after 'select'")?;
                let attrs = self.attr_list("select(")?;
                Ok(Typed::Stage(Stage::Select(attrs)))
            }
            "coalesce" => {
                self.next();
                self.expect("(", "after 'coalesce'")?;
                self.expect(")", "; coalesce() takes no arguments")?;
                Ok(Typed::Stage(Stage::Coalesce))
            }
            "topk" | "bottomk" => {
                self.next();
                self.expect("(", &format!("after '{word}'"))?;
                let Token::Int(k) = *self.peek() else {
                    return self.unexpected(&format!("a positive integer in {word}()"));
                };
                self.next();
                self.expect(")", &format!("to close '{word}('"))?;
                let stage = if word == "topk" {
                    SecondStage::TopK(k)
                } else {
                    SecondStage::BottomK(k)
                };
                Ok(Typed::Second(vec![stage]))
            }
            _ => match self.metrics_function(word)? {
                Some(function) => Ok(Typed::MetricsFn(function, Vec::new())),
                None => self.error(format!(
                    "unknown function or identifier '{word}'; outside braces a query uses '{{', '(', \
                     count/min/max/avg/sum, by, select, coalesce, or a metrics function such as rate"
                )),
            },
        }
    }

    fn metrics_function(&mut self, word: &str) -> Result<Option<MetricsFunction>> {
        let over_time = match word {
            "min_over_time" => Some(OverTimeOp::Min),
            "max_over_time" => Some(OverTimeOp::Max),
            "sum_over_time" => Some(OverTimeOp::Sum),
            "avg_over_time" => Some(OverTimeOp::Avg),
            "histogram_over_time" => Some(OverTimeOp::Histogram),
            _ => None,
        };
        let known = over_time.is_some()
            || matches!(
                word,
                "rate" | "count_over_time" | "quantile_over_time" | "compare"
            );
        if !known {
            return Ok(None);
        }
        self.next();
        self.expect("(", &format!("after '{word}'"))?;
        let function = if let Some(op) = over_time {
            let attr = self.attr_ref()?;
            self.expect(")", &format!("to close '{word}('; it takes one attribute"))?;
            MetricsFunction::OverTime {
                op,
                attr,
                by: self.by_list()?,
            }
        } else if word == "quantile_over_time" {
            let attr = self.attr_ref()?;
            let mut quantiles = Vec::new();
            while self.is_punct(",") {
                self.next();
                match *self.peek() {
                    Token::Int(v) => quantiles.push(v as f64),
                    Token::Float(v) => quantiles.push(v),
                    _ => return self.unexpected("a quantile such as 0.99"),
                }
                self.next();
            }
            if quantiles.is_empty() {
                return self.unexpected(
                    "',' and at least one quantile, e.g. quantile_over_time(duration, .99)",
                );
            }
            self.expect(")", "to close 'quantile_over_time('")?;
            MetricsFunction::QuantileOverTime {
                attr,
                quantiles,
                by: self.by_list()?,
            }
        } else if word == "compare" {
            if !self.is_punct("{") {
                return self
                    .unexpected("a spanset filter `{ … }` as the first argument of compare()");
            }
            let (filter, _) = self.spanset_filter()?;
            let mut numbers = Vec::new();
            while self.is_punct(",") && numbers.len() < 3 {
                self.next();
                let Token::Int(v) = *self.peek() else {
                    return self.unexpected("an integer argument of compare()");
                };
                self.next();
                numbers.push(v);
            }
            let (top_n, bounds) = match numbers[..] {
                [] => (None, None),
                [n] => (Some(n), None),
                [n, start, end] => (Some(n), Some((start, end))),
                _ => {
                    return self.unexpected(
                        "compare({…}, topN) or compare({…}, topN, startNanos, endNanos)",
                    );
                }
            };
            self.expect(")", "to close 'compare('")?;
            MetricsFunction::Compare {
                filter,
                top_n,
                bounds,
            }
        } else {
            self.expect(")", &format!("; {word}() takes no arguments"))?;
            let by = self.by_list()?;
            if word == "rate" {
                MetricsFunction::Rate { by }
            } else {
                MetricsFunction::CountOverTime { by }
            }
        };
        Ok(Some(function))
    }

    fn by_list(&mut self) -> Result<Vec<AttrRef>> {
        if !self.is_word("by") {
            return Ok(Vec::new());
        }
        self.next();
        self.expect("(", "after 'by'")?;
        self.attr_list("by(")
    }

    /// `attr {, attr} )`, after the opening parenthesis.
    fn attr_list(&mut self, what: &str) -> Result<Vec<AttrRef>> {
        let mut attrs = vec![self.attr_ref()?];
        while self.is_punct(",") {
            self.next();
            attrs.push(self.attr_ref()?);
        }
        self.expect(")", &format!("to close '{what}'; it takes attributes only"))?;
        Ok(attrs)
    }

    fn combine(op: &'static str, lhs: Typed, rhs: Typed, pos: Pos) -> Result<Typed> {
        let fail = |m: String| Err(ParseError::new(pos, m));
        if op == "|" {
            return Self::pipe(lhs, rhs, pos);
        }
        let lhs = match (spanset_op(op), lhs) {
            (Some(spanset_op), Typed::Spanset(l)) => {
                let Typed::Spanset(r) = rhs else {
                    return fail(format!(
                        "'{op}' between spansets needs a spanset on its right (`{{ … }}` or a parenthesised pipeline), found {}",
                        rhs.describe()
                    ));
                };
                return Ok(Typed::Spanset(SpansetExpr::Binary {
                    op: spanset_op,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                }));
            }
            (_, lhs) => lhs,
        };
        if let Some(cmp) = cmp_op(op) {
            return Self::compare(cmp, lhs, rhs, op, pos);
        }
        if let Some(arith) = arith_op(op) {
            return Self::arith(arith, lhs, rhs, op, pos);
        }
        fail(format!(
            "'{op}' joins spansets, but its left side is {}; wrap pipelines in parentheses, e.g. ({{ a }} | count() > 1) {op} ({{ b }})",
            lhs.describe()
        ))
    }

    fn compare(cmp: CmpOp, lhs: Typed, rhs: Typed, op: &str, pos: Pos) -> Result<Typed> {
        let fail = |m: String| Err(ParseError::new(pos, m));
        let filter = |value: Static| SecondStage::Filter { op: cmp, value };
        Ok(match (lhs, rhs) {
            (Typed::Agg(l), Typed::Agg(r)) => Typed::ScalarFilter(ScalarFilter {
                op: cmp,
                lhs: l,
                rhs: r,
            }),
            (Typed::Agg(l), Typed::Scalar { value, .. }) => Typed::ScalarFilter(ScalarFilter {
                op: cmp,
                lhs: l,
                rhs: ScalarExpr::Static(value),
            }),
            (Typed::Scalar { value, .. }, Typed::Agg(r)) => Typed::ScalarFilter(ScalarFilter {
                op: cmp,
                lhs: ScalarExpr::Static(value),
                rhs: r,
            }),
            (Typed::MetricsFn(f, mut stages), Typed::Scalar { value, .. }) => {
                stages.push(filter(value));
                Typed::MetricsFn(f, stages)
            }
            (Typed::Second(mut stages), Typed::Scalar { value, .. }) => {
                stages.push(filter(value));
                Typed::Second(stages)
            }
            (Typed::Metrics(e), Typed::Scalar { value, .. }) => {
                Typed::Metrics(staged(e, vec![filter(value)]))
            }
            (Typed::ScalarPipe(l), Typed::ScalarPipe(r)) => {
                Typed::ScalarPipeFilter(ScalarPipelineFilter {
                    op: cmp,
                    lhs: l,
                    rhs: r,
                })
            }
            (
                Typed::ScalarPipe(l),
                Typed::Scalar {
                    value,
                    literal: true,
                },
            ) => Typed::ScalarPipeFilter(ScalarPipelineFilter {
                op: cmp,
                lhs: l,
                rhs: ScalarPipelineExpr::Static(value),
            }),
            (Typed::ScalarPipe(_), Typed::Scalar { .. }) => {
                return fail(
                    "a scalar pipeline can only be compared with a plain number literal".into(),
                );
            }
            (Typed::Scalar { .. }, Typed::Scalar { .. }) => {
                return fail(format!(
                    "'{op}' between two constants is not a query; compare an aggregate or a metrics query instead"
                ));
            }
            (Typed::Spanset(_), _) => {
                return fail(format!(
                    "'{op}' cannot follow a spanset; spansets join with && || > < >> << ~ and their !/& forms"
                ));
            }
            (Typed::MetricsFn(..), _) | (Typed::Metrics(_), _) | (Typed::Second(_), _) => {
                return fail(format!(
                    "a metrics query can only be compared with a number, e.g. `{op} 10`"
                ));
            }
            (l, r) => {
                return fail(format!(
                    "cannot compare {} with {}",
                    l.describe(),
                    r.describe()
                ));
            }
        })
    }

    fn arith(arith: ArithOp, lhs: Typed, rhs: Typed, op: &str, pos: Pos) -> Result<Typed> {
        let fail = |m: String| Err(ParseError::new(pos, m));
        Ok(match (lhs, rhs) {
            (Typed::Scalar { value: l, .. }, Typed::Scalar { value: r, .. }) => Typed::Scalar {
                value: fold(arith, l, r).map_err(|m| ParseError::new(pos, m))?,
                literal: false,
            },
            (Typed::Agg(l), Typed::Agg(r)) => agg_binary(arith, l, r),
            (Typed::Agg(l), Typed::Scalar { value, .. }) => {
                agg_binary(arith, l, ScalarExpr::Static(value))
            }
            (Typed::Scalar { value, .. }, Typed::Agg(r)) => {
                agg_binary(arith, ScalarExpr::Static(value), r)
            }
            (Typed::Metrics(l), Typed::Metrics(r)) => metrics_binary(arith, l, r, op, pos)?,
            (Typed::Metrics(l), Typed::Scalar { value, .. }) => {
                metrics_binary(arith, l, metrics_scalar(value, pos)?, op, pos)?
            }
            (Typed::Scalar { value, .. }, Typed::Metrics(r)) => {
                metrics_binary(arith, metrics_scalar(value, pos)?, r, op, pos)?
            }
            (Typed::ScalarPipe(l), Typed::ScalarPipe(r)) => {
                Typed::ScalarPipe(ScalarPipelineExpr::Binary {
                    op: arith,
                    lhs: Box::new(l),
                    rhs: Box::new(r),
                })
            }
            (Typed::MetricsFn(..), _) | (_, Typed::MetricsFn(..)) => {
                return fail(format!(
                    "wrap a metrics pipeline in parentheses to use it with '{op}', e.g. ({{ }} | rate()) {op} 2"
                ));
            }
            (l, r) => {
                return fail(format!(
                    "'{op}' cannot combine {} with {}",
                    l.describe(),
                    r.describe()
                ));
            }
        })
    }

    fn pipe(lhs: Typed, rhs: Typed, pos: Pos) -> Result<Typed> {
        let fail = |m: &str| Err(ParseError::new(pos, m));
        match lhs {
            Typed::Metrics(e) => match rhs {
                Typed::Second(stages) => Ok(Typed::Metrics(staged(e, stages))),
                _ => fail(
                    "after a metrics query only topk(), bottomk() or a comparison may follow '|'",
                ),
            },
            Typed::MetricsFn(..) => {
                fail("a metrics function needs a spanset pipeline before it, e.g. `{ } | rate()`")
            }
            Typed::Second(_) => fail("topk() and bottomk() need a metrics function before them"),
            lhs => {
                let mut pipeline = Self::into_pipeline(lhs, pos)?;
                let stage = match rhs {
                    Typed::Spanset(s) => Stage::Spanset(s),
                    Typed::ScalarFilter(f) => Stage::ScalarFilter(f),
                    Typed::Stage(s) => s,
                    Typed::Agg(ScalarExpr::Aggregate(aggregate)) => {
                        return Ok(Typed::PipeAgg(pipeline, aggregate));
                    }
                    Typed::MetricsFn(function, stages) => {
                        let leaf = MetricsExpr::Leaf { pipeline, function };
                        return Ok(Typed::Metrics(staged(leaf, stages)));
                    }
                    Typed::Agg(_) => {
                        return fail(
                            "an aggregate must be compared with a number, e.g. `| count() > 2`",
                        );
                    }
                    Typed::Second(_) => {
                        return fail(
                            "topk() and bottomk() need a metrics function before them, e.g. `{ } | rate() | topk(5)`",
                        );
                    }
                    other => {
                        return Err(ParseError::new(
                            pos,
                            format!("{} cannot be a pipeline stage", other.describe()),
                        ));
                    }
                };
                pipeline.stages.push(stage);
                Ok(Typed::Pipeline(pipeline))
            }
        }
    }

    /// The pipeline an operand stands for, when it is used where a pipeline is expected.
    fn into_pipeline(typed: Typed, pos: Pos) -> Result<Pipeline> {
        let stage = match typed {
            Typed::Pipeline(p) => return Ok(p),
            Typed::Spanset(s) => Stage::Spanset(s),
            Typed::ScalarFilter(f) => Stage::ScalarFilter(f),
            Typed::Stage(Stage::Coalesce) => {
                return Err(ParseError::new(
                    pos,
                    "a pipeline cannot start with coalesce(); it merges the spansets of earlier stages",
                ));
            }
            Typed::Stage(s) => s,
            Typed::Agg(_) | Typed::PipeAgg(..) => {
                return Err(ParseError::new(
                    pos,
                    "an aggregate must be compared with a number, e.g. `count() > 2`",
                ));
            }
            other => {
                return Err(ParseError::new(
                    pos,
                    format!(
                        "expected a spanset filter, a scalar filter, by() or select(), found {}",
                        other.describe()
                    ),
                ));
            }
        };
        Ok(Pipeline {
            stages: vec![stage],
        })
    }

    fn paren(inner: Typed, pos: Pos) -> Result<Typed> {
        Ok(match inner {
            Typed::Spanset(s) => Typed::Spanset(s),
            Typed::Scalar { value, .. } => Typed::Scalar {
                value,
                literal: false,
            },
            Typed::Agg(e) => Typed::Agg(e),
            Typed::PipeAgg(pipeline, aggregate) => {
                Typed::ScalarPipe(ScalarPipelineExpr::Pipeline {
                    pipeline,
                    aggregate,
                })
            }
            Typed::ScalarPipe(e) => Typed::ScalarPipe(e),
            Typed::Metrics(e) => Typed::Metrics(e),
            Typed::MetricsFn(..) => {
                return Err(ParseError::new(
                    pos,
                    "a metrics function needs a spanset pipeline before it, e.g. `({ } | rate())`",
                ));
            }
            Typed::Second(_) => {
                return Err(ParseError::new(
                    pos,
                    "topk() and bottomk() need a metrics function before them",
                ));
            }
            Typed::ScalarPipeFilter(_) => {
                return Err(ParseError::new(
                    pos,
                    "a comparison of scalar pipelines cannot be nested",
                ));
            }
            other => {
                let pipeline = Self::into_pipeline(other, pos)?;
                Typed::Spanset(SpansetExpr::Pipeline(Box::new(pipeline)))
            }
        })
    }

    // ---------- inside braces ----------

    /// `{ }` or `{ expr }`; `{}` is `{ true }`.
    fn spanset_filter(&mut self) -> Result<(FieldExpr, usize)> {
        self.expect("{", "to open a spanset filter")?;
        if self.is_punct("}") {
            self.next();
            return Ok((FieldExpr::Static(Static::Bool(true)), 1));
        }
        let result = self.field_root()?;
        self.expect("}", "to close the spanset filter")?;
        Ok(result)
    }

    /// A field expression that is not a bare `nil`.
    fn field_root(&mut self) -> Result<(FieldExpr, usize)> {
        let pos = self.pos();
        let result = self.field(0)?;
        if result.0 == FieldExpr::Static(Static::Nil) {
            return Err(ParseError::new(
                pos,
                "nil can only be compared with = or !=, e.g. `.foo != nil`",
            ));
        }
        Ok(result)
    }

    fn field(&mut self, min_bp: u8) -> Result<(FieldExpr, usize)> {
        self.enter()?;
        let (mut lhs, mut height) = self.field_prefix()?;
        while let Token::Punct(op) = *self.peek() {
            let Some((binary, bp, right_assoc)) = field_binding(op) else {
                break;
            };
            if bp < min_bp {
                break;
            }
            let pos = self.pos();
            self.next();
            let (rhs, rhs_height) = self.field(if right_assoc { bp } else { bp + 1 })?;
            let nil = FieldExpr::Static(Static::Nil);
            if (lhs == nil || rhs == nil) && !matches!(binary, BinaryOp::Eq | BinaryOp::Neq) {
                return Err(ParseError::new(
                    pos,
                    format!("nil can only be compared with = or !=, not '{op}'"),
                ));
            }
            height = height.max(rhs_height) + 1;
            self.check_height(height, pos)?;
            lhs = FieldExpr::Binary {
                op: binary,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            };
        }
        self.leave();
        Ok((lhs, height))
    }

    fn field_prefix(&mut self) -> Result<(FieldExpr, usize)> {
        let pos = self.pos();
        let token = self.peek().clone();
        let unary = match token {
            Token::Punct("-") => Some((UnaryOp::Neg, 6)),
            Token::Punct("!") => Some((UnaryOp::Not, 7)),
            _ => None,
        };
        if let Some((op, bp)) = unary {
            self.next();
            let (expr, height) = self.field(bp)?;
            if expr == FieldExpr::Static(Static::Nil) {
                return Err(ParseError::new(pos, "nil cannot be negated"));
            }
            self.check_height(height + 1, pos)?;
            return Ok((
                FieldExpr::Unary {
                    op,
                    expr: Box::new(expr),
                },
                height + 1,
            ));
        }
        if token == Token::Punct("(") {
            self.next();
            let result = self.field(0)?;
            self.expect(")", "to close '('")?;
            return Ok(result);
        }
        let expr = match token {
            Token::Str(s) => FieldExpr::Static(Static::String(s)),
            Token::Int(v) => FieldExpr::Static(Static::Int(v)),
            Token::Float(v) => FieldExpr::Static(Static::Float(v)),
            Token::Duration(v) => FieldExpr::Static(Static::Duration(v)),
            Token::Word(ref w) => match keyword_static(w) {
                Some(s) => FieldExpr::Static(s),
                None => FieldExpr::Attr(self.attr_ref()?),
            },
            Token::Attr { .. } | Token::Scope(_) => FieldExpr::Attr(self.attr_ref()?),
            _ => return self.unexpected("a value, an attribute such as `.foo`, or '('"),
        };
        if matches!(expr, FieldExpr::Static(_)) {
            self.next();
        }
        Ok((expr, 1))
    }

    /// An intrinsic, scoped intrinsic or attribute.
    fn attr_ref(&mut self) -> Result<AttrRef> {
        let pos = self.pos();
        match self.next() {
            Token::Attr {
                parent,
                scope,
                name,
            } => Ok(AttrRef::Attribute(Attribute {
                parent,
                scope,
                name,
            })),
            Token::Scope(scope) => {
                let word = match self.peek() {
                    Token::Word(w) => w.clone(),
                    _ => return self.unexpected("an intrinsic name after the scope"),
                };
                match scoped_intrinsic(scope, &word) {
                    Some(i) => {
                        self.next();
                        Ok(AttrRef::Intrinsic(i))
                    }
                    None => self.error(format!(
                        "'{word}' is not an intrinsic of '{}:'; it has {}",
                        scope_name(scope),
                        scope_members(scope)
                    )),
                }
            }
            Token::Word(w) => match unscoped_intrinsic(&w) {
                Some(i) => Ok(AttrRef::Intrinsic(i)),
                None if w == "childCount" => Err(ParseError::new(
                    pos,
                    "childCount needs its scope: write span:childCount",
                )),
                None => Err(ParseError::new(
                    pos,
                    format!(
                        "unknown identifier '{w}'; attributes need a prefix such as `.{w}` or `span.{w}`"
                    ),
                )),
            },
            other => Err(ParseError::new(
                pos,
                format!("unexpected {other}, expected an attribute such as `.foo` or an intrinsic"),
            )),
        }
    }
}

/// Binding power and right-associativity of operators outside braces.
fn top_binding(op: &str) -> Option<(u8, bool)> {
    Some(match op {
        "|" => (1, false),
        "&&" | "||" => (2, false),
        "=" | "!=" | "<" | "<=" | ">" | ">=" | ">>" | "<<" | "~" | "!>" | "!<" | "!>>" | "!<<"
        | "!~" | "&>" | "&<" | "&>>" | "&<<" | "&~" => (3, false),
        "+" | "-" => (5, false),
        "*" | "/" | "%" => (7, false),
        "^" => (8, true),
        _ => return None,
    })
}

/// Operator, binding power and right-associativity inside braces (reference §2.3).
fn field_binding(op: &str) -> Option<(BinaryOp, u8, bool)> {
    Some(match op {
        "&&" => (BinaryOp::And, 2, false),
        "||" => (BinaryOp::Or, 2, false),
        "=" => (BinaryOp::Eq, 3, false),
        "!=" => (BinaryOp::Neq, 3, false),
        "<" => (BinaryOp::Lt, 3, false),
        "<=" => (BinaryOp::Lte, 3, false),
        ">" => (BinaryOp::Gt, 3, false),
        ">=" => (BinaryOp::Gte, 3, false),
        "=~" => (BinaryOp::Regex, 3, false),
        "!~" => (BinaryOp::NotRegex, 3, false),
        "+" => (BinaryOp::Add, 5, false),
        "-" => (BinaryOp::Sub, 5, false),
        "*" => (BinaryOp::Mul, 7, false),
        "/" => (BinaryOp::Div, 7, false),
        "%" => (BinaryOp::Mod, 7, false),
        "^" => (BinaryOp::Pow, 8, true),
        _ => return None,
    })
}

fn spanset_op(op: &str) -> Option<SpansetOp> {
    Some(match op {
        "&&" => SpansetOp::And,
        "||" => SpansetOp::Or,
        ">" => SpansetOp::Child,
        "<" => SpansetOp::Parent,
        ">>" => SpansetOp::Descendant,
        "<<" => SpansetOp::Ancestor,
        "~" => SpansetOp::Sibling,
        "!>" => SpansetOp::NotChild,
        "!<" => SpansetOp::NotParent,
        "!>>" => SpansetOp::NotDescendant,
        "!<<" => SpansetOp::NotAncestor,
        "!~" => SpansetOp::NotSibling,
        "&>" => SpansetOp::UnionChild,
        "&<" => SpansetOp::UnionParent,
        "&>>" => SpansetOp::UnionDescendant,
        "&<<" => SpansetOp::UnionAncestor,
        "&~" => SpansetOp::UnionSibling,
        _ => return None,
    })
}

fn cmp_op(op: &str) -> Option<CmpOp> {
    Some(match op {
        "=" => CmpOp::Eq,
        "!=" => CmpOp::Neq,
        "<" => CmpOp::Lt,
        "<=" => CmpOp::Lte,
        ">" => CmpOp::Gt,
        ">=" => CmpOp::Gte,
        _ => return None,
    })
}

fn arith_op(op: &str) -> Option<ArithOp> {
    Some(match op {
        "+" => ArithOp::Add,
        "-" => ArithOp::Sub,
        "*" => ArithOp::Mul,
        "/" => ArithOp::Div,
        "%" => ArithOp::Mod,
        "^" => ArithOp::Pow,
        _ => return None,
    })
}

fn agg_binary(op: ArithOp, lhs: ScalarExpr, rhs: ScalarExpr) -> Typed {
    Typed::Agg(ScalarExpr::Binary {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
    })
}

fn metrics_binary(
    op: ArithOp,
    lhs: MetricsExpr,
    rhs: MetricsExpr,
    text: &str,
    pos: Pos,
) -> Result<Typed> {
    if matches!(op, ArithOp::Mod | ArithOp::Pow) {
        return Err(ParseError::new(
            pos,
            format!("'{text}' is not supported between metrics queries; use + - * /"),
        ));
    }
    Ok(Typed::Metrics(MetricsExpr::Binary {
        op,
        lhs: Box::new(lhs),
        rhs: Box::new(rhs),
    }))
}

/// A constant operand of metrics math; durations are refused (reference §2.2).
fn metrics_scalar(value: Static, pos: Pos) -> Result<MetricsExpr> {
    if matches!(value, Static::Duration(_)) {
        return Err(ParseError::new(
            pos,
            "a duration cannot be an operand of metrics arithmetic",
        ));
    }
    Ok(MetricsExpr::Scalar(value))
}

fn staged(expr: MetricsExpr, stages: Vec<SecondStage>) -> MetricsExpr {
    if stages.is_empty() {
        return expr;
    }
    match expr {
        MetricsExpr::Staged {
            expr,
            stages: mut existing,
        } => {
            existing.extend(stages);
            MetricsExpr::Staged {
                expr,
                stages: existing,
            }
        }
        expr => MetricsExpr::Staged {
            expr: Box::new(expr),
            stages,
        },
    }
}

fn negate(value: Static) -> Option<Static> {
    match value {
        Static::Int(v) => v.checked_neg().map(Static::Int),
        Static::Float(v) => Some(Static::Float(-v)),
        Static::Duration(v) => v.checked_neg().map(Static::Duration),
        _ => None,
    }
}

/// Folds constant arithmetic outside braces, with Tempo's int/float rules.
fn fold(op: ArithOp, lhs: Static, rhs: Static) -> std::result::Result<Static, String> {
    if matches!(lhs, Static::Duration(_)) || matches!(rhs, Static::Duration(_)) {
        return Err(
            "a duration cannot be part of constant arithmetic; write the result, e.g. 20s".into(),
        );
    }
    if matches!(op, ArithOp::Mod | ArithOp::Pow) {
        return Err("constant arithmetic supports only + - * /".into());
    }
    let overflow = || "constant arithmetic overflows 64 bits".to_string();
    if let (Static::Int(a), Static::Int(b)) = (&lhs, &rhs) {
        let (a, b) = (*a, *b);
        let value = match op {
            ArithOp::Add => a.checked_add(b),
            ArithOp::Sub => a.checked_sub(b),
            ArithOp::Mul => a.checked_mul(b),
            _ if b == 0 => return Err("division by zero in a constant".into()),
            _ => a.checked_div(b),
        };
        return value.map(Static::Int).ok_or_else(overflow);
    }
    let as_float = |s: &Static| match s {
        Static::Int(v) => Some(*v as f64),
        Static::Float(v) => Some(*v),
        _ => None,
    };
    let (Some(a), Some(b)) = (as_float(&lhs), as_float(&rhs)) else {
        return Err("constant arithmetic needs numbers".into());
    };
    let value = match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        _ => a / b,
    };
    if !value.is_finite() {
        return Err("constant arithmetic does not give a finite number".into());
    }
    Ok(Static::Float(value))
}

/// Words that are literal values inside braces.
fn keyword_static(word: &str) -> Option<Static> {
    Some(match word {
        "true" => Static::Bool(true),
        "false" => Static::Bool(false),
        "nil" => Static::Nil,
        "ok" => Static::Status(Status::Ok),
        "error" => Static::Status(Status::Error),
        "unset" => Static::Status(Status::Unset),
        "unspecified" => Static::Kind(Kind::Unspecified),
        "internal" => Static::Kind(Kind::Internal),
        "server" => Static::Kind(Kind::Server),
        "client" => Static::Kind(Kind::Client),
        "producer" => Static::Kind(Kind::Producer),
        "consumer" => Static::Kind(Kind::Consumer),
        "minInt" => Static::Int(i64::MIN),
        "maxInt" => Static::Int(i64::MAX),
        _ => return None,
    })
}

fn unscoped_intrinsic(word: &str) -> Option<Intrinsic> {
    Some(match word {
        "duration" => Intrinsic::Duration,
        "name" => Intrinsic::Name,
        "status" => Intrinsic::Status,
        "statusMessage" => Intrinsic::StatusMessage,
        "kind" => Intrinsic::Kind,
        "parent" => Intrinsic::Parent,
        "rootName" => Intrinsic::TraceRootName,
        "rootServiceName" => Intrinsic::TraceRootService,
        "traceDuration" => Intrinsic::TraceDuration,
        "nestedSetLeft" => Intrinsic::NestedSetLeft,
        "nestedSetRight" => Intrinsic::NestedSetRight,
        "nestedSetParent" => Intrinsic::NestedSetParent,
        _ => return None,
    })
}

fn scoped_intrinsic(scope: IntrinsicScope, word: &str) -> Option<Intrinsic> {
    use IntrinsicScope as S;
    Some(match (scope, word) {
        (S::Trace, "duration") => Intrinsic::TraceDuration,
        (S::Trace, "rootName") => Intrinsic::TraceRootName,
        (S::Trace, "rootService") => Intrinsic::TraceRootService,
        (S::Trace, "id") => Intrinsic::TraceId,
        (S::Span, "duration") => Intrinsic::Duration,
        (S::Span, "name") => Intrinsic::Name,
        (S::Span, "kind") => Intrinsic::Kind,
        (S::Span, "status") => Intrinsic::Status,
        (S::Span, "statusMessage") => Intrinsic::StatusMessage,
        (S::Span, "id") => Intrinsic::SpanId,
        (S::Span, "parentID") => Intrinsic::ParentId,
        (S::Span, "childCount") => Intrinsic::ChildCount,
        (S::Event, "name") => Intrinsic::EventName,
        (S::Event, "timeSinceStart") => Intrinsic::EventTimeSinceStart,
        (S::Link, "traceID") => Intrinsic::LinkTraceId,
        (S::Link, "spanID") => Intrinsic::LinkSpanId,
        (S::Instrumentation, "name") => Intrinsic::InstrumentationName,
        (S::Instrumentation, "version") => Intrinsic::InstrumentationVersion,
        _ => return None,
    })
}

fn scope_name(scope: IntrinsicScope) -> &'static str {
    match scope {
        IntrinsicScope::Trace => "trace",
        IntrinsicScope::Span => "span",
        IntrinsicScope::Event => "event",
        IntrinsicScope::Link => "link",
        IntrinsicScope::Instrumentation => "instrumentation",
    }
}

fn scope_members(scope: IntrinsicScope) -> &'static str {
    match scope {
        IntrinsicScope::Trace => "duration, rootName, rootService, id",
        IntrinsicScope::Span => {
            "duration, name, kind, status, statusMessage, id, parentID, childCount"
        }
        IntrinsicScope::Event => "name, timeSinceStart",
        IntrinsicScope::Link => "traceID, spanID",
        IntrinsicScope::Instrumentation => "name, version",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `{ expr }` and prints the field expression fully parenthesised.
    fn grouping(expr: &str) -> String {
        let query = parse(&format!("{{ {expr} }}")).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let Body::Pipeline(pipeline) = query.body else {
            panic!("{expr}: not a pipeline");
        };
        match pipeline.stages.first() {
            Some(Stage::Spanset(SpansetExpr::Filter(f))) => f.to_string(),
            _ => panic!("{expr}: not a filter"),
        }
    }

    fn spanset_grouping(query: &str) -> String {
        parse(query)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .to_string()
    }

    #[test]
    fn pipe_is_loosest() {
        assert_eq!(
            spanset_grouping("{ .a } >> { .b } | count() > 2"),
            "{ .a } >> { .b } | count() > 2"
        );
        let query = parse("{ .a } && { .b } | { .c }").unwrap_or_else(|e| panic!("{e}"));
        let Body::Pipeline(p) = query.body else {
            panic!("not a pipeline")
        };
        assert_eq!(p.stages.len(), 2);
    }

    #[test]
    fn and_or_share_one_level_left_to_right() {
        assert_eq!(grouping(".a || .b && .c"), "(.a || .b) && .c");
        assert_eq!(grouping(".a && .b || .c"), "(.a && .b) || .c");
        assert_eq!(
            spanset_grouping("{ .a } || { .b } && { .c }"),
            "({ .a } || { .b }) && { .c }"
        );
    }

    #[test]
    fn comparisons_bind_tighter_than_and_or() {
        assert_eq!(grouping(".a && .b = .c"), ".a && (.b = .c)");
        assert_eq!(
            grouping(".a =~ \"x\" || .b !~ \"y\""),
            "(.a =~ `x`) || (.b !~ `y`)"
        );
    }

    #[test]
    fn structural_operators_bind_tighter_than_and_or_and_group_left() {
        assert_eq!(
            spanset_grouping("{ .a } && { .b } >> { .c }"),
            "{ .a } && ({ .b } >> { .c })"
        );
        assert_eq!(
            spanset_grouping("{ .a } >> { .b } && { .c }"),
            "({ .a } >> { .b }) && { .c }"
        );
        assert_eq!(
            spanset_grouping("{ .a } >> { .b } ~ { .c }"),
            "({ .a } >> { .b }) ~ { .c }"
        );
        assert_eq!(
            spanset_grouping("{ } > { } > { } > { }"),
            "(({ true } > { true }) > { true }) > { true }"
        );
    }

    #[test]
    fn additive_operators_bind_tighter_than_comparisons() {
        assert_eq!(grouping(".a + .b = .c"), "(.a + .b) = .c");
        assert_eq!(grouping(".a - .b - .c = 1"), "((.a - .b) - .c) = 1");
    }

    #[test]
    fn unary_minus_has_the_precedence_of_binary_minus() {
        assert_eq!(grouping(".c - -.a + .b = 1"), "((.c - -.a) + .b) = 1");
        assert_eq!(grouping("-.a * .b = 1"), "-(.a * .b) = 1");
        assert_eq!(grouping("-2 ^ 2 = 1"), "-(2 ^ 2) = 1");
    }

    #[test]
    fn not_binds_between_additive_and_multiplicative() {
        assert_eq!(grouping("!.a = .b"), "!.a = .b");
        assert_eq!(grouping("!.a * .b"), "!(.a * .b)");
        assert_eq!(grouping("!.a + .b = 1"), "(!.a + .b) = 1");
    }

    #[test]
    fn multiplicative_operators_bind_tighter_than_additive() {
        assert_eq!(grouping(".a * .b + .c = 1"), "((.a * .b) + .c) = 1");
        assert_eq!(grouping(".a / .b % .c = 1"), "((.a / .b) % .c) = 1");
    }

    #[test]
    fn power_binds_tightest_and_groups_right() {
        assert_eq!(grouping(".a + .b ^ .c = 1"), "(.a + (.b ^ .c)) = 1");
        assert_eq!(grouping(".a ^ .b ^ .c = 1"), "(.a ^ (.b ^ .c)) = 1");
        assert_eq!(grouping(".a * .b ^ .c = 1"), "(.a * (.b ^ .c)) = 1");
    }

    #[test]
    fn nil_is_only_an_operand_of_equality() {
        assert!(parse("{ .a != nil }").is_ok());
        assert!(parse("{ nil = nil }").is_ok());
        assert!(parse("{ .a > nil }").is_err());
        assert!(parse("{ nil }").is_err());
        assert!(parse("{ -nil = 1 }").is_err());
    }

    #[test]
    fn scalar_constants_fold_with_precedence() {
        assert_eq!(
            spanset_grouping("({} | rate()) + 3 * 2"),
            "({ true } | rate()) + 6"
        );
        assert_eq!(
            spanset_grouping("5 + ({} | rate()) * 10"),
            "5 + (({ true } | rate()) * 10)"
        );
        assert_eq!(spanset_grouping("avg(.field) > 1 - 3"), "avg(.field) > -2");
        assert_eq!(
            spanset_grouping("({} | rate()) > 1 / 2"),
            "{ true } | rate() > 0"
        );
    }

    #[test]
    fn errors_name_the_position_and_the_expectation() {
        let err = parse("{ .a < 3 }}").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("parse error at line 1, col 11: unexpected '}', expected end of query")
        );
        let err = parse("{ .a <\n }").err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.starts_with("parse error at line 2, col 2: unexpected '}'")),
            "{err:?}"
        );
    }

    #[test]
    fn naked_aggregate_error_points_past_the_aggregate() {
        let err = parse("{ true } | count()").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "parse error at line 1, col 19: unexpected end of query, expected a comparison \
                 after the aggregate, e.g. `{ } | count() > 2`"
            )
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let deep = format!("{{ {}true{} }}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).is_err());
        let long = format!("{{ .a{} }}", " + .a".repeat(10_000));
        assert!(parse(&long).is_err());
        let nots = format!("{{ {}true }}", "!".repeat(10_000));
        assert!(parse(&nots).is_err());
    }

    /// SplitMix64: a tiny deterministic generator for the fuzz test.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            let len = items.len().max(1) as u64;
            items
                .get((self.next() % len) as usize)
                .copied()
                .unwrap_or("")
        }
    }

    /// `SPANLAKE_FUZZ_ROUNDS` (default 6,000) and `SPANLAKE_FUZZ_SEED` make longer or other
    /// runs: `SPANLAKE_FUZZ_ROUNDS=2000000 cargo test --release --lib random_token_streams`.
    fn fuzz_setting(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    #[test]
    fn random_token_streams_never_panic() {
        const PIECES: &[&str] = &[
            "{",
            "}",
            "(",
            ")",
            ",",
            "|",
            "&&",
            "||",
            "=",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "=~",
            "!~",
            "+",
            "-",
            "*",
            "/",
            "%",
            "^",
            "!",
            ">>",
            "<<",
            "~",
            "!>",
            "!<",
            "!>>",
            "!<<",
            "&>",
            "&<",
            "&>>",
            "&<<",
            "&~",
            ".a",
            "span.b",
            "resource.c",
            "parent.d",
            ".\"q x\"",
            "span:duration",
            "trace:id",
            "event:name",
            "trace:",
            "duration",
            "name",
            "status",
            "kind",
            "parent",
            "nil",
            "true",
            "false",
            "ok",
            "error",
            "server",
            "1",
            "2.5",
            "10s",
            "-3",
            "\"s\"",
            "`r`",
            "count()",
            "count",
            "min",
            "max",
            "avg",
            "sum",
            "by",
            "select",
            "coalesce()",
            "rate()",
            "count_over_time()",
            "quantile_over_time",
            "compare",
            "topk",
            "bottomk",
            "with",
            "sample",
            "minInt",
            "/* c */",
            "//",
            "\n",
            "'a'",
            "&",
            "0x10",
            "1e400",
            "maxInt",
        ];
        const SEEDS: &[&str] = &[
            "{ .a = 1 && span:duration > 1s }",
            "({ } | count() > 1) >> ({ status = error })",
            "{ } | by(.x) | avg(duration) > 2ms | select(.y)",
            "({ } | rate() by (name)) / ({ } | count_over_time()) > 0.5 | topk(3)",
            "{ } | quantile_over_time(duration, .5) with(sample=0.1)",
        ];
        const CHARS: &[&str] = &[
            "{", "}", "(", ")", ".", "\"", "`", "\\", "=", "!", "~", "|", "&", "a", "1", "0", " ",
            "\n", "é", "語", "🙂", "\u{0}", "-", "e", "s", ":", "/", "*",
        ];
        let mut rng = SplitMix64(fuzz_setting("SPANLAKE_FUZZ_SEED", 0x5EED));
        for round in 0..fuzz_setting("SPANLAKE_FUZZ_ROUNDS", 6_000) {
            let query = if round % 3 == 2 {
                // Raw characters, multi-byte ones included.
                let len = (rng.next() % 40) as usize;
                (0..len).map(|_| rng.pick(CHARS)).collect::<String>()
            } else if round % 3 == 0 {
                let len = 1 + (rng.next() % 24) as usize;
                let pieces: Vec<&str> = (0..len).map(|_| rng.pick(PIECES)).collect();
                pieces.join(" ")
            } else {
                // Splice a random piece into a valid query at a random character boundary.
                let seed = rng.pick(SEEDS);
                let cut = (rng.next() % (seed.len() as u64 + 1)) as usize;
                let (head, tail) = seed.split_at_checked(cut).unwrap_or((seed, ""));
                format!("{head} {} {tail}", rng.pick(PIECES))
            };
            if let Ok(parsed) = parse(&query) {
                let _ = super::super::validate(&parsed);
                let printed = parsed.to_string();
                let reparsed = parse(&printed);
                assert_eq!(
                    reparsed.as_ref().ok(),
                    Some(&parsed),
                    "{query} -> {printed}"
                );
            }
        }
    }
}
