//! Prometheus metrics: a small registry, the `GET /metrics` route that renders it in the text
//! exposition format 0.0.4, and the tower layer that measures every request.
//!
//! One [`Metrics`] is shared (as an `Arc`) by one server's listeners, so two servers in one
//! process — as in the integration tests — count separately. Counters and the request histogram
//! live here; block and live-span gauges are read from the catalog and the ingester at scrape
//! time, so they cannot drift from the truth. This module must not decide anything: it counts
//! what the receivers and listeners report.
//!
//! Requests are counted by the histogram's `_count` series; there is no separate
//! `spanlake_requests_total`, so the two can never disagree. Label cardinality stays bounded:
//! `route` is axum's route template (never the raw path), the gRPC method path only for methods
//! the server implements, and `other` for everything else.
//!
//! ```text
//! spanlake_request_duration_seconds_count{route="/api/traces/{id}",method="GET",status_code="404"} 1
//! spanlake_ingest_spans_received_total{transport="otlp_grpc"} 12
//! spanlake_blocks{tenant="single-tenant"} 1
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::IntoResponse;
use axum::routing::get;
use http_body_util::BodyExt;
use parking_lot::Mutex;

use crate::ingester::Ingester;
use crate::storage::Catalog;

/// Path of the metrics endpoint, on the HTTP port, outside any API prefix and tenant-free.
pub const METRICS_PATH: &str = "/metrics";
/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Upper bounds of the request duration buckets, in seconds (Prometheus' defaults).
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The `route` label of requests no route template matched.
const OTHER: &str = "other";

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    requests: HistogramVec,
    ingest_requests: CounterVec,
    ingest_spans: CounterVec,
    ingest_refused_spans: CounterVec,
    ingest_bytes: CounterVec,
    catalog: Arc<Catalog>,
    ingester: Arc<Ingester>,
}

impl Metrics {
    /// A registry with every counter at zero, reading gauges from `catalog` and `ingester`.
    pub fn new(catalog: Arc<Catalog>, ingester: Arc<Ingester>) -> Self {
        Self {
            requests: HistogramVec::new(
                "spanlake_request_duration_seconds",
                "Time from receiving a request to the end of its response body, by route, method and status; `_count` counts requests.",
                &["route", "method", "status_code"],
                DURATION_BUCKETS,
            ),
            ingest_requests: CounterVec::new(
                "spanlake_ingest_requests_total",
                "OTLP export requests handled by a receiver, by transport and outcome (`ok` or why it was refused).",
                &["transport", "outcome"],
            ),
            ingest_spans: CounterVec::new(
                "spanlake_ingest_spans_received_total",
                "Spans stored and acknowledged, by transport.",
                &["transport"],
            ),
            ingest_refused_spans: CounterVec::new(
                "spanlake_ingest_spans_refused_total",
                "Spans in decoded export requests that were refused, by transport and reason.",
                &["transport", "reason"],
            ),
            ingest_bytes: CounterVec::new(
                "spanlake_ingest_bytes_received_total",
                "Uncompressed payload bytes of decoded export requests, by transport.",
                &["transport"],
            ),
            catalog,
            ingester,
        }
    }

    /// Counts an export request that was stored: `spans` spans in `bytes` payload bytes.
    pub fn ingest_accepted(&self, transport: &str, bytes: usize, spans: usize) {
        self.ingest_requests.add(&[transport, "ok"], 1);
        self.ingest_spans.add(&[transport], spans as u64);
        self.ingest_bytes.add(&[transport], bytes as u64);
    }

    /// Counts a refused export request; `spans` and `bytes` are 0 when it could not be decoded.
    pub fn ingest_refused(&self, transport: &str, reason: &str, bytes: usize, spans: usize) {
        self.ingest_requests.add(&[transport, reason], 1);
        if spans > 0 {
            self.ingest_refused_spans
                .add(&[transport, reason], spans as u64);
        }
        if bytes > 0 {
            self.ingest_bytes.add(&[transport], bytes as u64);
        }
    }

    /// The whole registry in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.requests.render(&mut out);
        for counter in [
            &self.ingest_requests,
            &self.ingest_spans,
            &self.ingest_refused_spans,
            &self.ingest_bytes,
        ] {
            counter.render(&mut out);
        }
        let mut blocks = Vec::new();
        let mut bytes = Vec::new();
        for tenant in self.catalog.tenants() {
            let metas = self.catalog.blocks(&tenant);
            let size: u64 = metas.iter().map(|b| b.spans_bytes + b.traces_bytes).sum();
            blocks.push((vec![tenant.clone()], metas.len() as f64));
            bytes.push((vec![tenant], size as f64));
        }
        render_gauge(
            &mut out,
            "spanlake_blocks",
            "Committed blocks, by tenant.",
            &["tenant"],
            &blocks,
        );
        render_gauge(
            &mut out,
            "spanlake_block_bytes",
            "Bytes of committed blocks' Parquet files, by tenant.",
            &["tenant"],
            &bytes,
        );
        render_gauge(
            &mut out,
            "spanlake_live_spans",
            "Spans held in memory by the ingester: open traces and flushed blocks still in their grace period.",
            &[],
            &[(vec![], self.ingester.live_span_count() as f64)],
        );
        out
    }

    fn observe_request(&self, route: &str, method: &str, status: &str, seconds: f64) {
        self.requests.observe(&[route, method, status], seconds);
    }
}

/// The `GET /metrics` route.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(METRICS_PATH, get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}

/// A label set: values in the order of the family's label names.
type LabelValues = Vec<String>;

fn label_values(values: &[&str]) -> LabelValues {
    values.iter().map(|v| v.to_string()).collect()
}

/// A family of counters sharing a name and label names.
#[derive(Debug)]
struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<LabelValues, u64>>,
}

impl CounterVec {
    fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            values: Mutex::default(),
        }
    }

    fn add(&self, values: &[&str], n: u64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        *self.values.lock().entry(label_values(values)).or_default() += n;
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        for (values, n) in self.values.lock().iter() {
            sample(out, self.name, self.labels, values, None, *n as f64);
        }
    }
}

/// A family of histograms sharing a name, label names and buckets.
#[derive(Debug)]
struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    values: Mutex<BTreeMap<LabelValues, Histogram>>,
}

/// One histogram: per-bucket (not cumulative) counts, the last one for `+Inf`.
#[derive(Debug)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
}

impl HistogramVec {
    fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            buckets,
            values: Mutex::default(),
        }
    }

    fn observe(&self, values: &[&str], value: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "{}", self.name);
        let bucket = self.buckets.partition_point(|le| *le < value);
        let mut histograms = self.values.lock();
        let histogram = histograms
            .entry(label_values(values))
            .or_insert_with(|| Histogram {
                counts: vec![0; self.buckets.len() + 1],
                sum: 0.0,
            });
        histogram.counts[bucket] += 1;
        histogram.sum += value;
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let bucket = format!("{}_bucket", self.name);
        let mut labels = self.labels.to_vec();
        labels.push("le");
        for (values, histogram) in self.values.lock().iter() {
            let mut cumulative = 0;
            let bounds = self.buckets.iter().copied().chain([f64::INFINITY]);
            for (le, count) in bounds.zip(&histogram.counts) {
                cumulative += count;
                let le = format_value(le);
                sample(out, &bucket, &labels, values, Some(&le), cumulative as f64);
            }
            let sum = format!("{}_sum", self.name);
            sample(out, &sum, self.labels, values, None, histogram.sum);
            let count = format!("{}_count", self.name);
            sample(out, &count, self.labels, values, None, cumulative as f64);
        }
    }
}

fn render_gauge(
    out: &mut String,
    name: &str,
    help: &str,
    labels: &[&str],
    rows: &[(LabelValues, f64)],
) {
    header(out, name, help, "gauge");
    for (values, value) in rows {
        sample(out, name, labels, values, None, *value);
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', r"\\").replace('\n', r"\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes `name{label="value",…} value`; `le`, when given, is the value of the last label.
fn sample(
    out: &mut String,
    name: &str,
    labels: &[&str],
    values: &[String],
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    let values = values.iter().map(String::as_str).chain(le);
    let mut pairs = labels.iter().zip(values).peekable();
    if pairs.peek().is_some() {
        out.push('{');
        for (i, (label, value)) in pairs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{label}=\"{}\"", escape_label_value(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_value(value));
}

/// Escapes a label value as the exposition format requires: `\`, `"` and line feeds.
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str(r"\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str(r"\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A sample value or bucket bound as Prometheus writes it: `+Inf`, `NaN`, `1`, `0.005`.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        value.to_string()
    }
}

/// The tower layer measuring requests into `spanlake_request_duration_seconds`; works on an
/// axum `Router` (labels by `MatchedPath`) and on a tonic transport server alike.
#[derive(Debug, Clone)]
pub struct MeasureLayer {
    metrics: Arc<Metrics>,
}

impl MeasureLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for MeasureLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MeasureLayer`] wraps around each route or gRPC server.
#[derive(Debug, Clone)]
pub struct Measure<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for Measure<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: HttpBody<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let mut observation = Observation::start(self.metrics.clone(), &request);
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            observation.responded(response.status().as_u16(), response.headers());
            // The observation travels with the body and is recorded when the body is done.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    if let Some(trailers) = frame.trailers_ref() {
                        observation.trailers(trailers);
                    }
                    frame
                }))
            }))
        })
    }
}

/// One request being measured; recorded when dropped, that is when its response body is done
/// or the request was abandoned. Abandoned requests count as status `499` (HTTP, nginx's
/// "client closed request") or `CANCELLED` (gRPC).
struct Observation {
    metrics: Arc<Metrics>,
    start: Instant,
    /// The route template for HTTP, the method path for gRPC.
    route: String,
    method: &'static str,
    grpc: bool,
    status: Option<String>,
}

impl Observation {
    fn start<B>(metrics: Arc<Metrics>, request: &http::Request<B>) -> Self {
        let grpc = is_grpc(request.headers());
        let route = if grpc {
            request.uri().path().to_string()
        } else {
            request
                .extensions()
                .get::<MatchedPath>()
                .map_or(OTHER, MatchedPath::as_str)
                .to_string()
        };
        Self {
            metrics,
            start: Instant::now(),
            route,
            method: if grpc {
                "gRPC"
            } else {
                method_label(request.method())
            },
            grpc,
            status: None,
        }
    }

    /// Takes the HTTP status, or a gRPC status sent without a body (trailers-only response).
    fn responded(&mut self, status: u16, headers: &HeaderMap) {
        self.status = if self.grpc {
            headers.get("grpc-status").map(grpc_code_name)
        } else {
            Some(status.to_string())
        };
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc
            && let Some(code) = trailers.get("grpc-status")
        {
            self.status = Some(grpc_code_name(code));
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        let seconds = self.start.elapsed().as_secs_f64();
        let cancelled = if self.grpc { "CANCELLED" } else { "499" };
        let status = self.status.as_deref().unwrap_or(cancelled);
        // Only methods the server implements get their own series.
        let route = if self.grpc && status == "UNIMPLEMENTED" {
            OTHER
        } else {
            &self.route
        };
        self.metrics
            .observe_request(route, self.method, status, seconds);
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The method as a label: the standard methods by name, anything else `other`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or(OTHER)
}

/// A `grpc-status` value by its canonical name (`OK`, `NOT_FOUND`, …).
fn grpc_code_name(value: &http::HeaderValue) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .and_then(|code| NAMES.get(code))
        .unwrap_or(&"UNKNOWN")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label_value(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label_value("line\nbreak"), r"line\nbreak");
        assert_eq!(escape_label_value("/api/traces/{id}"), "/api/traces/{id}");
    }

    #[test]
    fn samples_write_escaped_labels_in_order() {
        let counter = CounterVec::new("x_total", "help", &["a", "b"]);
        counter.add(&["1", "say \"hi\""], 2);
        let mut out = String::new();
        counter.render(&mut out);
        assert_eq!(
            out,
            "# HELP x_total help\n# TYPE x_total counter\nx_total{a=\"1\",b=\"say \\\"hi\\\"\"} 2\n"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let histogram = HistogramVec::new("d_seconds", "help", &["r"], &[0.25, 1.0]);
        // An observation equal to a bound falls into that bound's bucket.
        for value in [0.125, 0.25, 0.5, 20.0] {
            histogram.observe(&["x"], value);
        }
        let mut out = String::new();
        histogram.render(&mut out);
        let expected = "\
# HELP d_seconds help
# TYPE d_seconds histogram
d_seconds_bucket{r=\"x\",le=\"0.25\"} 2
d_seconds_bucket{r=\"x\",le=\"1\"} 3
d_seconds_bucket{r=\"x\",le=\"+Inf\"} 4
d_seconds_sum{r=\"x\"} 20.875
d_seconds_count{r=\"x\"} 4
";
        assert_eq!(out, expected);
    }

    #[test]
    fn values_are_written_as_prometheus_parses_them() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(10.0), "10");
        assert_eq!(format_value(0.005), "0.005");
    }

    #[test]
    fn grpc_status_codes_are_named() {
        let name = |v: &'static str| grpc_code_name(&http::HeaderValue::from_static(v));
        assert_eq!(name("0"), "OK");
        assert_eq!(name("12"), "UNIMPLEMENTED");
        assert_eq!(name("99"), "UNKNOWN");
    }

    #[test]
    fn unusual_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_label(&custom), "other");
    }
}
