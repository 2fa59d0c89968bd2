//! TraceQL metrics over HTTP and gRPC against a real server, on generated spans whose truth
//! the test computes itself: 600 one-span traces, one per second from `BASE`, three services
//! in turn, durations spread over 1–1000 ms, every tenth span an error with `span.route` =
//! `/checkout` (the others `/`, `/cart` or `/search`); the first half flushed to a block, the
//! second half live.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::Value as Json;
use spanlake::tempopb::streaming_querier_client::StreamingQuerierClient;
use spanlake::tempopb::{QueryInstantRequest, QueryRangeRequest};

use crate::common::TestServer;

/// A whole minute: 2023-11-14T22:13:00Z.
const BASE_S: i64 = 1_699_999_980;
const NS: i64 = 1_000_000_000;
const SPANS: i64 = 600;
const SERVICES: [&str; 3] = ["api", "db", "web"];

/// The route of the `i`-th span: errors are all on `/checkout`.
fn route(i: i64) -> &'static str {
    if span(i).3 {
        "/checkout"
    } else {
        ["/", "/cart", "/search"][((i / 10) % 3) as usize]
    }
}

/// The `i`-th span: start, service, duration in ns, error.
fn span(i: i64) -> (i64, &'static str, i64, bool) {
    let start = (BASE_S + i) * NS + NS / 2;
    let duration = ((i * 37) % 1000 + 1) * 1_000_000;
    (start, SERVICES[(i % 3) as usize], duration, i % 10 == 0)
}

fn request(range: std::ops::Range<i64>) -> ExportTraceServiceRequest {
    let resource_spans = range
        .map(|i| {
            let (start, service, duration, error) = span(i);
            let mut trace_id = vec![0u8; 16];
            trace_id[8..].copy_from_slice(&(i + 1).to_be_bytes());
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id,
                        span_id: (i + 1).to_be_bytes().to_vec(),
                        name: "op".into(),
                        kind: 2,
                        attributes: vec![KeyValue {
                            key: "route".into(),
                            value: Some(AnyValue {
                                value: Some(Value::StringValue(route(i).into())),
                            }),
                            ..Default::default()
                        }],
                        start_time_unix_nano: start as u64,
                        end_time_unix_nano: (start + duration) as u64,
                        status: Some(Status {
                            code: if error { 2 } else { 1 },
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

async fn export_as(server: &TestServer, tenant: &str, request: ExportTraceServiceRequest) {
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("x-scope-orgid", tenant.parse().unwrap());
    server.grpc_client().await.export(request).await.unwrap();
}

async fn dataset_with(tweak: impl FnOnce(&mut spanlake::config::Config)) -> TestServer {
    let server = TestServer::start_with(tweak).await;
    let mut client = server.grpc_client().await;
    client.export(request(0..SPANS / 2)).await.unwrap();
    server.server.ingester.flush(true).await.unwrap();
    client.export(request(SPANS / 2..SPANS)).await.unwrap();
    server
}

async fn dataset() -> TestServer {
    dataset_with(|_| {}).await
}

async fn get(server: &TestServer, path_and_query: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{}{path_and_query}", server.http_url()))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// A range query over the ten minutes of data with a one-minute step.
async fn range(server: &TestServer, query: &str) -> Json {
    let path = format!(
        "/api/metrics/query_range?q={}&start={BASE_S}&end={}&step=60s",
        urlencode(query),
        BASE_S + 600
    );
    let (status, body) = get(server, &path).await;
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Series as (labels as `k=v` text, [(timestamp ms, value)]).
fn series(body: &Json) -> BTreeMap<String, Vec<(i64, f64)>> {
    body["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels: Vec<String> = s["labels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let value = l["value"].as_object().unwrap().values().next().unwrap();
                    let value = value.as_str().map_or(value.to_string(), str::to_string);
                    format!("{}={value}", l["key"].as_str().unwrap())
                })
                .collect();
            let samples = s["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let ts: i64 = p["timestampMs"].as_str().unwrap().parse().unwrap();
                    (ts, p["value"].as_f64().unwrap_or(0.0))
                })
                .collect();
            (labels.join(","), samples)
        })
        .collect()
}

/// Interval end (ms) of each span: intervals are `(t, t + 60s]` from `BASE - 60s`.
fn interval_end_ms(start_ns: i64) -> i64 {
    let first = (BASE_S - 60) * NS;
    let k = (start_ns - first - 1) / (60 * NS);
    (first + (k + 1) * 60 * NS) / 1_000_000
}

/// Every interval end of the grid, the leading empty one included.
fn all_interval_ends() -> Vec<i64> {
    (0..11).map(|k| (BASE_S + k * 60) * 1000).collect()
}

/// The exact values per (group, interval end) of `value` over the spans `keep` selects.
fn truth(
    keep: impl Fn(i64) -> bool,
    group: impl Fn(i64) -> String,
) -> BTreeMap<String, BTreeMap<i64, Vec<f64>>> {
    let mut out: BTreeMap<String, BTreeMap<i64, Vec<f64>>> = BTreeMap::new();
    for i in (0..SPANS).filter(|i| keep(*i)) {
        let (start, _, duration, _) = span(i);
        out.entry(group(i))
            .or_default()
            .entry(interval_end_ms(start))
            .or_default()
            .push(duration as f64 / 1e9);
    }
    out
}

fn service_label(i: i64) -> String {
    format!("resource.service.name={}", span(i).1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_rates_are_exact() {
    let server = dataset().await;
    let body = range(
        &server,
        "{ } | count_over_time() by (resource.service.name)",
    )
    .await;
    let got = series(&body);
    let want = truth(|_| true, service_label);
    assert_eq!(got.len(), 3);
    for (labels, per_interval) in &want {
        let samples = &got[labels];
        // Every interval of an existing series is present, the empty leading one as 0.
        assert_eq!(
            samples.iter().map(|s| s.0).collect::<Vec<_>>(),
            all_interval_ends()
        );
        for (ts, value) in samples {
            let n = per_interval.get(ts).map_or(0, Vec::len);
            assert_eq!(*value, n as f64, "{labels} at {ts}");
        }
    }
    assert!(body["metrics"].is_object());
    assert_eq!(body["metrics"]["inspectedSpans"], "600");

    let body = range(&server, "{ } | rate()").await;
    let got = series(&body);
    assert_eq!(got.keys().collect::<Vec<_>>(), ["__name__=rate"]);
    let samples = &got["__name__=rate"];
    assert_eq!(samples[0], (BASE_S * 1000, 0.0));
    assert!(samples[1..].iter().all(|(_, v)| *v == 1.0), "{samples:?}");

    let body = range(&server, "{ status = error } | count_over_time()").await;
    let got = &series(&body)["__name__=count_over_time"];
    let errors = truth(|i| span(i).3, |_| String::new());
    for (ts, value) in got {
        assert_eq!(*value, errors[""].get(ts).map_or(0, Vec::len) as f64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sums_minimums_maximums_and_averages_are_exact() {
    let server = dataset().await;
    let want = truth(|_| true, service_label);
    for (function, reduce) in [
        (
            "sum_over_time",
            (|v: &[f64]| v.iter().sum()) as fn(&[f64]) -> f64,
        ),
        ("min_over_time", |v| {
            v.iter().copied().fold(f64::INFINITY, f64::min)
        }),
        ("max_over_time", |v| {
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        }),
        ("avg_over_time", |v| v.iter().sum::<f64>() / v.len() as f64),
    ] {
        let query = format!("{{ }} | {function}(duration) by (resource.service.name)");
        let got = series(&range(&server, &query).await);
        assert_eq!(got.len(), 3, "{function}");
        for (labels, per_interval) in &want {
            let samples = &got[labels];
            // Empty intervals are missing (NaN), not 0: the leading one is left out.
            assert_eq!(samples.len(), per_interval.len(), "{function} {labels}");
            for (ts, value) in samples {
                let exact = reduce(&per_interval[ts]);
                assert!(
                    (value - exact).abs() <= 1e-9 * exact.abs(),
                    "{function} {labels} {ts}: {value} vs {exact}"
                );
            }
        }
    }
}

/// The lower quantile: the value of rank `floor(q (n - 1))`.
fn exact_quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
}

async fn check_quantiles(server: &TestServer) -> BTreeMap<String, Vec<(i64, f64)>> {
    let body = range(
        server,
        "{ } | quantile_over_time(duration, .5, .9, .99) by (resource.service.name)",
    )
    .await;
    let got = series(&body);
    let want = truth(|_| true, service_label);
    assert_eq!(got.len(), 9, "{:?}", got.keys());
    for (labels, per_interval) in &want {
        for q in [0.5, 0.9, 0.99] {
            let samples = &got[&format!("{labels},p={q}")];
            for (ts, value) in samples {
                match per_interval.get(ts) {
                    // Empty intervals are 0.
                    None => assert_eq!(*value, 0.0),
                    Some(values) => {
                        let exact = exact_quantile(values, q);
                        assert!(
                            (value - exact).abs() <= 0.01 * exact,
                            "{labels} p{q} at {ts}: {value} vs exact {exact}"
                        );
                    }
                }
            }
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantiles_are_within_the_sketch_accuracy_for_any_partitioning() {
    let mut answers = Vec::new();
    for partitions in [1, 2, 8] {
        let server = dataset_with(|c| c.query_partitions = Some(partitions)).await;
        answers.push(check_quantiles(&server).await);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0], answers[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_use_power_of_two_buckets() {
    let server = dataset().await;
    let got = series(&range(&server, "{ } | histogram_over_time(duration)").await);
    let mut want: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for i in 0..SPANS {
        let (start, _, duration, _) = span(i);
        let bound = 2f64.powi((duration as f64).log2().ceil() as i32) / 1e9;
        *want
            .entry(format!("__bucket={bound}"))
            .or_default()
            .entry(interval_end_ms(start))
            .or_default() += 1.0;
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (labels, samples) in &got {
        for (ts, value) in samples {
            assert_eq!(
                *value,
                want[labels].get(ts).copied().unwrap_or(0.0),
                "{labels} {ts}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_stages_and_arithmetic() {
    let server = dataset().await;
    let sums = truth(|_| true, service_label);
    // topk(1): at each time the service with the largest sum keeps its value.
    let got = series(
        &range(
            &server,
            "{ } | sum_over_time(duration) by (resource.service.name) | topk(1)",
        )
        .await,
    );
    let mut winners: BTreeMap<i64, (f64, String)> = BTreeMap::new();
    for (labels, per_interval) in &sums {
        for (ts, values) in per_interval {
            let total: f64 = values.iter().sum();
            let entry = winners.entry(*ts).or_insert((f64::MIN, String::new()));
            if total > entry.0 {
                *entry = (total, labels.clone());
            }
        }
    }
    let mut kept = 0;
    for (labels, samples) in &got {
        for (ts, _) in samples {
            assert_eq!(&winners[ts].1, labels, "topk at {ts}");
            kept += 1;
        }
    }
    assert_eq!(kept, winners.len());

    // A filter keeps only the values that pass.
    let got = series(
        &range(
            &server,
            "{ } | count_over_time() by (resource.service.name) > 19",
        )
        .await,
    );
    assert!(got.values().flatten().all(|(_, v)| *v > 19.0));
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), 30);

    // Error ratio: both sides ungrouped, named after both functions.
    let got = series(
        &range(
            &server,
            "({ status = error } | count_over_time()) / ({ } | count_over_time())",
        )
        .await,
    );
    let samples = &got["__name__=(count_over_time / count_over_time)"];
    // The leading interval is 0/0: NaN, left out.
    assert_eq!(samples.len(), 10);
    assert!(
        samples.iter().all(|(_, v)| (*v - 0.1).abs() < 1e-12),
        "{samples:?}"
    );

    let got = series(&range(&server, "({ } | rate()) * 60").await);
    assert!(got.values().flatten().skip(1).all(|(_, v)| *v == 60.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_finds_what_sets_the_selection_apart() {
    let server = dataset().await;
    let got = series(&range(&server, "{ } | compare({ status = error })").await);
    let total = |labels: &str| -> f64 {
        got.get(labels)
            .unwrap_or_else(|| panic!("no series {labels}: {:?}", got.keys()))
            .iter()
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(total("__meta_type=selection,span.route=/checkout"), 60.0);
    assert!(!got.contains_key("__meta_type=baseline,span.route=/checkout"));
    assert!(!got.contains_key("__meta_type=selection,span.route=/cart"));
    for route in ["/", "/cart", "/search"] {
        let want = (0..SPANS).filter(|i| self::route(*i) == route).count() as f64;
        assert_eq!(
            total(&format!("__meta_type=baseline,span.route={route}")),
            want
        );
    }
    assert_eq!(total("__meta_type=selection_total,span.route=nil"), 60.0);
    assert_eq!(total("__meta_type=baseline_total,span.route=nil"), 540.0);
    assert_eq!(total("__meta_type=selection,status=error"), 60.0);
    assert_eq!(
        total("__meta_type=baseline,resource.service.name=api"),
        180.0
    );

    // topN = 1 keeps the most frequent value per attribute and side.
    let got = series(&range(&server, "{ } | compare({ status = error }, 1)").await);
    let routes: Vec<_> = got
        .keys()
        .filter(|k| k.starts_with("__meta_type=baseline,span.route="))
        .collect();
    assert_eq!(routes.len(), 1, "{routes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemplars_carry_trace_ids() {
    let server = dataset().await;
    let path = format!(
        "/api/metrics/query_range?q={}&start={BASE_S}&end={}&step=60s&exemplars=10",
        urlencode("{ } | max_over_time(duration) by (resource.service.name)"),
        BASE_S + 600
    );
    let (status, body) = get(&server, &path).await;
    assert_eq!(status, 200, "{body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    for series in body["series"].as_array().unwrap() {
        let exemplars = series["exemplars"].as_array().unwrap();
        assert!(!exemplars.is_empty() && exemplars.len() <= 10, "{series}");
        for e in exemplars {
            let trace_id = &e["labels"][0];
            assert_eq!(trace_id["key"], "trace:id");
            let id = u64::from_str_radix(trace_id["value"]["stringValue"].as_str().unwrap(), 16)
                .unwrap();
            let (start, service, duration, _) = span(id as i64 - 1);
            assert_eq!(e["timestampMs"], (start / 1_000_000).to_string());
            assert_eq!(e["value"].as_f64().unwrap(), duration as f64 / 1e9);
            assert_eq!(series["labels"][0]["value"]["stringValue"], service);
        }
    }
    // with(exemplars=false) turns them off.
    let path = format!(
        "/api/metrics/query_range?q={}&start={BASE_S}&end={}&step=60s",
        urlencode("{ } | rate() with(exemplars=false)"),
        BASE_S + 600
    );
    let (_, body) = get(&server, &path).await;
    assert!(!body.contains("exemplars"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_queries_answer_one_value_per_series() {
    let server = dataset().await;
    let path = format!(
        "/api/metrics/query?q={}&start={BASE_S}&end={}",
        urlencode("{ } | count_over_time() by (resource.service.name)"),
        BASE_S + 600
    );
    let (status, body) = get(&server, &path).await;
    assert_eq!(status, 200, "{body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 3);
    for s in series {
        assert_eq!(s["value"], 200.0, "{s}");
    }
    // rate() over the whole window: spans per second.
    let path = format!(
        "/api/metrics/query?q={}&start={BASE_S}&end={}",
        urlencode("{ } | rate()"),
        BASE_S + 600
    );
    let (_, body) = get(&server, &path).await;
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(body["series"][0]["value"], 1.0);
    // Nothing matched: no `series` key at all, `metrics` still there.
    let path = format!(
        "/api/metrics/query?q={}&start={BASE_S}&end={}",
        urlencode("{ name = \"nope\" } | rate()"),
        BASE_S + 600
    );
    let (_, body) = get(&server, &path).await;
    let body: Json = serde_json::from_str(&body).unwrap();
    assert!(
        body.get("series").is_none() && body["metrics"].is_object(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_with_tempo_messages() {
    let server = dataset().await;
    let window = format!("start={BASE_S}&end={}", BASE_S + 600);
    for (query, extra, message) in [
        ("{ } | rate(", "", "invalid TraceQL query"),
        ("{ }", "", "a metrics query is expected"),
        ("{ } | rate()", "&step=-5s", "step must be greater than 0"),
        (
            "{ } | rate()",
            "&step=1ms",
            "step of 1ms is too small, minimum step for given range is 60ms",
        ),
        ("{ } | rate()", "&step=abc", "invalid step"),
        (
            "{ } | quantile_over_time(duration, 2)",
            "",
            "invalid TraceQL query",
        ),
    ] {
        let path = format!(
            "/api/metrics/query_range?q={}&{window}{extra}",
            urlencode(query)
        );
        let (status, body) = get(&server, &path).await;
        assert_eq!(status, 400, "{query} {extra}: {body}");
        assert!(body.contains(message), "{query} {extra}: {body}");
    }
    let (status, body) = get(
        &server,
        &format!(
            "/api/metrics/query_range?q=%7B%7D%7Crate()&start={}&end={BASE_S}",
            BASE_S + 10
        ),
    )
    .await;
    assert_eq!(
        (status, body.trim()),
        (400, "end must be greater than start")
    );
    let (status, body) = get(
        &server,
        &format!(
            "/api/metrics/query_range?q=%7B%7D%7Crate()&start={}&end={BASE_S}",
            BASE_S - 90_000
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body.contains("exceeds the maximum allowed duration of 24h0m0s"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metrics_on_both_ports() {
    let server = dataset().await;
    for addr in [server.server.grpc_addr, server.server.http_addr] {
        let mut client = StreamingQuerierClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut stream = client
            .metrics_query_range(QueryRangeRequest {
                query: "{ } | count_over_time()".into(),
                start: (BASE_S * NS) as u64,
                end: ((BASE_S + 600) * NS) as u64,
                step: (60 * NS) as u64,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let message = stream.message().await.unwrap().unwrap();
        let total: f64 = message.series[0].samples.iter().map(|s| s.value).sum();
        assert_eq!(total, SPANS as f64);
        assert_eq!(message.series[0].samples.len(), 11);
        assert!(message.metrics.is_some());

        let mut stream = client
            .metrics_query_instant(QueryInstantRequest {
                query: "{ status = error } | count_over_time()".into(),
                start: (BASE_S * NS) as u64,
                end: ((BASE_S + 600) * NS) as u64,
            })
            .await
            .unwrap()
            .into_inner();
        let message = stream.message().await.unwrap().unwrap();
        assert_eq!(message.series[0].value, (SPANS / 10) as f64);

        let error = client
            .metrics_query_range(QueryRangeRequest {
                query: "{ } | nope()".into(),
                start: (BASE_S * NS) as u64,
                end: ((BASE_S + 600) * NS) as u64,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(
            error.message().contains("invalid TraceQL query"),
            "{error:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceql_command_runs_metrics_queries() {
    let server = dataset().await;
    let run = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_spanlake"));
        command
            .args(["traceql", "{ status = error } | count_over_time()"])
            .args([
                "--start",
                &BASE_S.to_string(),
                "--end",
                &(BASE_S + 600).to_string(),
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(server.dir.path());
        command
    };
    let stdout = crate::common::run_to_success(run(&["--step", "1m"])).await;
    let body: Json = serde_json::from_slice(&stdout).unwrap();
    let got = series(&body);
    let samples = &got["__name__=count_over_time"];
    assert_eq!(samples.len(), 11);
    assert_eq!(
        samples.iter().map(|(_, v)| v).sum::<f64>(),
        (SPANS / 10) as f64
    );

    let stdout = crate::common::run_to_success(run(&["--instant"])).await;
    let body: Json = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(body["series"][0]["value"], (SPANS / 10) as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_counts_only_its_own_spans() {
    let server = TestServer::start_with(|c| c.multitenancy = true).await;
    export_as(&server, "acme", request(0..100)).await;
    export_as(&server, "globex", request(100..130)).await;
    let count = |org: &'static str| {
        let url = format!(
            "{}/api/metrics/query?q={}&start={BASE_S}&end={}",
            server.http_url(),
            urlencode("{ } | count_over_time()"),
            BASE_S + 600
        );
        async move {
            let response = reqwest::Client::new()
                .get(url)
                .header("X-Scope-OrgID", org)
                .send()
                .await
                .unwrap();
            let body: Json = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            body["series"][0]["value"].as_f64().unwrap_or(0.0)
        }
    };
    assert_eq!(count("acme").await, 100.0);
    assert_eq!(count("globex").await, 30.0);
    assert_eq!(count("acme|globex").await, 130.0);
    assert_eq!(count("initech").await, 0.0);
    let (status, body) = get(
        &server,
        &format!(
            "/api/metrics/query?q=%7B%7D%7Crate()&start={BASE_S}&end={}",
            BASE_S + 60
        ),
    )
    .await;
    assert_eq!((status, body.trim()), (401, "no org id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_series_is_a_partial_answer() {
    let server = dataset().await;
    let path = format!(
        "/api/metrics/query_range?q={}&start={BASE_S}&end={}&step=60s&maxSeries=2",
        urlencode("{ } | rate() by (resource.service.name)"),
        BASE_S + 600
    );
    let (status, body) = get(&server, &path).await;
    assert_eq!(status, 200, "{body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(body["series"].as_array().unwrap().len(), 2);
    assert_eq!(body["status"], "PARTIAL");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Response exceeds maximum series limit of 2"),
        "{body}"
    );
}
