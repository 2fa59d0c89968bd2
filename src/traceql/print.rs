//! Canonical text for every AST node.
//!
//! The output parses back to an equal tree: nested binary operands are parenthesised, strings
//! are back-quoted when that is lossless, durations use whole units (`1m30s`), and attribute
//! names are quoted when they hold a character that would end them.

use std::fmt::{self, Display, Formatter, Write};

use super::ast::*;
use super::lexer::ends_attribute_name;

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.body)?;
        if !self.hints.is_empty() {
            f.write_str(" with(")?;
            for (i, hint) in self.hints.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{}=", hint.name)?;
                write_scalar(f, &hint.value)?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl Display for Body {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Body::Pipeline(p) => write!(f, "{p}"),
            Body::ScalarPipelineFilter(s) => write!(f, "{} {} {}", s.lhs, s.op, s.rhs),
            Body::Metrics(m) => write_metrics(f, m, true),
        }
    }
}

impl Display for Pipeline {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{stage}")?;
        }
        Ok(())
    }
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Spanset(s) => write!(f, "{s}"),
            Stage::ScalarFilter(s) => write!(f, "{} {} {}", s.lhs, s.op, s.rhs),
            Stage::GroupBy(e) => write!(f, "by({e})"),
            Stage::Coalesce => f.write_str("coalesce()"),
            Stage::Select(attrs) => write!(f, "select({})", List(attrs)),
        }
    }
}

impl Display for SpansetExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SpansetExpr::Filter(e) => write!(f, "{{ {e} }}"),
            SpansetExpr::Pipeline(p) => write!(f, "({p})"),
            SpansetExpr::Binary { op, lhs, rhs } => {
                let side = |f: &mut Formatter<'_>, e: &SpansetExpr| match e {
                    SpansetExpr::Binary { .. } => write!(f, "({e})"),
                    _ => write!(f, "{e}"),
                };
                side(f, lhs)?;
                write!(f, " {op} ")?;
                side(f, rhs)
            }
        }
    }
}

impl Display for SpansetOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpansetOp::And => "&&",
            SpansetOp::Or => "||",
            SpansetOp::Child => ">",
            SpansetOp::Parent => "<",
            SpansetOp::Descendant => ">>",
            SpansetOp::Ancestor => "<<",
            SpansetOp::Sibling => "~",
            SpansetOp::NotChild => "!>",
            SpansetOp::NotParent => "!<",
            SpansetOp::NotDescendant => "!>>",
            SpansetOp::NotAncestor => "!<<",
            SpansetOp::NotSibling => "!~",
            SpansetOp::UnionChild => "&>",
            SpansetOp::UnionParent => "&<",
            SpansetOp::UnionDescendant => "&>>",
            SpansetOp::UnionAncestor => "&<<",
            SpansetOp::UnionSibling => "&~",
        })
    }
}

impl Display for FieldExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            FieldExpr::Static(s) => write_field_static(f, s),
            FieldExpr::Attr(a) => write!(f, "{a}"),
            FieldExpr::Unary { op, expr } => {
                f.write_str(match op {
                    UnaryOp::Neg => "-",
                    UnaryOp::Not => "!",
                })?;
                match **expr {
                    FieldExpr::Binary { .. } => write!(f, "({expr})"),
                    _ => write!(f, "{expr}"),
                }
            }
            FieldExpr::Binary { op, lhs, rhs } => {
                let side = |f: &mut Formatter<'_>, e: &FieldExpr| match e {
                    FieldExpr::Binary { .. } => write!(f, "({e})"),
                    _ => write!(f, "{e}"),
                };
                side(f, lhs)?;
                write!(f, " {op} ")?;
                side(f, rhs)
            }
        }
    }
}

impl Display for BinaryOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Pow => "^",
            BinaryOp::Eq => "=",
            BinaryOp::Neq => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Lte => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Gte => ">=",
            BinaryOp::Regex => "=~",
            BinaryOp::NotRegex => "!~",
            BinaryOp::And => "&&",
            BinaryOp::Or => "||",
        })
    }
}

impl Display for CmpOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Neq => "!=",
            CmpOp::Lt => "<",
            CmpOp::Lte => "<=",
            CmpOp::Gt => ">",
            CmpOp::Gte => ">=",
        })
    }
}

impl Display for ArithOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
            ArithOp::Pow => "^",
        })
    }
}

/// A literal inside braces, where `minInt` is a keyword and negative numbers do not occur.
fn write_field_static(f: &mut Formatter<'_>, value: &Static) -> fmt::Result {
    match value {
        Static::Int(i64::MIN) => f.write_str("minInt"),
        other => write_scalar(f, other),
    }
}

/// A literal outside braces, where a leading `-` is folded back into the number.
fn write_scalar(f: &mut Formatter<'_>, value: &Static) -> fmt::Result {
    match value {
        Static::Nil => f.write_str("nil"),
        Static::Int(i64::MIN) => f.write_str("(-9223372036854775807 - 1)"),
        Static::Int(v) => write!(f, "{v}"),
        Static::Float(v) => write!(f, "{v:?}"),
        Static::String(s) => write_string(f, s),
        Static::Bool(b) => write!(f, "{b}"),
        Static::Duration(nanos) => write_duration(f, *nanos),
        Static::Status(s) => f.write_str(match s {
            Status::Error => "error",
            Status::Ok => "ok",
            Status::Unset => "unset",
        }),
        Static::Kind(k) => f.write_str(match k {
            Kind::Unspecified => "unspecified",
            Kind::Internal => "internal",
            Kind::Server => "server",
            Kind::Client => "client",
            Kind::Producer => "producer",
            Kind::Consumer => "consumer",
        }),
    }
}

impl Display for Static {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_field_static(f, self)
    }
}

/// Back-quoted when lossless (Go drops `\r` from raw strings), else double-quoted.
fn write_string(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    if !s.contains(['`', '\r']) {
        return write!(f, "`{s}`");
    }
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c.is_control() => write!(f, "\\U{:08x}", u32::from(c))?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Whole units from hours down to nanoseconds, e.g. `1h30m`, `1s500ms`, `0s`.
fn write_duration(f: &mut Formatter<'_>, nanos: i64) -> fmt::Result {
    if nanos == 0 {
        return f.write_str("0s");
    }
    if nanos < 0 {
        f.write_char('-')?;
    }
    let mut rest = nanos.unsigned_abs();
    for (unit, size) in [
        ("h", 3_600_000_000_000u64),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        let count = rest / size;
        if count > 0 {
            write!(f, "{count}{unit}")?;
            rest %= size;
        }
    }
    Ok(())
}

impl Display for AttrRef {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            AttrRef::Intrinsic(i) => write!(f, "{i}"),
            AttrRef::Attribute(a) => write!(f, "{a}"),
        }
    }
}

impl Display for Attribute {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.parent {
            f.write_str("parent.")?;
        }
        f.write_str(match self.scope {
            AttrScope::None if self.parent => "",
            AttrScope::None => ".",
            AttrScope::Span => "span.",
            AttrScope::Resource => "resource.",
            AttrScope::Event => "event.",
            AttrScope::Link => "link.",
            AttrScope::Instrumentation => "instrumentation.",
        })?;
        let name = &self.name;
        let ambiguous_start = match (self.parent, self.scope) {
            (false, AttrScope::None) => name.starts_with(|c: char| c.is_ascii_digit()),
            (true, AttrScope::None) => name.starts_with("span.") || name.starts_with("resource."),
            _ => false,
        };
        let needs_quotes = ambiguous_start
            || name.is_empty()
            || name.contains(|c: char| ends_attribute_name(c) || c == '"' || c == '\\');
        if !needs_quotes {
            return f.write_str(name);
        }
        f.write_char('"')?;
        for c in name.chars() {
            if c == '"' || c == '\\' {
                f.write_char('\\')?;
            }
            f.write_char(c)?;
        }
        f.write_char('"')
    }
}

impl Display for Intrinsic {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Intrinsic::Duration => "span:duration",
            Intrinsic::Name => "span:name",
            Intrinsic::Status => "span:status",
            Intrinsic::StatusMessage => "span:statusMessage",
            Intrinsic::Kind => "span:kind",
            Intrinsic::SpanId => "span:id",
            Intrinsic::ParentId => "span:parentID",
            Intrinsic::ChildCount => "span:childCount",
            Intrinsic::TraceDuration => "trace:duration",
            Intrinsic::TraceRootName => "trace:rootName",
            Intrinsic::TraceRootService => "trace:rootService",
            Intrinsic::TraceId => "trace:id",
            Intrinsic::EventName => "event:name",
            Intrinsic::EventTimeSinceStart => "event:timeSinceStart",
            Intrinsic::LinkTraceId => "link:traceID",
            Intrinsic::LinkSpanId => "link:spanID",
            Intrinsic::InstrumentationName => "instrumentation:name",
            Intrinsic::InstrumentationVersion => "instrumentation:version",
            Intrinsic::NestedSetLeft => "nestedSetLeft",
            Intrinsic::NestedSetRight => "nestedSetRight",
            Intrinsic::NestedSetParent => "nestedSetParent",
            Intrinsic::Parent => "parent",
        })
    }
}

impl Display for ScalarExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ScalarExpr::Aggregate(a) => write!(f, "{a}"),
            ScalarExpr::Static(s) => write_scalar(f, s),
            ScalarExpr::Binary { op, lhs, rhs } => write!(f, "({lhs} {op} {rhs})"),
        }
    }
}

impl Display for Aggregate {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let name = match self.op {
            AggregateOp::Count => "count",
            AggregateOp::Min => "min",
            AggregateOp::Max => "max",
            AggregateOp::Avg => "avg",
            AggregateOp::Sum => "sum",
        };
        match &self.expr {
            Some(e) => write!(f, "{name}({e})"),
            None => write!(f, "{name}()"),
        }
    }
}

impl Display for ScalarPipelineExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            ScalarPipelineExpr::Pipeline {
                pipeline,
                aggregate,
            } => write!(f, "({pipeline} | {aggregate})"),
            ScalarPipelineExpr::Static(s) => write_scalar(f, s),
            ScalarPipelineExpr::Binary { op, lhs, rhs } => write!(f, "({lhs} {op} {rhs})"),
        }
    }
}

impl Display for MetricsExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_metrics(f, self, true)
    }
}

/// Operands of metrics math are parenthesised; the outermost expression is not.
fn write_metrics(f: &mut Formatter<'_>, expr: &MetricsExpr, outermost: bool) -> fmt::Result {
    match expr {
        MetricsExpr::Scalar(s) => write_scalar(f, s),
        _ if !outermost => {
            f.write_char('(')?;
            write_metrics(f, expr, true)?;
            f.write_char(')')
        }
        MetricsExpr::Leaf { pipeline, function } => write!(f, "{pipeline} | {function}"),
        MetricsExpr::Binary { op, lhs, rhs } => {
            write_metrics(f, lhs, false)?;
            write!(f, " {op} ")?;
            write_metrics(f, rhs, false)
        }
        MetricsExpr::Staged { expr, stages } => {
            write_metrics(f, expr, true)?;
            for stage in stages {
                write!(f, "{stage}")?;
            }
            Ok(())
        }
    }
}

impl Display for SecondStage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SecondStage::TopK(k) => write!(f, " | topk({k})"),
            SecondStage::BottomK(k) => write!(f, " | bottomk({k})"),
            SecondStage::Filter { op, value } => {
                write!(f, " {op} ")?;
                write_scalar(f, value)
            }
        }
    }
}

impl Display for MetricsFunction {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let by = match self {
            MetricsFunction::Rate { by } => {
                f.write_str("rate()")?;
                by
            }
            MetricsFunction::CountOverTime { by } => {
                f.write_str("count_over_time()")?;
                by
            }
            MetricsFunction::OverTime { op, attr, by } => {
                let name = match op {
                    OverTimeOp::Min => "min_over_time",
                    OverTimeOp::Max => "max_over_time",
                    OverTimeOp::Sum => "sum_over_time",
                    OverTimeOp::Avg => "avg_over_time",
                    OverTimeOp::Histogram => "histogram_over_time",
                };
                write!(f, "{name}({attr})")?;
                by
            }
            MetricsFunction::QuantileOverTime {
                attr,
                quantiles,
                by,
            } => {
                write!(f, "quantile_over_time({attr}")?;
                for q in quantiles {
                    write!(f, ", {q:?}")?;
                }
                f.write_str(")")?;
                by
            }
            MetricsFunction::Compare {
                filter,
                top_n,
                bounds,
            } => {
                write!(f, "compare({{ {filter} }}")?;
                if let Some(n) = top_n {
                    write!(f, ", {n}")?;
                }
                if let Some((start, end)) = bounds {
                    write!(f, ", {start}, {end}")?;
                }
                return f.write_str(")");
            }
        };
        if !by.is_empty() {
            write!(f, " by ({})", List(by))?;
        }
        Ok(())
    }
}

/// Comma-separated display of a slice.
struct List<'a, T>(&'a [T]);

impl<T: Display> Display for List<'_, T> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;

    fn canonical(query: &str) -> String {
        let parsed = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let printed = parsed.to_string();
        let reparsed = parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert_eq!(reparsed, parsed, "{query} printed as {printed}");
        printed
    }

    #[test]
    fn durations_print_in_whole_units() {
        assert_eq!(
            canonical("{ duration > 1.5m }"),
            "{ span:duration > 1m30s }"
        );
        assert_eq!(canonical("{ duration > 1d }"), "{ span:duration > 24h }");
        assert_eq!(
            canonical("{ duration > 1500us }"),
            "{ span:duration > 1ms500us }"
        );
        assert_eq!(canonical("{ duration > 0s }"), "{ span:duration > 0s }");
        assert_eq!(canonical("({ } | rate()) > -5s"), "{ true } | rate() > -5s");
    }

    #[test]
    fn strings_print_back_quoted_unless_that_loses_content() {
        assert_eq!(canonical(r#"{ .a = "x\ty" }"#), "{ .a = `x\ty` }");
        assert_eq!(canonical(r#"{ .a = "x`y" }"#), r#"{ .a = "x`y" }"#);
        assert_eq!(canonical(r#"{ .a = "x\ry" }"#), r#"{ .a = "x\ry" }"#);
    }

    #[test]
    fn attribute_names_are_quoted_when_they_would_end_or_mislex() {
        assert_eq!(canonical(r#"{ ."foo bar" }"#), r#"{ ."foo bar" }"#);
        assert_eq!(canonical(r#"{ ."5x" }"#), r#"{ ."5x" }"#);
        assert_eq!(
            canonical(r#"{ parent."span.x" }"#),
            r#"{ parent."span.x" }"#
        );
        assert_eq!(canonical("{ .foo+bar }"), "{ .foo+bar }");
        assert_eq!(canonical(r#"{ ."a\\b" }"#), r#"{ ."a\\b" }"#);
    }

    #[test]
    fn named_integer_constants_round_trip() {
        assert_eq!(canonical("{ .a > minInt }"), "{ .a > minInt }");
        assert_eq!(canonical("{ .a < maxInt }"), "{ .a < 9223372036854775807 }");
        assert_eq!(
            canonical("({ } | rate()) * (-9223372036854775807 - 1)"),
            "({ true } | rate()) * (-9223372036854775807 - 1)"
        );
    }

    #[test]
    fn hints_keep_the_last_block() {
        assert_eq!(
            canonical("{ } | rate() with(sample=true) with(exemplars=5, x=-0.5, y=\"s\")"),
            "{ true } | rate() with(exemplars=5,x=-0.5,y=`s`)"
        );
    }

    #[test]
    fn metrics_queries_print_their_structure() {
        assert_eq!(
            canonical("({} | rate() > 6) * 100 > 5 | topk(2)"),
            "({ true } | rate() > 6) * 100 > 5 | topk(2)"
        );
        assert_eq!(
            canonical("{ } | quantile_over_time(duration, .5, .99) by (span.http.route, name)"),
            "{ true } | quantile_over_time(span:duration, 0.5, 0.99) by (span.http.route, span:name)"
        );
        assert_eq!(
            canonical("{ } | compare({ status = error }, 20, 1, 2)"),
            "{ true } | compare({ span:status = error }, 20, 1, 2)"
        );
        assert_eq!(
            canonical("{ } | histogram_over_time(duration)"),
            "{ true } | histogram_over_time(span:duration)"
        );
    }
}
