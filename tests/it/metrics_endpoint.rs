//! `GET /metrics` on the HTTP port: the text exposition format, request latency by route
//! template, ingest counters and block gauges, read back from a real server.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use prost::Message;
use spanlake::generator::Generator;
use spanlake::tempopb::TraceByIdRequest;
use spanlake::tempopb::querier_client::QuerierClient;
use spanlake::tenant::SINGLE_TENANT;

use crate::common::{TestServer, span_count};

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed; panics on any line that is not a comment or a valid sample.
struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of the sample named `name` with exactly the labels `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.0
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", self.0))
    }

    /// How many requests the request histogram counted for this route, method and status.
    fn requests(&self, route: &str, method: &str, status: &str) -> f64 {
        self.value(
            "spanlake_request_duration_seconds_count",
            &[
                ("route", route),
                ("method", method),
                ("status_code", status),
            ],
        )
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `{a="x",b="y\"z"}` (without the braces), undoing the format's escapes.
fn parse_labels(text: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("label without =\" in {line:?}"));
        assert!(is_metric_name(name), "bad label name {name:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "duplicate label {name} in {line:?}"
        );
        rest = &after[end + 1..];
        if !rest.is_empty() {
            rest = rest
                .strip_prefix(',')
                .unwrap_or_else(|| panic!("labels not separated by commas in {line:?}"));
        }
    }
    labels
}

fn parse(text: &str) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let (keyword, name, rest) = (words.next(), words.next(), words.next());
            assert!(name.is_some_and(is_metric_name), "bad comment {line:?}");
            match keyword {
                Some("HELP") => assert!(rest.is_some(), "HELP without text: {line:?}"),
                Some("TYPE") => assert!(
                    matches!(rest, Some("counter" | "gauge" | "histogram")),
                    "bad TYPE {line:?}"
                ),
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                (name, parse_labels(labels, line))
            }
            None => (series, BTreeMap::new()),
        };
        assert!(is_metric_name(name), "bad metric name in {line:?}");
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Scrape(samples)
}

async fn scrape(server: &TestServer) -> Scrape {
    let response = reqwest::get(format!("{}/metrics", server.http_url()))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse(&response.text().await.unwrap())
}

async fn get_status(server: &TestServer, path: &str) -> u16 {
    reqwest::get(format!("{}{path}", server.http_url()))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Exports one generated trace over OTLP/gRPC and returns its span count.
async fn export_grpc(server: &TestServer, seed: u64) -> usize {
    let request = Generator::new(seed).trace_at(0);
    let spans = span_count(&request);
    server.grpc_client().await.export(request).await.unwrap();
    spans
}

const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const FIND_TRACE: &str = "/tempopb.Querier/FindTraceByID";

#[tokio::test]
async fn metrics_need_no_tenant_even_with_multitenancy() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    let metrics = scrape(&server).await;
    assert!(
        metrics
            .0
            .iter()
            .any(|s| s.name == "spanlake_live_spans" && s.value == 0.0)
    );
}

#[tokio::test]
async fn http_requests_are_counted_by_route_template_method_and_status() {
    let server = TestServer::start().await;
    for _ in 0..2 {
        assert_eq!(get_status(&server, "/api/echo").await, 200);
    }
    assert_eq!(get_status(&server, "/api/traces/abc").await, 404);
    assert_eq!(get_status(&server, "/api/search?q=%7B%7D").await, 200);
    // Unmatched paths are a 404, counted under `other`.
    assert_eq!(get_status(&server, "/no/such/page").await, 404);
    let unmatched = "404";
    let metrics = scrape(&server).await;
    assert_eq!(metrics.requests("/api/echo", "GET", "200"), 2.0);
    assert_eq!(metrics.requests("/api/traces/{id}", "GET", "404"), 1.0);
    assert_eq!(metrics.requests("/api/search", "GET", "200"), 1.0);
    assert_eq!(metrics.requests("other", "GET", unmatched), 1.0);
    assert!(
        !metrics.0.iter().any(|s| s
            .labels
            .values()
            .any(|v| v.contains("abc") || v.contains("no/such"))),
        "a raw path leaked into a label"
    );
}

#[tokio::test]
async fn request_histogram_buckets_are_cumulative_up_to_inf() {
    let server = TestServer::start().await;
    get_status(&server, "/api/echo").await;
    let metrics = scrape(&server).await;
    let echo = |s: &&Sample| {
        s.name == "spanlake_request_duration_seconds_bucket"
            && s.labels.get("route").map(String::as_str) == Some("/api/echo")
    };
    let buckets: Vec<&Sample> = metrics.0.iter().filter(echo).collect();
    assert_eq!(buckets.len(), 12, "11 bounds and +Inf");
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
    assert_eq!(buckets.last().unwrap().labels["le"], "+Inf");
    assert_eq!(buckets.last().unwrap().value, 1.0);
}

#[tokio::test]
async fn ingest_counters_match_the_exported_spans() {
    let server = TestServer::start().await;
    let grpc_spans = export_grpc(&server, 1).await + export_grpc(&server, 2).await;
    let request = Generator::new(3).trace_at(0);
    let http_spans = span_count(&request);
    let body = request.encode_to_vec();
    let response = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let metrics = scrape(&server).await;
    let received = |transport| {
        metrics.value(
            "spanlake_ingest_spans_received_total",
            &[("transport", transport)],
        )
    };
    assert_eq!(received("otlp_grpc"), grpc_spans as f64);
    assert_eq!(received("otlp_http"), http_spans as f64);
    let requests = |transport| {
        metrics.value(
            "spanlake_ingest_requests_total",
            &[("transport", transport), ("outcome", "ok")],
        )
    };
    assert_eq!(requests("otlp_grpc"), 2.0);
    assert_eq!(requests("otlp_http"), 1.0);
    assert_eq!(
        metrics.value(
            "spanlake_ingest_bytes_received_total",
            &[("transport", "otlp_http")]
        ),
        body.len() as f64
    );
    assert_eq!(
        metrics.value("spanlake_live_spans", &[]),
        (grpc_spans + http_spans) as f64
    );
    assert_eq!(metrics.requests(GRPC_EXPORT, "gRPC", "OK"), 2.0);
    assert_eq!(metrics.requests("/v1/traces", "POST", "200"), 1.0);
}

#[tokio::test]
async fn refused_exports_are_counted_by_reason() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    let request = Generator::new(1).trace_at(0);
    let spans = span_count(&request);
    let status = server
        .grpc_client()
        .await
        .export(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let response = reqwest::Client::new()
        .post(server.otlp_http_url())
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);

    let metrics = scrape(&server).await;
    assert_eq!(
        metrics.value(
            "spanlake_ingest_spans_refused_total",
            &[("transport", "otlp_grpc"), ("reason", "missing_tenant")]
        ),
        spans as f64
    );
    assert_eq!(
        metrics.value(
            "spanlake_ingest_requests_total",
            &[
                ("transport", "otlp_http"),
                ("outcome", "unsupported_content_type")
            ]
        ),
        1.0
    );
    assert_eq!(
        metrics.get(
            "spanlake_ingest_spans_received_total",
            &[("transport", "otlp_grpc")]
        ),
        None
    );
    assert_eq!(
        metrics.requests(GRPC_EXPORT, "gRPC", "UNAUTHENTICATED"),
        1.0
    );
}

#[tokio::test]
async fn block_gauges_count_flushed_blocks_per_tenant() {
    let server = TestServer::start().await;
    export_grpc(&server, 1).await;
    server.server.ingester.flush(true).await.unwrap();
    let metrics = scrape(&server).await;
    assert!(metrics.value("spanlake_blocks", &[("tenant", SINGLE_TENANT)]) >= 1.0);
    assert!(metrics.value("spanlake_block_bytes", &[("tenant", SINGLE_TENANT)]) > 0.0);
}

async fn find_trace(addr: SocketAddr, trace_id: Vec<u8>) -> Result<(), tonic::Status> {
    let mut client = QuerierClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client
        .find_trace_by_id(TraceByIdRequest {
            trace_id,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn grpc_requests_are_counted_by_method_path_and_grpc_status() {
    let server = TestServer::start().await;
    let (grpc, http) = (server.server.grpc_addr, server.server.http_addr);
    find_trace(grpc, vec![1; 16]).await.unwrap();
    let refused = find_trace(grpc, vec![]).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    find_trace(http, vec![1; 16]).await.unwrap();
    let metrics = scrape(&server).await;
    // One series for both ports: the gRPC port and h2c on the HTTP port.
    assert_eq!(metrics.requests(FIND_TRACE, "gRPC", "OK"), 2.0);
    assert_eq!(
        metrics.requests(FIND_TRACE, "gRPC", "INVALID_ARGUMENT"),
        1.0
    );
}

#[tokio::test]
async fn unimplemented_grpc_methods_share_the_other_route() {
    let server = TestServer::start().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for method in ["Nope", "AlsoNope"] {
        let response = client
            .post(format!(
                "http://{}/tempopb.Querier/{method}",
                server.server.grpc_addr
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8, 0, 0, 0, 0])
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["grpc-status"], "12");
    }
    let metrics = scrape(&server).await;
    assert_eq!(metrics.requests("other", "gRPC", "UNIMPLEMENTED"), 2.0);
}
