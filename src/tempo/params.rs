//! Tempo's request parameters, over HTTP (query strings) and gRPC (tempopb messages), read
//! into typed query requests with Tempo's rules and messages. Nothing here runs a query.

use std::collections::HashMap;

use super::TempoApi;
use crate::config::QuerySettings;
use crate::ids;
use crate::query::metrics::{DEFAULT_WINDOW_NS, MetricsRequest};
use crate::query::search::{DEFAULT_LIMIT, SearchRequest};
use crate::query::tags::{TagScope, TagValuesRequest, TagsRequest};
use crate::query::trace::{TraceFilter, TraceRequest};
use crate::query::{QueryError, Result};
use crate::schema::TraceId;
use crate::tempopb;
use crate::time::{DurationSyntax, TimeRange, WindowRule, parse_duration};

/// An HTTP request's query string.
pub type Params = HashMap<String, String>;

/// Longest accepted TraceQL query, in bytes.
pub const MAX_QUERY_BYTES: usize = 128 << 10;

/// A parameter; empty counts as absent.
fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        QueryError::bad_request(format!("invalid {name}: {value:?} is not a valid number"))
    })
}

/// A number parameter; absent is `None`.
fn number<T: std::str::FromStr>(params: &Params, name: &str) -> Result<Option<T>> {
    param(params, name)
        .map(|v| parse_number(name, v))
        .transpose()
}

/// A duration parameter in `syntax`.
fn duration(
    params: &Params,
    name: &str,
    syntax: DurationSyntax,
) -> Result<Option<std::time::Duration>> {
    param(params, name)
        .map(|v| {
            parse_duration(v, syntax).ok_or_else(|| {
                QueryError::bad_request(format!("invalid {name}: time: invalid duration {v:?}"))
            })
        })
        .transpose()
}

/// A zero in a tempopb request means "not given".
fn nonzero(v: u32) -> Option<u64> {
    (v != 0).then_some(u64::from(v))
}

/// A TraceQL text given as a filter parameter; blank is none.
fn filter_text(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|q| !q.is_empty())
}

/// The window of a search or tag request: `since` (Prometheus syntax) or `start` and `end`.
fn request_window(rule: &WindowRule, params: &Params) -> Result<TimeRange> {
    let since = duration(params, "since", DurationSyntax::Prometheus)?;
    Ok(rule.window(number(params, "start")?, number(params, "end")?, since)?)
}

/// Search parameters as both transports give them, before validation.
#[derive(Debug, Default)]
pub struct RawSearch {
    query: Option<String>,
    tags: Vec<(String, String)>,
    min_duration_ms: Option<u64>,
    max_duration_ms: Option<u64>,
    /// `None`: the default; `Some(0)` is refused.
    limit: Option<u32>,
    spss: Option<u32>,
    start: Option<u64>,
    end: Option<u64>,
    since: Option<std::time::Duration>,
    explain: Option<Explain>,
}

impl RawSearch {
    /// Reads the query string of `/api/search`.
    pub fn from_http(params: &Params) -> Result<Self> {
        let millis = |name: &str| -> Result<Option<u64>> {
            Ok(duration(params, name, DurationSyntax::Go)?.map(|d| d.as_millis() as u64))
        };
        let tags = match param(params, "tags") {
            Some(text) => parse_logfmt(text)
                .map_err(|e| QueryError::bad_request(format!("invalid tags: {e}")))?,
            None => Vec::new(),
        };
        let explain = match param(params, "explain") {
            None | Some("false") => None,
            Some("true") => Some(Explain::Plan),
            Some("analyze") => Some(Explain::Analyze),
            Some(other) => {
                return Err(QueryError::bad_request(format!(
                    "invalid explain: must be true, analyze or false, got {other:?}"
                )));
            }
        };
        Ok(Self {
            query: param(params, "q").map(str::to_string),
            tags,
            min_duration_ms: millis("minDuration")?,
            max_duration_ms: millis("maxDuration")?,
            limit: number(params, "limit")?,
            spss: number(params, "spss")?,
            start: number(params, "start")?,
            end: number(params, "end")?,
            since: duration(params, "since", DurationSyntax::Prometheus)?,
            explain,
        })
    }

    /// Reads a gRPC `SearchRequest`; zero values mean "default", as in Tempo.
    pub fn from_grpc(request: &tempopb::SearchRequest) -> Self {
        let mut tags: Vec<(String, String)> = request
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        tags.sort();
        let nonzero32 = |v: u32| (v != 0).then_some(v);
        Self {
            query: Some(request.query.clone()).filter(|q| !q.is_empty()),
            tags,
            min_duration_ms: nonzero(request.min_duration_ms),
            max_duration_ms: nonzero(request.max_duration_ms),
            limit: nonzero32(request.limit),
            spss: nonzero32(request.spans_per_span_set),
            start: nonzero(request.start),
            end: nonzero(request.end),
            since: None,
            explain: None,
        }
    }
}

/// A validated search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    /// The search; tag searches arrive translated into TraceQL.
    pub request: SearchRequest,
    /// A tag search: results carry trace metadata only, no spansets.
    pub tag_search: bool,
    /// Answer with the plan instead of the traces.
    pub explain: Option<Explain>,
}

/// What `explain=` asks for instead of the traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explain {
    /// `true`: the plan that picks the top traces, without running it.
    Plan,
    /// `analyze`: that plan run, with DataFusion's metrics per operator (`EXPLAIN ANALYZE`).
    Analyze,
}

impl SearchParams {
    /// Validates a search request with Tempo's rules and messages.
    pub fn new(raw: RawSearch, settings: &QuerySettings, rule: &WindowRule) -> Result<Self> {
        let limit = match raw.limit {
            None => DEFAULT_LIMIT as u32,
            Some(0) => {
                return Err(QueryError::bad_request(
                    "invalid limit: must be a positive number",
                ));
            }
            Some(n) if n > settings.max_result_limit => {
                return Err(QueryError::bad_request(format!(
                    "limit {n} exceeds max limit {}",
                    settings.max_result_limit
                )));
            }
            Some(n) => n,
        };
        let spss = raw.spss.unwrap_or(0);
        if spss > settings.max_spans_per_span_set {
            return Err(QueryError::bad_request(format!(
                "spss {spss} exceeds max spans per span set {}",
                settings.max_spans_per_span_set
            )));
        }
        if let (Some(min), Some(max)) = (raw.min_duration_ms, raw.max_duration_ms)
            && min > max
        {
            return Err(QueryError::bad_request(
                "invalid maxDuration: must be greater than minDuration",
            ));
        }
        let range = rule.window(raw.start, raw.end, raw.since)?;
        let has_tags =
            !raw.tags.is_empty() || raw.min_duration_ms.is_some() || raw.max_duration_ms.is_some();
        let (query, tag_search) = match raw.query {
            Some(_) if !raw.tags.is_empty() => {
                return Err(QueryError::bad_request(
                    "invalid request: can't specify tags and q in the same query",
                ));
            }
            Some(q) if q.len() > MAX_QUERY_BYTES => {
                return Err(QueryError::invalid_traceql(format_args!(
                    "the query is {} bytes, more than the {MAX_QUERY_BYTES} allowed",
                    q.len()
                )));
            }
            // TraceQL ignores the duration parameters.
            Some(q) => (q, false),
            None if has_tags => (
                tags_to_traceql(&raw.tags, raw.min_duration_ms, raw.max_duration_ms)?,
                true,
            ),
            None => ("{}".to_string(), false),
        };
        Ok(Self {
            request: SearchRequest {
                query,
                range,
                limit: limit as usize,
                spss: spss as usize,
            },
            tag_search,
            explain: raw.explain,
        })
    }
}

/// Splits logfmt text (`a=b c="d e"`) into pairs.
pub fn parse_logfmt(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    let at = |i: usize| format!("at pos {}", i + 1);
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' {
            if chars[i] == '"' {
                return Err(format!("unexpected '\"' {}", at(i)));
            }
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect();
        let mut value = String::new();
        if i < chars.len() && chars[i] == '=' {
            i += 1;
            if i < chars.len() && chars[i] == '"' {
                i += 1;
                let mut closed = false;
                while i < chars.len() {
                    match chars[i] {
                        '\\' if i + 1 < chars.len() => {
                            value.push(chars[i + 1]);
                            i += 2;
                        }
                        '"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        c => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    return Err(format!("unterminated quoted value {}", at(i)));
                }
            } else {
                while i < chars.len() && !chars[i].is_whitespace() {
                    if chars[i] == '"' || chars[i] == '=' {
                        return Err(format!("unexpected '{}' {}", chars[i], at(i)));
                    }
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        if key.is_empty() {
            return Err(format!("unexpected '=' {}", at(key_start)));
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(format!("duplicate key {key:?}"));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// A TraceQL string literal.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The TraceQL meaning of a tag search, as Tempo's tag search defines it: well-known keys
/// match substrings, `http.status_code` an integer, `status.code` a status, any other key
/// the exact value of a span or resource attribute; all on one span. Durations bound the
/// trace's duration.
pub fn tags_to_traceql(
    tags: &[(String, String)],
    min_duration_ms: Option<u64>,
    max_duration_ms: Option<u64>,
) -> Result<String> {
    let substring = |field: &str, value: &str| {
        format!(
            "{field} =~ {}",
            quoted(&format!(".*{}.*", regex::escape(value)))
        )
    };
    let mut conditions = Vec::new();
    for (key, value) in tags {
        conditions.push(match key.as_str() {
            "service.name" => substring("resource.service.name", value),
            "name" => substring("name", value),
            "root.service.name" => substring("rootServiceName", value),
            "root.name" => substring("rootName", value),
            "http.method" | "http.url" => substring(&format!("span.{key}"), value),
            "cluster" | "namespace" | "pod" | "container" => {
                substring(&format!("resource.{key}"), value)
            }
            "http.status_code" => {
                let code: i64 = value.parse().map_err(|_| {
                    QueryError::bad_request(format!(
                        "invalid tags: http.status_code must be an integer, got {value:?}"
                    ))
                })?;
                format!("span.http.status_code = {code}")
            }
            "status.code" => match value.as_str() {
                "unset" | "ok" | "error" => format!("status = {value}"),
                _ => {
                    return Err(QueryError::bad_request(format!(
                        "invalid tags: status.code must be unset, ok or error, got {value:?}"
                    )));
                }
            },
            _ => format!(".{} = {}", quoted(key), quoted(value)),
        });
    }
    if let Some(ms) = min_duration_ms {
        conditions.push(format!("traceDuration >= {ms}ms"));
    }
    if let Some(ms) = max_duration_ms {
        conditions.push(format!("traceDuration <= {ms}ms"));
    }
    Ok(format!("{{ {} }}", conditions.join(" && ")))
}

/// Reads `/api/search/tags` and `/api/v2/search/tags` parameters.
pub fn tags_from_http(api: &TempoApi, params: &Params) -> Result<TagsRequest> {
    Ok(TagsRequest {
        scope: param(params, "scope").unwrap_or("").parse()?,
        query: param(params, "q").and_then(filter_text),
        range: request_window(&api.window_rule(), params)?,
        limit: number(params, "limit")?.unwrap_or_default(),
    })
}

/// Reads a gRPC `SearchTagsRequest`.
pub fn tags_from_grpc(api: &TempoApi, request: &tempopb::SearchTagsRequest) -> Result<TagsRequest> {
    Ok(TagsRequest {
        scope: request.scope.parse::<TagScope>()?,
        query: filter_text(&request.query),
        range: api
            .window_rule()
            .window(nonzero(request.start), nonzero(request.end), None)?,
        limit: request.max_tags_per_scope as usize,
    })
}

fn empty_tag_name() -> QueryError {
    QueryError::bad_request("please provide a non-empty tagName")
}

/// Reads `/api[/v2]/search/tag/{tag}/values`: `rest` is the path after `tag/` (the tag itself
/// may contain `/`).
pub fn values_from_http(api: &TempoApi, rest: &str, params: &Params) -> Result<TagValuesRequest> {
    let range = request_window(&api.window_rule(), params)?;
    let tag = match rest.strip_suffix("/values") {
        Some(tag) if !tag.is_empty() => tag.to_string(),
        _ => return Err(empty_tag_name()),
    };
    Ok(TagValuesRequest {
        tag,
        query: param(params, "q").and_then(filter_text),
        range,
        limit: number(params, "limit")?.unwrap_or_default(),
    })
}

/// Reads a gRPC `SearchTagValuesRequest`.
pub fn values_from_grpc(
    api: &TempoApi,
    request: &tempopb::SearchTagValuesRequest,
) -> Result<TagValuesRequest> {
    if request.tag_name.is_empty() {
        return Err(empty_tag_name());
    }
    Ok(TagValuesRequest {
        tag: request.tag_name.clone(),
        query: filter_text(&request.query),
        range: api
            .window_rule()
            .window(nonzero(request.start), nonzero(request.end), None)?,
        limit: request.max_tag_values as usize,
    })
}

/// Reads a trace-by-id request over HTTP: the id from the path, then `mode`, the optional
/// `start`/`end` window and (v2) the `q` filter with its depth parameters.
pub fn trace_from_http(id: &str, params: &Params, with_filter: bool) -> Result<TraceRequest> {
    let id = ids::parse_trace_id(id)?;
    match param(params, "mode") {
        None | Some("all" | "ingesters" | "blocks" | "external") => {}
        Some(other) => {
            return Err(QueryError::bad_request(format!(
                "invalid value for mode {other}"
            )));
        }
    }
    let range = WindowRule::optional_window(number(params, "start")?, number(params, "end")?)?;
    let filter = if with_filter {
        trace_filter(params)?
    } else {
        None
    };
    Ok(TraceRequest { id, range, filter })
}

/// Reads a gRPC `TraceByIDRequest`: the id is 1 to 16 bytes, left-padded.
pub fn trace_from_grpc(request: &tempopb::TraceByIdRequest) -> Result<TraceRequest> {
    let raw = &request.trace_id;
    if raw.is_empty() || raw.len() > 16 {
        return Err(QueryError::bad_request(format!(
            "traceID must be 1 to 16 bytes, got {}",
            raw.len()
        )));
    }
    let mut id: TraceId = [0; 16];
    id[16 - raw.len()..].copy_from_slice(raw);
    Ok(TraceRequest {
        id,
        range: None,
        filter: None,
    })
}

/// `match_depth` and `ancestor_depth`: an integer of at least -1.
fn depth(params: &Params, name: &str, default: i64) -> Result<i64> {
    match param(params, name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if n >= -1 => Ok(n),
            _ => Err(QueryError::bad_request(format!(
                "invalid {name}: must be an integer of at least -1, got {v:?}"
            ))),
        },
    }
}

/// The `q` of `/api/v2/traces/{id}` with `match_depth`, `keep_hierarchy` and
/// `ancestor_depth`; `None` without `q`.
fn trace_filter(params: &Params) -> Result<Option<TraceFilter>> {
    let Some(q) = param(params, "q").and_then(filter_text) else {
        return Ok(None);
    };
    let keep_hierarchy = match param(params, "keep_hierarchy") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(QueryError::bad_request(format!(
                "invalid keep_hierarchy: must be true or false, got {other:?}"
            )));
        }
    };
    Ok(Some(TraceFilter::new(
        &q,
        depth(params, "match_depth", 0)?,
        keep_hierarchy,
        depth(params, "ancestor_depth", -1)?,
    )?))
}

/// A metrics time parameter: up to 10 digits is Unix seconds, more is nanoseconds, a number
/// with a `.` is float seconds (to the millisecond), anything else RFC 3339.
fn metrics_time(name: &str, value: &str) -> Result<i64> {
    let invalid = || QueryError::bad_request(format!("invalid {name}: {value:?}"));
    let value = value.trim();
    if value.contains('.')
        && let Ok(seconds) = value.parse::<f64>()
    {
        return Ok((seconds * 1000.0).round() as i64 * 1_000_000);
    }
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = value.parse().map_err(|_| invalid())?;
        return Ok(if value.len() <= 10 {
            n.saturating_mul(crate::time::NANOS_PER_SECOND)
        } else {
            n
        });
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(invalid)
}

/// A metrics `step`: float seconds (`30`, `0.5`) or a Go duration (`30s`).
fn metrics_step(value: &str) -> Result<i64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_finite() {
            return Ok((seconds * 1e9).round() as i64);
        }
    } else if let Some(ns) = crate::time::parse_duration_ns(value, DurationSyntax::Go) {
        return Ok(ns);
    } else if let Some(ns) = value
        .strip_prefix('-')
        .and_then(|v| crate::time::parse_duration_ns(v, DurationSyntax::Go))
    {
        return Ok(-ns);
    }
    Err(QueryError::bad_request(format!(
        "invalid step: {value:?} is neither seconds nor a duration"
    )))
}

/// The query of a metrics request: `q`, else `query`.
fn metrics_query(params: &Params) -> Result<String> {
    let query = param(params, "q")
        .or_else(|| param(params, "query"))
        .unwrap_or_default();
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryError::bad_request(format!(
            "query is {} bytes, more than the limit of {MAX_QUERY_BYTES}",
            query.len()
        )));
    }
    Ok(query.to_string())
}

/// `start`/`end`/`since` of a metrics request: `end` defaults to now, `start` to `since`
/// (default 1h) before `min(end, now)`.
fn metrics_window(params: &Params, now_ns: i64) -> Result<(i64, i64)> {
    let end = param(params, "end")
        .map(|v| metrics_time("end", v))
        .transpose()?
        .unwrap_or(now_ns);
    let start = match param(params, "start") {
        Some(v) => metrics_time("start", v)?,
        None => {
            let since = duration(params, "since", DurationSyntax::Prometheus)?
                .map_or(DEFAULT_WINDOW_NS, crate::time::duration_ns);
            end.min(now_ns) - since
        }
    };
    Ok((start, end))
}

/// Reads `/api/metrics/query_range`.
pub fn metrics_range_from_http(api: &TempoApi, params: &Params) -> Result<MetricsRequest> {
    let now = crate::time::now_ns();
    let step = param(params, "step").map(metrics_step).transpose()?;
    let exemplars: Option<u64> = number(params, "exemplars")?;
    let max_series: Option<u64> = number(params, "maxSeries")?;
    let query = metrics_query(params)?;
    let window = metrics_window(params, now)?;
    let instant = param(params, "instant").is_some_and(|v| v == "true");
    let limits = api.metrics_limits();
    if instant {
        return MetricsRequest::instant(query, window, &limits, now);
    }
    MetricsRequest::range(
        query,
        window,
        step,
        exemplars.map(|n| n as usize),
        max_series.unwrap_or_default() as usize,
        &limits,
        now,
    )
}

/// Reads `/api/metrics/query`.
pub fn metrics_instant_from_http(api: &TempoApi, params: &Params) -> Result<MetricsRequest> {
    let now = crate::time::now_ns();
    let query = metrics_query(params)?;
    let window = metrics_window(params, now)?;
    MetricsRequest::instant(query, window, &api.metrics_limits(), now)
}

fn grpc_ns(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `start`/`end` of a gRPC metrics request in nanoseconds, 0 meaning not given: `end` defaults
/// to now, `start` to the default window before `min(end, now)`.
fn grpc_window(start: u64, end: u64, now: i64) -> (i64, i64) {
    let end = if end == 0 { now } else { grpc_ns(end) };
    let start = if start == 0 {
        end.min(now) - DEFAULT_WINDOW_NS
    } else {
        grpc_ns(start)
    };
    (start, end)
}

/// Reads a gRPC `QueryRangeRequest` (times and step in nanoseconds).
pub fn metrics_range_from_grpc(
    api: &TempoApi,
    request: &tempopb::QueryRangeRequest,
) -> Result<MetricsRequest> {
    let now = crate::time::now_ns();
    let limits = api.metrics_limits();
    let (start, end) = grpc_window(request.start, request.end, now);
    // Without the `instant` field, a request whose step is its whole range is an instant one.
    let instant = request
        .instant
        .unwrap_or(request.step != 0 && grpc_ns(request.step) == end - start);
    if instant {
        return MetricsRequest::instant(request.query.clone(), (start, end), &limits, now);
    }
    MetricsRequest::range(
        request.query.clone(),
        (start, end),
        (request.step != 0).then(|| grpc_ns(request.step)),
        Some(request.exemplars as usize),
        request.max_series as usize,
        &limits,
        now,
    )
}

/// Reads a gRPC `QueryInstantRequest` (times in nanoseconds).
pub fn metrics_instant_from_grpc(
    api: &TempoApi,
    request: &tempopb::QueryInstantRequest,
) -> Result<MetricsRequest> {
    let now = crate::time::now_ns();
    let (start, end) = grpc_window(request.start, request.end, now);
    MetricsRequest::instant(
        request.query.clone(),
        (start, end),
        &api.metrics_limits(),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_pairs() {
        assert_eq!(
            parse_logfmt(r#"service.name=api  msg="a \"b\" c" flag"#).unwrap(),
            vec![
                ("service.name".into(), "api".into()),
                ("msg".into(), "a \"b\" c".into()),
                ("flag".into(), String::new()),
            ]
        );
        assert!(parse_logfmt("a=1 a=2").unwrap_err().contains("duplicate"));
        assert!(parse_logfmt("a=\"open").is_err());
        assert!(parse_logfmt("=x").is_err());
    }

    #[test]
    fn tags_become_traceql() {
        let q = tags_to_traceql(
            &[
                ("service.name".into(), "fro.nt".into()),
                ("http.status_code".into(), "500".into()),
                ("status.code".into(), "error".into()),
                ("region".into(), "eu \"west\"".into()),
            ],
            Some(100),
            None,
        )
        .unwrap();
        assert_eq!(
            q,
            r#"{ resource.service.name =~ ".*fro\\.nt.*" && span.http.status_code = 500 && status = error && ."region" = "eu \"west\"" && traceDuration >= 100ms }"#
        );
        crate::traceql::check(&q).unwrap();
        assert!(tags_to_traceql(&[("status.code".into(), "bad".into())], None, None).is_err());
    }
}
