//! Search: TraceQL (`q`) and tag-based (`tags`, `minDuration`, `maxDuration`) requests, run as
//! jobs over slices of the window, newest first, so that a streaming client sees results as
//! they are found and a search stops as soon as it holds `limit` traces.
//!
//! Tag searches are translated into the TraceQL query with the same meaning and run by the
//! same engine: there is one search path.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::datatypes::Int64Type;
use datafusion::common::ScalarValue;
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::logical_expr::cast;
use datafusion::prelude::{col, lit};

use super::{TempoApi, TempoError, Window};
use crate::query::search::{self as engine_search, SearchError, TraceResult};
use crate::schema::to_otlp::key_values;
use crate::schema::traces;
use crate::tables::TableKind;
use crate::tempopb::{
    SearchMetrics, SearchRequest, SearchResponse, Span, SpanSet, TraceSearchMetadata,
};

/// Longest accepted TraceQL query, in bytes.
pub const MAX_QUERY_BYTES: usize = 128 << 10;
/// Root service name of a trace whose root span has not arrived, as Tempo reports it.
pub const ROOT_NOT_RECEIVED: &str = "<root span not yet received>";
/// Windows are searched in slices of at most this many nanoseconds (six hours)...
const JOB_SPAN_NS: i64 = 6 * 3_600_000_000_000;
/// ...and in at most this many slices.
const MAX_JOBS: i64 = 8;

/// A validated search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    /// TraceQL; tag searches arrive here translated.
    pub query: String,
    /// A tag search: results carry trace metadata only, no spansets.
    pub tag_search: bool,
    pub limit: usize,
    pub spss: usize,
    pub window: Window,
}

/// Parses a Go duration (`100ms`, `1.5s`, `2m`, `1h30m`).
pub fn parse_go_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// Splits logfmt text (`a=b c="d e"`) into pairs.
pub fn parse_logfmt(text: &str) -> Result<Vec<(String, String)>, String> {
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
) -> Result<String, TempoError> {
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
                    TempoError::BadRequest(format!(
                        "invalid tags: http.status_code must be an integer, got {value:?}"
                    ))
                })?;
                format!("span.http.status_code = {code}")
            }
            "status.code" => match value.as_str() {
                "unset" | "ok" | "error" => format!("status = {value}"),
                _ => {
                    return Err(TempoError::BadRequest(format!(
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

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, TempoError> {
    value.trim().parse().map_err(|_| {
        TempoError::BadRequest(format!("invalid {name}: {value:?} is not a valid number"))
    })
}

/// Parameters shared by both transports, before validation.
#[derive(Debug, Default)]
pub struct RawSearch {
    pub query: Option<String>,
    pub tags: Vec<(String, String)>,
    pub min_duration_ms: Option<u64>,
    pub max_duration_ms: Option<u64>,
    /// `None`: the default; `Some(0)` is refused over HTTP.
    pub limit: Option<u32>,
    pub spss: Option<u32>,
    pub start: Option<u64>,
    pub end: Option<u64>,
    pub since: Option<std::time::Duration>,
}

impl TempoApi {
    /// Reads the query string of `/api/search`.
    pub fn raw_search_from_http(
        &self,
        params: &HashMap<String, String>,
    ) -> Result<RawSearch, TempoError> {
        let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let duration = |name: &str| -> Result<Option<u64>, TempoError> {
            get(name)
                .map(|v| {
                    parse_go_duration(v)
                        .map(|d| d.as_millis() as u64)
                        .ok_or_else(|| {
                            TempoError::BadRequest(format!(
                                "invalid {name}: time: invalid duration {v:?}"
                            ))
                        })
                })
                .transpose()
        };
        let tags = match get("tags") {
            Some(text) => parse_logfmt(text)
                .map_err(|e| TempoError::BadRequest(format!("invalid tags: {e}")))?,
            None => Vec::new(),
        };
        let since = get("since")
            .map(|v| {
                parse_prometheus_duration(v).ok_or_else(|| {
                    TempoError::BadRequest(format!("invalid since: {v:?} is not a duration"))
                })
            })
            .transpose()?;
        Ok(RawSearch {
            query: get("q").map(str::to_string),
            tags,
            min_duration_ms: duration("minDuration")?,
            max_duration_ms: duration("maxDuration")?,
            limit: get("limit").map(|v| parse_number("limit", v)).transpose()?,
            spss: get("spss").map(|v| parse_number("spss", v)).transpose()?,
            start: get("start").map(|v| parse_number("start", v)).transpose()?,
            end: get("end").map(|v| parse_number("end", v)).transpose()?,
            since,
        })
    }

    /// Reads a gRPC `SearchRequest`; zero values mean "default", as in Tempo.
    pub fn raw_search_from_grpc(&self, request: &SearchRequest) -> RawSearch {
        let nonzero = |v: u32| (v != 0).then_some(v);
        let mut tags: Vec<(String, String)> = request
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        tags.sort();
        RawSearch {
            query: Some(request.query.clone()).filter(|q| !q.is_empty()),
            tags,
            min_duration_ms: nonzero(request.min_duration_ms).map(u64::from),
            max_duration_ms: nonzero(request.max_duration_ms).map(u64::from),
            limit: nonzero(request.limit),
            spss: nonzero(request.spans_per_span_set),
            start: nonzero(request.start).map(u64::from),
            end: nonzero(request.end).map(u64::from),
            since: None,
        }
    }

    /// Validates a search request with Tempo's rules and messages.
    pub fn search_params(&self, raw: RawSearch) -> Result<SearchParams, TempoError> {
        let settings = &self.settings;
        let limit = match raw.limit {
            None => engine_search::DEFAULT_LIMIT as u32,
            Some(0) => {
                return Err(TempoError::BadRequest(
                    "invalid limit: must be a positive number".into(),
                ));
            }
            Some(n) if n > settings.max_result_limit => {
                return Err(TempoError::BadRequest(format!(
                    "limit {n} exceeds max limit {}",
                    settings.max_result_limit
                )));
            }
            Some(n) => n,
        };
        let spss = raw.spss.unwrap_or(0);
        if spss > settings.max_spans_per_span_set {
            return Err(TempoError::BadRequest(format!(
                "spss {spss} exceeds max spans per span set {}",
                settings.max_spans_per_span_set
            )));
        }
        if let (Some(min), Some(max)) = (raw.min_duration_ms, raw.max_duration_ms)
            && min > max
        {
            return Err(TempoError::BadRequest(
                "invalid maxDuration: must be greater than minDuration".into(),
            ));
        }
        let window = self.request_window(raw.start, raw.end, raw.since)?;
        let tag_search =
            !raw.tags.is_empty() || raw.min_duration_ms.is_some() || raw.max_duration_ms.is_some();
        let query = match raw.query {
            Some(_) if !raw.tags.is_empty() => {
                return Err(TempoError::BadRequest(
                    "invalid request: can't specify tags and q in the same query".into(),
                ));
            }
            Some(q) if q.len() > MAX_QUERY_BYTES => {
                return Err(TempoError::BadRequest(format!(
                    "invalid TraceQL query: the query is {} bytes, more than the {MAX_QUERY_BYTES} allowed",
                    q.len()
                )));
            }
            // TraceQL ignores the duration parameters.
            Some(q) => {
                return Ok(SearchParams {
                    query: q,
                    tag_search: false,
                    limit: limit as usize,
                    spss: spss as usize,
                    window,
                });
            }
            None if tag_search => {
                tags_to_traceql(&raw.tags, raw.min_duration_ms, raw.max_duration_ms)?
            }
            None => "{}".to_string(),
        };
        Ok(SearchParams {
            query,
            tag_search,
            limit: limit as usize,
            spss: spss as usize,
            window,
        })
    }

    /// Runs a search. After each job `progress` receives the traces that job added and the
    /// metrics so far; the return value is the complete response.
    pub async fn search(
        &self,
        tenants: &[String],
        params: &SearchParams,
        mut progress: impl FnMut(Vec<TraceSearchMetadata>, SearchMetrics),
    ) -> Result<SearchResponse, TempoError> {
        // Refuse a bad query before any job runs.
        crate::traceql::check(&params.query).map_err(|e| {
            TempoError::BadRequest(format!("invalid TraceQL query: {}", SearchError::from(e)))
        })?;
        let jobs = jobs(params.window);
        let mut metrics = self.block_metrics(tenants, params.window);
        metrics.total_jobs = (jobs.len() * tenants.len()) as u32;
        let mut held: Vec<TraceSearchMetadata> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        'jobs: for job in &jobs {
            for tenant in tenants {
                let found = engine_search::search(
                    &self.engine,
                    tenant,
                    &params.query,
                    Some(job.start_ns),
                    Some(job.end_ns),
                    params.limit,
                    params.spss,
                )
                .await
                .map_err(search_error)?;
                let fresh: Vec<TraceResult> = found
                    .traces
                    .into_iter()
                    .filter(|t| seen.insert(t.trace_id.clone()))
                    .take(params.limit - held.len())
                    .collect();
                let mut added: Vec<TraceSearchMetadata> = fresh
                    .iter()
                    .map(|t| metadata(t, params.tag_search))
                    .collect();
                self.service_stats(tenant, &mut added).await?;
                metrics.completed_jobs += 1;
                held.extend(added.iter().cloned());
                progress(added, metrics);
                if held.len() >= params.limit {
                    break 'jobs;
                }
            }
        }
        held.sort_by(|a, b| {
            b.start_time_unix_nano
                .cmp(&a.start_time_unix_nano)
                .then_with(|| a.trace_id.cmp(&b.trace_id))
        });
        Ok(SearchResponse {
            traces: held,
            metrics: Some(metrics),
        })
    }

    /// Blocks of `tenants` whose spans may fall in `window`.
    fn block_metrics(&self, tenants: &[String], window: Window) -> SearchMetrics {
        let mut metrics = SearchMetrics::default();
        for tenant in tenants {
            for block in self.engine.catalog().blocks(tenant) {
                if block.min_start_ns <= window.end_ns && block.max_start_ns >= window.start_ns {
                    metrics.total_blocks += 1;
                    metrics.total_block_bytes += block.spans_bytes + block.traces_bytes;
                }
            }
        }
        metrics
    }

    /// Fills `serviceStats`: spans and error spans per service of each trace.
    async fn service_stats(
        &self,
        tenant: &str,
        traces: &mut [TraceSearchMetadata],
    ) -> Result<(), TempoError> {
        if traces.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(traces.len());
        for t in traces.iter() {
            let id = super::trace::parse_trace_id(&t.trace_id)?;
            ids.push(lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec()))));
        }
        // The `traces` table keeps per-service counts for each trace (one row per block the
        // trace has spans in), a tenth of the size of the spans.
        let item = |name: &str| get_field(col(SERVICE), name);
        let batches = self
            .engine
            .session(tenant)?
            .table(TableKind::Traces.name())
            .await?
            .filter(col(traces::TRACE_ID).in_list(ids, false))?
            .select(vec![
                col(traces::TRACE_ID),
                col(traces::SERVICES).alias(SERVICE),
            ])?
            .unnest_columns(&[SERVICE])?
            .aggregate(
                vec![
                    col(traces::TRACE_ID),
                    cast(item(traces::service::SERVICE_NAME), DataType::Utf8).alias(SERVICE),
                ],
                vec![
                    sum(item(traces::service::SPAN_COUNT)).alias("spans"),
                    sum(item(traces::service::ERROR_COUNT)).alias("errors"),
                ],
            )?
            .collect()
            .await?;
        let index: HashMap<String, usize> = traces
            .iter()
            .enumerate()
            .map(|(i, t)| (t.trace_id.clone(), i))
            .collect();
        for batch in &batches {
            let ids = batch.column(0).as_fixed_size_binary();
            let services = batch.column(1).as_string::<i32>();
            let span_counts = batch.column(2).as_primitive::<Int64Type>();
            let error_counts = batch.column(3).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                let hex = engine_search::trace_id_hex(ids.value(row));
                let Some(&i) = index.get(&hex) else { continue };
                let stats = traces[i]
                    .service_stats
                    .entry(services.value(row).to_string())
                    .or_default();
                if span_counts.is_valid(row) {
                    stats.span_count += span_counts.value(row) as u32;
                }
                if error_counts.is_valid(row) {
                    stats.error_count += error_counts.value(row) as u32;
                }
            }
        }
        Ok(())
    }
}

/// The unnested `services` item in the service-stats query.
const SERVICE: &str = "__service";

fn search_error(e: SearchError) -> TempoError {
    match e {
        SearchError::Parse(_) | SearchError::Invalid(_) | SearchError::Unsupported(_) => {
            TempoError::BadRequest(format!("invalid TraceQL query: {e}"))
        }
        SearchError::Execution(q) => q.into(),
    }
}

/// Slices of the window, newest first.
fn jobs(window: Window) -> Vec<Window> {
    let span = window.end_ns.saturating_sub(window.start_ns).max(1);
    let count = (span / JOB_SPAN_NS + 1).clamp(1, MAX_JOBS);
    let step = span / count + 1;
    let mut out = Vec::new();
    let mut end = window.end_ns;
    while end >= window.start_ns && (out.len() as i64) < count {
        let start = end.saturating_sub(step - 1).max(window.start_ns);
        out.push(Window {
            start_ns: start,
            end_ns: end,
        });
        if start == window.start_ns {
            break;
        }
        end = start - 1;
    }
    out
}

fn metadata(trace: &TraceResult, tag_search: bool) -> TraceSearchMetadata {
    let span_sets: Vec<SpanSet> = if tag_search {
        Vec::new()
    } else {
        trace
            .span_sets
            .iter()
            .map(|set| SpanSet {
                spans: set
                    .spans
                    .iter()
                    .map(|s| Span {
                        span_id: s.span_id.clone(),
                        name: s.name.clone(),
                        start_time_unix_nano: s.start_time_unix_nano.max(0) as u64,
                        duration_nanos: s.duration_nanos.max(0) as u64,
                        attributes: key_values(&s.attributes),
                    })
                    .collect(),
                matched: set.matched as u32,
                attributes: key_values(&set.attributes),
            })
            .collect()
    };
    TraceSearchMetadata {
        trace_id: trace.trace_id.clone(),
        root_service_name: trace
            .root_service_name
            .clone()
            .unwrap_or_else(|| ROOT_NOT_RECEIVED.to_string()),
        root_trace_name: trace.root_trace_name.clone().unwrap_or_default(),
        start_time_unix_nano: trace.start_time_unix_nano.max(0) as u64,
        duration_ms: u32::try_from(trace.duration_ms.max(0)).unwrap_or(u32::MAX),
        span_set: span_sets.first().cloned(),
        span_sets,
        service_stats: HashMap::new(),
    }
}

/// A Prometheus duration: a sequence of number+unit with units ms, s, m, h, d, w, y.
pub fn parse_prometheus_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_ms = total_ms.checked_add(number.checked_mul(ms)?)?;
    }
    Some(std::time::Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("x"), None);
    }

    #[test]
    fn prometheus_durations() {
        assert_eq!(
            parse_prometheus_duration("15m"),
            Some(Duration::from_secs(900))
        );
        assert_eq!(
            parse_prometheus_duration("1d"),
            Some(Duration::from_secs(86400))
        );
        assert_eq!(
            parse_prometheus_duration("1h30m"),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(parse_prometheus_duration("1.5h"), None);
    }

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

    #[test]
    fn jobs_cover_the_window_newest_first() {
        let w = Window {
            start_ns: 0,
            end_ns: 3 * JOB_SPAN_NS,
        };
        let slices = jobs(w);
        assert_eq!(slices.len(), 4);
        assert_eq!(slices[0].end_ns, w.end_ns);
        assert_eq!(slices.last().unwrap().start_ns, 0);
        for pair in slices.windows(2) {
            assert_eq!(pair[1].end_ns + 1, pair[0].start_ns);
        }
        let small = Window {
            start_ns: 10,
            end_ns: 20,
        };
        assert_eq!(jobs(small), vec![small]);
    }
}
