//! Tag names and tag values: what Grafana offers for autocompletion.
//!
//! Answers Tempo's `/api/search/tags`, `/api/search/tag/{tag}/values` and their v2 forms (see
//! `tempo-api.md` §1.7, §1.8, §6.3). Everything is a DataFusion plan over the
//! tenant's `spans` (and, for the root intrinsics, `traces`): attribute names are the
//! `map_keys` of the typed attribute maps, unnested and made distinct; attribute values are
//! the maps read at one key. A `q` filter is lowered by [`super::traceql`] exactly as search
//! lowers it, so that only attributes of matching spans are offered. Several tenants' answers
//! are merged.
//!
//! This module decides what is asked and shapes the answer; it never reads files or walks
//! spans itself, and it knows nothing of HTTP or of Tempo's wire formats.
//!
//! Decisions where the reference leaves a choice:
//! - results are deterministic: tag names sorted, values sorted by value then type, and a
//!   `limit` keeps the first names or values in that order;
//! - attribute values stored as JSON text (arrays, key-value lists, bytes) are not offered,
//!   since no TraceQL literal can match them; their names are;
//! - empty `name`, `statusMessage` and instrumentation name/version are not values: OTLP
//!   leaves them empty when unset;
//! - the `instrumentation` scope lists the instrumentation scopes' attributes;
//! - the `trace` scope has no user attributes and lists nothing;
//! - a v2 tag-values `q` that does not parse or cannot run is ignored, as Tempo tolerates
//!   partial queries there; a tag-names `q` must be valid.

use std::str::FromStr;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::{get_field, named_struct};
use datafusion::functions_nested::expr_fn::{array_concat, make_array, map_keys};
use datafusion::logical_expr::{Expr, JoinType, cast};
use datafusion::prelude::{SessionContext, col, lit};

use super::traceql::{
    self as lower, Lowerer, TRACE_SUMMARY_ID, TRACE_SUMMARY_ROOT_NAME, TRACE_SUMMARY_ROOT_SERVICE,
};
use super::{ErrorKind, QueryEngine, QueryError, Result};
use crate::schema::rows::{STATUS_CODE_ERROR, kind_name, status_name};
use crate::schema::{TableKind, attrs, spans};
use crate::time::TimeRange;
use crate::traceql::ast::{AttrRef, AttrScope, Body, FieldExpr, Intrinsic, SpansetExpr, Stage};
use crate::traceql::{self, Query};

/// Which attributes a tag-name request covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagScope {
    /// Every scope, intrinsics included.
    All,
    /// Span attributes.
    Span,
    /// Resource attributes.
    Resource,
    /// Attributes of span events.
    Event,
    /// Attributes of span links.
    Link,
    /// Instrumentation-scope attributes.
    Instrumentation,
    /// Trace-level attributes; TraceQL has none.
    Trace,
    /// The intrinsic names only.
    Intrinsic,
}

/// Scope names as requests spell them and responses name them.
const SCOPE_NAMES: [(TagScope, &str); 7] = [
    (TagScope::Span, "span"),
    (TagScope::Resource, "resource"),
    (TagScope::Event, "event"),
    (TagScope::Link, "link"),
    (TagScope::Instrumentation, "instrumentation"),
    (TagScope::Trace, "trace"),
    (TagScope::Intrinsic, "intrinsic"),
];

/// The scopes whose tags come from stored attributes, and the TraceQL scope of each.
const ATTRIBUTE_SCOPES: [(TagScope, AttrScope); 5] = [
    (TagScope::Span, AttrScope::Span),
    (TagScope::Resource, AttrScope::Resource),
    (TagScope::Event, AttrScope::Event),
    (TagScope::Link, AttrScope::Link),
    (TagScope::Instrumentation, AttrScope::Instrumentation),
];

impl TagScope {
    /// The scope's name in requests and responses; empty for [`TagScope::All`].
    pub fn name(self) -> &'static str {
        SCOPE_NAMES
            .iter()
            .find(|(scope, _)| *scope == self)
            .map_or("", |(_, name)| name)
    }

    fn covers(self, scope: TagScope) -> bool {
        self == TagScope::All || self == scope
    }
}

impl FromStr for TagScope {
    type Err = QueryError;

    /// `""` and `none` mean every scope; otherwise one of the names in [`TagScope::name`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s == "none" {
            return Ok(TagScope::All);
        }
        SCOPE_NAMES
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(scope, _)| *scope)
            .ok_or_else(|| QueryError::bad_request(format!("invalid scope: {s}")))
    }
}

/// The intrinsic names Tempo offers (`GetVirtualIntrinsicValues` in `pkg/search/util.go`).
const INTRINSICS: [&str; 25] = [
    "duration",
    "name",
    "status",
    "statusMessage",
    "kind",
    "rootServiceName",
    "rootName",
    "traceDuration",
    "event:name",
    "event:timeSinceStart",
    "link:spanID",
    "link:traceID",
    "instrumentation:name",
    "instrumentation:version",
    "trace:id",
    "span:id",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "span:duration",
    "span:name",
    "span:kind",
    "trace:rootName",
    "trace:rootService",
    "trace:duration",
];

/// A tag-names request.
#[derive(Debug, Clone)]
pub struct TagsRequest {
    /// The scopes to list.
    pub scope: TagScope,
    /// A TraceQL spanset filter: only attributes of matching spans are listed.
    pub query: Option<String>,
    /// Only spans starting within this window.
    pub range: TimeRange,
    /// Tag names per scope; 0 for no limit.
    pub limit: usize,
}

/// The tag names of one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeTags {
    /// `span`, `resource`, `event`, `link`, `instrumentation` or `intrinsic`.
    pub name: &'static str,
    /// Sorted and distinct.
    pub tags: Vec<String>,
}

/// Lists the tag names of `tenants` in the requested scopes: one entry per attribute scope
/// covered, and the `intrinsic` scope first when the request covers it. Names are sorted,
/// distinct across tenants and at most `limit` per scope.
pub async fn tag_names(
    engine: &QueryEngine,
    tenants: &[String],
    req: &TagsRequest,
) -> Result<Vec<ScopeTags>> {
    let mut merged: Vec<ScopeTags> = Vec::new();
    for tenant in tenants {
        for scope in tenant_tag_names(engine, tenant, req).await? {
            match merged.iter_mut().find(|m| m.name == scope.name) {
                Some(m) => m.tags.extend(scope.tags),
                None => merged.push(scope),
            }
        }
    }
    for scope in &mut merged {
        scope.tags.sort();
        scope.tags.dedup();
        scope.tags.truncate(limit_or_all(req.limit));
    }
    Ok(merged)
}

/// Lists the distinct values of a TraceQL attribute or intrinsic (`resource.service.name`,
/// `.foo`, `status`, `event:name`, …) in `tenants`' spans with their types, at most `limit`.
pub async fn tag_values(
    engine: &QueryEngine,
    tenants: &[String],
    req: &TagValuesRequest,
) -> Result<Vec<TypedValue>> {
    let mut values: Vec<TypedValue> = Vec::new();
    for tenant in tenants {
        for value in tenant_values_v2(engine, tenant, req).await? {
            if !values.contains(&value) {
                values.push(value);
            }
        }
    }
    values.truncate(limit_or_all(req.limit));
    Ok(values)
}

/// Lists the distinct values of the span or resource attribute named `tag` (a bare name, no
/// scope) in `tenants`' spans, as strings, sorted, at most `limit`.
pub async fn bare_tag_values(
    engine: &QueryEngine,
    tenants: &[String],
    req: &TagValuesRequest,
) -> Result<Vec<String>> {
    let mut values = Vec::new();
    for tenant in tenants {
        values.extend(tenant_values_v1(engine, tenant, req).await?);
    }
    values.sort();
    values.dedup();
    values.truncate(limit_or_all(req.limit));
    Ok(values)
}

/// The tag names of one tenant, per scope.
async fn tenant_tag_names(
    engine: &QueryEngine,
    tenant: &str,
    req: &TagsRequest,
) -> Result<Vec<ScopeTags>> {
    let query = filter_query(req.query.as_deref())?;
    let ctx = engine.session(tenant)?;
    let matched = matching_spans(&ctx, query.as_ref(), req.range).await?;
    let mut out = Vec::new();
    if req.scope.covers(TagScope::Intrinsic) {
        let mut tags: Vec<String> = INTRINSICS.iter().map(|t| t.to_string()).collect();
        tags.sort();
        tags.truncate(limit_or_all(req.limit));
        out.push(ScopeTags {
            name: TagScope::Intrinsic.name(),
            tags,
        });
    }
    for (scope, attr_scope) in ATTRIBUTE_SCOPES {
        if !req.scope.covers(scope) {
            continue;
        }
        let tags = match attribute_maps(matched.clone(), attr_scope)? {
            Some((frame, maps)) => attribute_names(frame, &maps, req.limit).await?,
            None => Vec::new(),
        };
        out.push(ScopeTags {
            name: scope.name(),
            tags,
        });
    }
    Ok(out)
}

/// A tag-values request.
#[derive(Debug, Clone)]
pub struct TagValuesRequest {
    /// The tag: a TraceQL attribute or intrinsic (v2), or a bare attribute name (v1).
    pub tag: String,
    /// A TraceQL spanset filter: only values on matching spans are listed.
    pub query: Option<String>,
    /// Only spans starting within this window.
    pub range: TimeRange,
    /// Values at most; 0 for no limit.
    pub limit: usize,
}

/// One tag value with its TraceQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedValue {
    /// `string`, `int`, `float`, `bool`, `duration` or `keyword` (status and kind values).
    pub kind: &'static str,
    /// The value as TraceQL would spell it, without quotes.
    pub value: String,
}

const STRING: &str = "string";
const KEYWORD: &str = "keyword";

/// The typed maps whose values can be offered, and the type each value has.
const VALUE_MAPS: [(&str, &str); 4] = [
    (attrs::STR, STRING),
    (attrs::INT, "int"),
    (attrs::FLOAT, "float"),
    (attrs::BOOL, "bool"),
];

/// The typed values of a tag in one tenant's spans, sorted by value.
async fn tenant_values_v2(
    engine: &QueryEngine,
    tenant: &str,
    req: &TagValuesRequest,
) -> Result<Vec<TypedValue>> {
    let tag = tag_ref(&req.tag)?;
    let source = match &tag {
        AttrRef::Intrinsic(Intrinsic::Status) => {
            // OTLP status codes of ok, error, unset, in the order Tempo lists them.
            let codes = [1, STATUS_CODE_ERROR, 0];
            return Ok(keywords(codes.map(status_name), req.limit));
        }
        AttrRef::Intrinsic(Intrinsic::Kind) => {
            // OTLP kinds client, server, producer, consumer, internal, unspecified, in the
            // order Tempo lists them.
            let kinds = [3, 2, 4, 5, 1, 0];
            return Ok(keywords(kinds.map(kind_name), req.limit));
        }
        AttrRef::Intrinsic(i) => match intrinsic_source(*i) {
            Some(source) => source,
            None => return Ok(Vec::new()),
        },
        AttrRef::Attribute(a) => ValueSource::Attribute(a.scope, a.name.clone()),
    };
    let ctx = engine.session(tenant)?;
    let matched = values_input(&ctx, req).await?;
    let Some(values) = source.values(&ctx, matched).await? else {
        return Ok(Vec::new());
    };
    let batches = values
        .distinct()?
        .sort(vec![
            col(VALUE).sort(true, false),
            col(KIND).sort(true, false),
        ])?
        .limit(0, limit(req.limit))?
        .collect()
        .await?;
    let mut out = Vec::new();
    for batch in &batches {
        for (kind, value) in strings(batch, 0)?.into_iter().zip(strings(batch, 1)?) {
            let kind = VALUE_MAPS
                .iter()
                .map(|(_, k)| *k)
                .find(|k| Some(*k) == kind.as_deref())
                .ok_or_else(|| internal(format!("unexpected value type {kind:?}")))?;
            if let Some(value) = value {
                out.push(TypedValue { kind, value });
            }
        }
    }
    Ok(out)
}

/// The values of a bare attribute name in one tenant's spans, sorted.
async fn tenant_values_v1(
    engine: &QueryEngine,
    tenant: &str,
    req: &TagValuesRequest,
) -> Result<Vec<String>> {
    if req.tag.is_empty() {
        return Err(QueryError::bad_request(
            "please provide a non-empty tagName".to_string(),
        ));
    }
    let ctx = engine.session(tenant)?;
    let matched = values_input(&ctx, req).await?;
    let source = ValueSource::Attribute(AttrScope::None, req.tag.clone());
    let Some(values) = source.values(&ctx, matched).await? else {
        return Ok(Vec::new());
    };
    let batches = values
        .select(vec![col(VALUE)])?
        .distinct()?
        .sort(vec![col(VALUE).sort(true, false)])?
        .limit(0, limit(req.limit))?
        .collect()
        .await?;
    let mut out = Vec::new();
    for batch in &batches {
        out.extend(strings(batch, 0)?.into_iter().flatten());
    }
    Ok(out)
}

/// Columns of the frames built here; the `__` prefix keeps them apart from table columns.
const KEY: &str = "__key";
const ELEMENT: &str = "__element";
const PAIR: &str = "__pair";
const KIND: &str = "__kind";
const VALUE: &str = "__value";

/// `limit` as DataFusion takes it: `None` for 0.
fn limit(limit: usize) -> Option<usize> {
    (limit > 0).then_some(limit)
}

fn limit_or_all(limit: usize) -> usize {
    if limit == 0 { usize::MAX } else { limit }
}

fn internal(message: String) -> QueryError {
    QueryError::internal(message)
}

fn keywords<const N: usize>(values: [&str; N], limit: usize) -> Vec<TypedValue> {
    values
        .into_iter()
        .take(limit_or_all(limit))
        .map(|v| TypedValue {
            kind: KEYWORD,
            value: v.to_string(),
        })
        .collect()
}

/// The checked filter query, or `None` when there is none (`{}` filters nothing either, but
/// is lowered like any other query).
fn filter_query(text: Option<&str>) -> Result<Option<Query>> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(traceql::check(text)?))
}

fn timestamp(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// The spans starting within `range` that `query` matches, with the columns of `spans`.
async fn matching_spans(
    ctx: &SessionContext,
    query: Option<&Query>,
    range: TimeRange,
) -> Result<DataFrame> {
    let mut frame = ctx.table(TableKind::Spans.name()).await?;
    let (start_ns, end_ns) = range.bounds();
    if let Some(start) = start_ns {
        frame = frame.filter(col(spans::START_TIME).gt_eq(timestamp(start)))?;
    }
    if let Some(end) = end_ns {
        frame = frame.filter(col(spans::START_TIME).lt_eq(timestamp(end)))?;
    }
    let Some(query) = query else {
        return Ok(frame);
    };
    let summary = lower::trace_summary(ctx).await?;
    Ok(Lowerer::new(summary).search(query, frame)?.spans)
}

/// The spans a tag-values request reads: as [`matching_spans`], but a query that does not
/// parse or cannot run filters nothing.
async fn values_input(ctx: &SessionContext, req: &TagValuesRequest) -> Result<DataFrame> {
    let query = filter_query(req.query.as_deref()).unwrap_or(None);
    match matching_spans(ctx, query.as_ref(), req.range).await {
        Err(e) if e.kind == ErrorKind::BadRequest => matching_spans(ctx, None, req.range).await,
        result => result,
    }
}

/// One set of typed attribute maps: `{prefix}_str`, `{prefix}_int`, … as columns, or as
/// fields of the struct `base` (an event or link).
struct AttributeMaps {
    base: Option<Expr>,
    prefix: &'static str,
}

impl AttributeMaps {
    fn map(&self, suffix: &str) -> Expr {
        let name = attrs::column_name(self.prefix, suffix);
        match &self.base {
            Some(base) => get_field(base.clone(), name),
            None => col(name),
        }
    }
}

/// Where the attributes of `scope` live: a frame derived from `matched` and the map sets in
/// it; `None` when spanlake stores no attributes of that scope.
fn attribute_maps(
    matched: DataFrame,
    scope: AttrScope,
) -> Result<Option<(DataFrame, Vec<AttributeMaps>)>> {
    let table = |prefix| AttributeMaps { base: None, prefix };
    let elements = |list: &str, prefix| -> Result<_> {
        let frame = matched
            .clone()
            .select(vec![col(list).alias(ELEMENT)])?
            .unnest_columns(&[ELEMENT])?;
        let maps = AttributeMaps {
            base: Some(col(ELEMENT)),
            prefix,
        };
        Ok(Some((frame, vec![maps])))
    };
    match scope {
        AttrScope::Span => Ok(Some((matched, vec![table(spans::SPAN_ATTRS)]))),
        AttrScope::Resource => Ok(Some((matched, vec![table(spans::RESOURCE_ATTRS)]))),
        AttrScope::None => Ok(Some((
            matched,
            vec![table(spans::SPAN_ATTRS), table(spans::RESOURCE_ATTRS)],
        ))),
        AttrScope::Event => elements(spans::EVENTS, spans::event::ATTRS),
        AttrScope::Link => elements(spans::LINKS, spans::link::ATTRS),
        AttrScope::Instrumentation => Ok(Some((matched, vec![table(spans::SCOPE_ATTRS)]))),
    }
}

/// The distinct keys of `maps` in `frame`, sorted, at most `limit` (0: all).
async fn attribute_names(
    frame: DataFrame,
    maps: &[AttributeMaps],
    limit_to: usize,
) -> Result<Vec<String>> {
    let keys: Vec<Expr> = maps
        .iter()
        .flat_map(|m| attrs::SUFFIXES.iter().map(|s| map_keys(m.map(s))))
        .collect();
    let batches = frame
        .select(vec![array_concat(keys).alias(KEY)])?
        .unnest_columns(&[KEY])?
        .select(vec![cast(col(KEY), DataType::Utf8).alias(KEY)])?
        .distinct()?
        .sort(vec![col(KEY).sort(true, false)])?
        .limit(0, limit(limit_to))?
        .collect()
        .await?;
    let mut out = Vec::new();
    for batch in &batches {
        out.extend(strings(batch, 0)?.into_iter().flatten());
    }
    Ok(out)
}

/// Where the values of a tag come from.
enum ValueSource {
    /// A user attribute of a scope (`None`: span and resource).
    Attribute(AttrScope, String),
    /// A string column of `spans`.
    Column(&'static str),
    /// The name of each event.
    EventName,
    /// A string column of the trace summary, for the traces of the matching spans.
    Trace(&'static str),
}

/// Where an intrinsic's values come from; `None` for those with no values to offer
/// (durations, ids, nested-set numbers).
fn intrinsic_source(intrinsic: Intrinsic) -> Option<ValueSource> {
    Some(match intrinsic {
        Intrinsic::Name => ValueSource::Column(spans::NAME),
        Intrinsic::StatusMessage => ValueSource::Column(spans::STATUS_MESSAGE),
        Intrinsic::InstrumentationName => ValueSource::Column(spans::SCOPE_NAME),
        Intrinsic::InstrumentationVersion => ValueSource::Column(spans::SCOPE_VERSION),
        Intrinsic::EventName => ValueSource::EventName,
        Intrinsic::TraceRootService => ValueSource::Trace(TRACE_SUMMARY_ROOT_SERVICE),
        Intrinsic::TraceRootName => ValueSource::Trace(TRACE_SUMMARY_ROOT_NAME),
        _ => return None,
    })
}

impl ValueSource {
    /// A frame of ([`KIND`], [`VALUE`]) string pairs, one per value occurrence, no NULL
    /// values; `None` when there can be no values.
    async fn values(&self, ctx: &SessionContext, matched: DataFrame) -> Result<Option<DataFrame>> {
        let strings_of = |frame: DataFrame, value: Expr| -> Result<_> {
            let frame = frame
                .select(vec![
                    lit(STRING).alias(KIND),
                    cast(value, DataType::Utf8).alias(VALUE),
                ])?
                .filter(col(VALUE).is_not_null().and(col(VALUE).not_eq(lit(""))))?;
            Ok(Some(frame))
        };
        match self {
            ValueSource::Attribute(scope, key) => match attribute_maps(matched, *scope)? {
                Some((frame, maps)) => Ok(Some(attribute_values(frame, &maps, key)?)),
                None => Ok(None),
            },
            ValueSource::Column(column) => strings_of(matched, col(*column)),
            ValueSource::EventName => {
                let Some((events, _)) = attribute_maps(matched, AttrScope::Event)? else {
                    return Ok(None);
                };
                strings_of(events, get_field(col(ELEMENT), spans::event::NAME))
            }
            ValueSource::Trace(column) => {
                let traces = lower::trace_summary(ctx).await?.join_on(
                    matched.select(vec![col(spans::TRACE_ID)])?,
                    JoinType::LeftSemi,
                    [col(TRACE_SUMMARY_ID).eq(col(spans::TRACE_ID))],
                )?;
                strings_of(traces, col(*column))
            }
        }
    }
}

/// The typed values at `key` in `maps`: each map set and type gives one (type, value) struct
/// per row, and the structs are unnested into rows, keeping those with a value.
fn attribute_values(frame: DataFrame, maps: &[AttributeMaps], key: &str) -> Result<DataFrame> {
    let mut present = Vec::new();
    let mut pairs = Vec::new();
    for m in maps {
        for (suffix, kind) in VALUE_MAPS {
            let value = super::traceql::map_value(m.map(suffix), key);
            present.push(value.clone().is_not_null());
            pairs.push(named_struct(vec![
                lit(KIND),
                lit(kind),
                lit(VALUE),
                cast(value, DataType::Utf8),
            ]));
        }
    }
    let any_present = present.into_iter().reduce(Expr::or).unwrap_or(lit(false));
    let frame = frame
        .filter(any_present)?
        .select(vec![make_array(pairs).alias(PAIR)])?
        .unnest_columns(&[PAIR])?
        .select(vec![
            get_field(col(PAIR), KIND).alias(KIND),
            get_field(col(PAIR), VALUE).alias(VALUE),
        ])?
        .filter(col(VALUE).is_not_null())?;
    Ok(frame)
}

/// The string column `index` of `batch`.
fn strings(batch: &RecordBatch, index: usize) -> Result<Vec<Option<String>>> {
    let column = batch
        .column(index)
        .as_string_opt::<i32>()
        .ok_or_else(|| internal(format!("column {index} is not a string column")))?;
    Ok(column.iter().map(|v| v.map(str::to_string)).collect())
}

/// Reads a v2 tag name as the TraceQL attribute or intrinsic it names.
fn tag_ref(tag: &str) -> Result<AttrRef> {
    let invalid = |why: &str| {
        QueryError::bad_request(format!("please provide a valid tagName: {tag} ({why})"))
    };
    let query = traceql::parse(&format!("{{ {tag} }}")).map_err(|e| invalid(&e.message))?;
    let reference = match &query.body {
        Body::Pipeline(p) if query.hints.is_empty() => match p.stages.as_slice() {
            [Stage::Spanset(SpansetExpr::Filter(FieldExpr::Attr(r)))] => r.clone(),
            _ => return Err(invalid("expected one attribute or intrinsic")),
        },
        _ => return Err(invalid("expected one attribute or intrinsic")),
    };
    match &reference {
        AttrRef::Intrinsic(Intrinsic::Parent) => Err(invalid("`parent` has no values")),
        AttrRef::Attribute(a) if a.parent => Err(invalid("parent attributes are not supported")),
        _ => Ok(reference),
    }
}
