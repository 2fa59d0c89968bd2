//! TraceQL search semantics over a small hand-made trace set, half flushed to Parquet and half
//! live, asserting the exact traces and spans each query returns.
//!
//! The traces (`t:s` names trace `t`, span `s`; trace 4 starts latest, trace 1 earliest):
//!
//! ```text
//! 1 frontend (flushed)                      resource.region = "eu"
//!   1:1 "GET /"   server error "boom" 100ms span.code = 500 (int), span.flag = true
//!   ├─ 1:2 "SELECT" client unset 30ms       span.code = 500.0 (float), span.db = "pg"
//!   │  └─ 1:3 "fetch" internal ok 10ms      span.code = "500" (string)
//!   └─ 1:4 "render" internal unset 20ms     span.region = "us", no span.code
//! 2 payments (live)                         resource.region = "us", instrumentation.lib.flavor = "fast"
//!   2:1 "POST /pay" server ok 300ms         span.code = 200
//!   ├─ 2:2 "charge" client error 250ms      span.code = 503, span.url = "http://x/bar/baz",
//!   │                                       event "exception" 40ms after the span start
//!   │                                       {exception.type: "Timeout", retries: 3, handled: true}
//!   └─ 2:3 "audit" producer unset 5ms       link to 1:1 {rel: "follows"}
//! 3 health (live); 3:2's parent is missing, so its nested-set numbers are unknown
//!   3:1 "GET /health" server unset 50ms
//!   3:2 "orphan" client unset 10ms
//! 4 batch (flushed; its trace id starts with a zero byte)
//!   4:1 "cron" internal unset 2s
//! ```

use spanlake::query::QueryError;
use spanlake::query::search::{SearchRequest, SearchResponse, search};
use spanlake::schema::{AttrValue, EventRow, LinkRow, SpanRow};
use spanlake::server::Opened;
use spanlake::tenant::SINGLE_TENANT;
use spanlake::time::TimeRange;
use tempfile::TempDir;

const BASE: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;

fn trace_id(t: u8) -> [u8; 16] {
    let mut id = [0u8; 16];
    if t == 4 {
        id[1] = 0x44;
    } else {
        id[0] = 0x10 + t;
    }
    id
}

fn span_id(t: u8, s: u8) -> [u8; 8] {
    [0, 0, 0, 0, 0, 0, t, s]
}

/// Trace ids as search prints them: hex without leading zeros.
fn trace_hex(t: u8) -> String {
    hex::encode(trace_id(t)).trim_start_matches('0').to_string()
}

fn span_hex(t: u8, s: u8) -> String {
    hex::encode(span_id(t, s))
}

struct Span {
    s: u8,
    events: Vec<EventRow>,
    links: Vec<LinkRow>,
    parent: Option<u8>,
    name: &'static str,
    kind: i32,
    status: i32,
    start_ms: i64,
    duration_ms: i64,
    attrs: Vec<(&'static str, AttrValue)>,
}

fn span(s: u8, parent: Option<u8>, name: &'static str, kind: i32, status: i32) -> Span {
    Span {
        s,
        events: Vec::new(),
        links: Vec::new(),
        parent,
        name,
        kind,
        status,
        start_ms: s as i64,
        duration_ms: 1,
        attrs: Vec::new(),
    }
}

impl Span {
    fn took(mut self, ms: i64) -> Self {
        self.duration_ms = ms;
        self
    }

    /// An event `after_ms` after the span starts (made absolute by [`trace`]).
    fn event(mut self, after_ms: i64, name: &str, attrs: Vec<(&str, AttrValue)>) -> Self {
        self.events.push(EventRow {
            time_unix_nano: after_ms * MS,
            name: name.into(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..EventRow::default()
        });
        self
    }

    fn link(mut self, t: u8, s: u8, attrs: Vec<(&str, AttrValue)>) -> Self {
        self.links.push(LinkRow {
            trace_id: trace_id(t),
            span_id: span_id(t, s),
            trace_state: String::new(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..LinkRow::default()
        });
        self
    }

    fn attr(mut self, key: &'static str, value: AttrValue) -> Self {
        self.attrs.push((key, value));
        self
    }
}

// OTLP numbers.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const INTERNAL: i32 = 1;
const PRODUCER: i32 = 4;
const UNSET: i32 = 0;
const OK: i32 = 1;
const ERROR: i32 = 2;

fn trace(t: u8, service: &str, region: Option<&str>, spans: Vec<Span>) -> Vec<SpanRow> {
    let start = BASE + t as i64 * 10_000 * MS;
    let mut resource = vec![("service.name".to_string(), AttrValue::Str(service.into()))];
    if let Some(region) = region {
        resource.push(("region".to_string(), AttrValue::Str(region.into())));
    }
    spans
        .into_iter()
        .map(|s| SpanRow {
            trace_id: trace_id(t),
            span_id: span_id(t, s.s),
            parent_span_id: s.parent.map(|p| span_id(t, p)),
            trace_state: String::new(),
            name: s.name.into(),
            kind: s.kind,
            status_code: s.status,
            status_message: if s.status == ERROR && t == 1 {
                "boom".into()
            } else {
                String::new()
            },
            start_time_unix_nano: start + s.start_ms * MS,
            end_time_unix_nano: start + (s.start_ms + s.duration_ms) * MS,
            service_name: service.into(),
            scope_name: "tests".into(),
            scope_version: "1".into(),
            scope_attrs: if t == 2 {
                vec![("lib.flavor".to_string(), AttrValue::Str("fast".into()))]
            } else {
                Vec::new()
            },
            span_attrs: s
                .attrs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            resource_attrs: resource.clone(),
            events: s
                .events
                .into_iter()
                .map(|e| EventRow {
                    time_unix_nano: start + s.start_ms * MS + e.time_unix_nano,
                    ..e
                })
                .collect(),
            links: s.links,
            ..SpanRow::default()
        })
        .collect()
}

fn flushed_traces() -> Vec<SpanRow> {
    let mut rows = trace(
        1,
        "frontend",
        Some("eu"),
        vec![
            span(1, None, "GET /", SERVER, ERROR)
                .took(100)
                .attr("code", AttrValue::Int(500))
                .attr("flag", AttrValue::Bool(true)),
            span(2, Some(1), "SELECT", CLIENT, UNSET)
                .took(30)
                .attr("code", AttrValue::Float(500.0))
                .attr("db", AttrValue::Str("pg".into())),
            span(3, Some(2), "fetch", INTERNAL, OK)
                .took(10)
                .attr("code", AttrValue::Str("500".into())),
            span(4, Some(1), "render", INTERNAL, UNSET)
                .took(20)
                .attr("region", AttrValue::Str("us".into())),
        ],
    );
    rows.extend(trace(
        4,
        "batch",
        None,
        vec![span(1, None, "cron", INTERNAL, UNSET).took(2000)],
    ));
    rows
}

fn live_traces() -> Vec<SpanRow> {
    let mut rows = trace(
        2,
        "payments",
        Some("us"),
        vec![
            span(1, None, "POST /pay", SERVER, OK)
                .took(300)
                .attr("code", AttrValue::Int(200)),
            span(2, Some(1), "charge", CLIENT, ERROR)
                .took(250)
                .attr("code", AttrValue::Int(503))
                .attr("url", AttrValue::Str("http://x/bar/baz".into()))
                .event(
                    40,
                    "exception",
                    vec![
                        ("exception.type", AttrValue::Str("Timeout".into())),
                        ("retries", AttrValue::Int(3)),
                        ("handled", AttrValue::Bool(true)),
                    ],
                ),
            span(3, Some(1), "audit", PRODUCER, UNSET).took(5).link(
                1,
                1,
                vec![("rel", AttrValue::Str("follows".into()))],
            ),
        ],
    );
    rows.extend(trace(
        3,
        "health",
        None,
        vec![
            span(1, None, "GET /health", SERVER, UNSET).took(50),
            span(2, Some(99), "orphan", CLIENT, UNSET).took(10),
        ],
    ));
    rows
}

struct Fixture {
    opened: Opened,
    _dir: TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::common::open_holding_live(dir.path()).await;
    opened
        .ingester
        .push(SINGLE_TENANT, flushed_traces())
        .await
        .unwrap();
    opened.ingester.flush(true).await.unwrap();
    opened
        .ingester
        .push(SINGLE_TENANT, live_traces())
        .await
        .unwrap();
    Fixture { opened, _dir: dir }
}

impl Fixture {
    async fn run(
        &self,
        query: &str,
        limit: usize,
        spss: usize,
    ) -> Result<SearchResponse, QueryError> {
        let request = SearchRequest {
            query: query.to_string(),
            range: TimeRange::ALL,
            limit,
            spss,
        };
        search(
            &self.opened.engine,
            &[SINGLE_TENANT.to_string()],
            &request,
            |_, _| {},
        )
        .await
    }

    async fn search(&self, query: &str, limit: usize, spss: usize) -> SearchResponse {
        self.run(query, limit, spss)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// The message of the error a query fails with.
    async fn error(&self, query: &str) -> String {
        match self.run(query, 20, 3).await {
            Ok(r) => panic!("{query} succeeded with {r:?}"),
            Err(e) => e.message,
        }
    }
}

/// The matched spans as sorted `(trace, span)` pairs.
fn pairs(response: &SearchResponse) -> Vec<(u8, u8)> {
    let mut out = Vec::new();
    for trace in &response.traces {
        let t = (1..=4)
            .find(|t| trace_hex(*t) == trace.trace_id)
            .unwrap_or_else(|| panic!("unknown trace {}", trace.trace_id));
        for set in &trace.span_sets {
            for span in &set.spans {
                let s = (1..=9)
                    .find(|s| span_hex(t, *s) == span.span_id)
                    .unwrap_or_else(|| panic!("unknown span {}", span.span_id));
                out.push((t, s));
            }
        }
    }
    out.sort();
    out
}

/// Runs `query` for every trace and span and returns the sorted `(trace, span)` pairs.
async fn matches(query: &str) -> Vec<(u8, u8)> {
    pairs(&fixture().await.search(query, 100, 100).await)
}

#[tokio::test]
async fn traceql_name_intrinsic_matches_span_name() {
    assert_eq!(matches(r#"{ name = "SELECT" }"#).await, [(1, 2)]);
}

#[tokio::test]
async fn traceql_status_intrinsic_compares_with_status_keywords() {
    assert_eq!(matches("{ status = error }").await, [(1, 1), (2, 2)]);
}

#[tokio::test]
async fn traceql_status_message_intrinsic_matches_description() {
    assert_eq!(matches(r#"{ statusMessage = "boom" }"#).await, [(1, 1)]);
}

#[tokio::test]
async fn traceql_kind_intrinsic_compares_with_kind_keywords() {
    assert_eq!(matches("{ kind = client }").await, [(1, 2), (2, 2), (3, 2)]);
}

#[tokio::test]
async fn traceql_duration_intrinsic_compares_with_duration_literals() {
    assert_eq!(
        matches("{ duration > 200ms }").await,
        [(2, 1), (2, 2), (4, 1)]
    );
}

#[tokio::test]
async fn traceql_span_id_intrinsic_is_sixteen_hex_chars() {
    let query = format!(r#"{{ span:id = "{}" }}"#, span_hex(2, 3));
    assert_eq!(matches(&query).await, [(2, 3)]);
}

#[tokio::test]
async fn traceql_parent_id_intrinsic_matches_children() {
    let query = format!(r#"{{ span:parentID = "{}" }}"#, span_hex(1, 1));
    assert_eq!(matches(&query).await, [(1, 2), (1, 4)]);
}

#[tokio::test]
async fn traceql_trace_id_intrinsic_ignores_leading_zeros() {
    let full = hex::encode(trace_id(4));
    assert!(full.starts_with("00"));
    let f = fixture().await;
    for id in [full.clone(), trace_hex(4)] {
        let query = format!(r#"{{ trace:id = "{id}" }}"#);
        assert_eq!(pairs(&f.search(&query, 10, 10).await), [(4, 1)], "{id}");
    }
}

#[tokio::test]
async fn traceql_root_name_intrinsic_matches_every_span_of_the_trace() {
    assert_eq!(
        matches(r#"{ rootName = "POST /pay" }"#).await,
        [(2, 1), (2, 2), (2, 3)]
    );
}

#[tokio::test]
async fn traceql_root_service_name_intrinsic_reads_the_traces_table() {
    assert_eq!(
        matches(r#"{ rootServiceName = "frontend" }"#).await,
        [(1, 1), (1, 2), (1, 3), (1, 4)]
    );
}

#[tokio::test]
async fn traceql_trace_duration_intrinsic_is_trace_wide() {
    assert_eq!(matches("{ traceDuration > 1s }").await, [(4, 1)]);
}

#[tokio::test]
async fn traceql_nested_set_parent_of_roots_is_minus_one() {
    assert_eq!(
        matches("{ nestedSetParent = -1 }").await,
        [(1, 1), (2, 1), (3, 1), (4, 1)]
    );
}

#[tokio::test]
async fn traceql_instrumentation_name_matches_scope_name() {
    assert_eq!(
        matches(r#"{ instrumentation:name = "tests" && name = "cron" }"#).await,
        [(4, 1)]
    );
}

#[tokio::test]
async fn traceql_event_name_matches_when_some_event_has_it() {
    assert_eq!(matches(r#"{ event:name = "exception" }"#).await, [(2, 2)]);
    assert_eq!(matches(r#"{ event:name =~ "exc.*" }"#).await, [(2, 2)]);
    // Spans without events have no event name to differ from.
    assert_eq!(matches(r#"{ event:name != "exception" }"#).await, []);
}

#[tokio::test]
async fn traceql_event_attributes_keep_their_types() {
    assert_eq!(matches("{ event.retries > 2 }").await, [(2, 2)]);
    assert_eq!(matches(r#"{ event.retries = "3" }"#).await, []);
    assert_eq!(
        matches(r#"{ event.exception.type = "Timeout" }"#).await,
        [(2, 2)]
    );
}

#[tokio::test]
async fn traceql_link_intrinsics_and_attributes_match_linked_ids() {
    let trace = format!(r#"{{ link:traceID = "{}" }}"#, hex::encode(trace_id(1)));
    assert_eq!(matches(&trace).await, [(2, 3)]);
    let span = format!(r#"{{ link:spanID = "{}" }}"#, span_hex(1, 1));
    assert_eq!(matches(&span).await, [(2, 3)]);
    assert_eq!(matches(r#"{ link.rel = "follows" }"#).await, [(2, 3)]);
}

#[tokio::test]
async fn traceql_event_time_since_start_is_event_time_minus_span_start() {
    assert_eq!(matches("{ event:timeSinceStart = 40ms }").await, [(2, 2)]);
    assert_eq!(matches("{ event:timeSinceStart > 30ms }").await, [(2, 2)]);
    assert_eq!(matches("{ event:timeSinceStart < 30ms }").await, []);
}

#[tokio::test]
async fn traceql_event_values_take_part_in_arithmetic_and_span_comparisons() {
    assert_eq!(matches("{ event.retries * 2 = 6 }").await, [(2, 2)]);
    // A bare value is a test for true; a non-boolean one never is.
    assert_eq!(matches("{ event.handled }").await, [(2, 2)]);
    assert_eq!(matches("{ event.retries }").await, []);
    assert_eq!(
        matches("{ event.handled && kind = client }").await,
        [(2, 2)]
    );
    assert_eq!(
        matches("{ event.retries = span.code - 500 }").await,
        [(2, 2)]
    );
    assert_eq!(
        matches("{ event:timeSinceStart < duration }").await,
        [(2, 2)]
    );
    assert_eq!(
        matches("{ event:timeSinceStart * 10 > duration }").await,
        [(2, 2)]
    );
    assert_eq!(matches("{ event:timeSinceStart > duration }").await, []);
}

#[tokio::test]
async fn traceql_link_values_compare_with_span_values() {
    assert_eq!(matches("{ link:traceID != trace:id }").await, [(2, 3)]);
    assert_eq!(matches("{ link:spanID = span:id }").await, []);
}

#[tokio::test]
async fn traceql_child_count_counts_direct_children() {
    assert_eq!(matches("{ span:childCount = 2 }").await, [(1, 1), (2, 1)]);
    assert_eq!(matches("{ span:childCount = 1 }").await, [(1, 2)]);
    assert_eq!(
        matches("{ span:childCount = 0 }").await,
        [(1, 3), (1, 4), (2, 2), (2, 3), (3, 1), (3, 2), (4, 1)]
    );
    assert_eq!(
        matches("{ span:childCount > 0 && kind = client }").await,
        [(1, 2)]
    );
}

#[tokio::test]
async fn traceql_child_count_works_in_pipelines_and_by() {
    assert_eq!(
        matches("{ kind = server } | { span:childCount > 1 }").await,
        [(1, 1), (2, 1)]
    );
    // The leaves of traces 1, 2 and 3 form the only groups of two.
    assert_eq!(
        matches("{ } | by(span:childCount) | count() = 2").await,
        [(1, 3), (1, 4), (2, 2), (2, 3), (3, 1), (3, 2)]
    );
    assert_eq!(
        matches("{ } | max(span:childCount) > 1").await,
        [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3)]
    );
}

#[tokio::test]
async fn traceql_instrumentation_attributes_read_the_scope() {
    assert_eq!(
        matches(r#"{ instrumentation.lib.flavor = "fast" }"#).await,
        [(2, 1), (2, 2), (2, 3)]
    );
    // Missing on the other traces' scopes: false even for !=.
    assert!(
        matches(r#"{ instrumentation.lib.flavor != "fast" }"#)
            .await
            .is_empty()
    );
    assert_eq!(
        matches(r#"{ instrumentation:name = "tests" && span.code = 503 }"#).await,
        [(2, 2)]
    );
}

#[tokio::test]
async fn traceql_child_count_combines_with_trace_level_values() {
    assert_eq!(
        matches(r#"{ span:childCount = 1 && rootName = "GET /" }"#).await,
        [(1, 2)]
    );
}

#[tokio::test]
async fn traceql_or_of_equalities_on_one_attribute_matches_any_value() {
    assert_eq!(
        matches("{ span.code = 500 || span.code = 503 || span.code = 200 }").await,
        [(1, 1), (1, 2), (2, 1), (2, 2)]
    );
    assert_eq!(
        matches(r#"{ .region = "eu" || .region = "us" || .region = "ap" }"#).await,
        [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3)]
    );
}

#[tokio::test]
async fn traceql_constant_subexpressions_fold() {
    assert_eq!(
        matches("{ duration > 200ms + 40ms }").await,
        [(2, 1), (2, 2), (4, 1)]
    );
    assert_eq!(matches(r#"{ 1 = 1 && name = "SELECT" }"#).await, [(1, 2)]);
    assert_eq!(matches(r#"{ 1 = 2 || name = "SELECT" }"#).await, [(1, 2)]);
    assert_eq!(matches(r#"{ 1 = 2 && name = "SELECT" }"#).await, []);
}

#[tokio::test]
async fn traceql_span_scope_reads_only_span_attributes() {
    assert_eq!(matches(r#"{ span.region = "eu" }"#).await, []);
    assert_eq!(matches(r#"{ span.region = "us" }"#).await, [(1, 4)]);
}

#[tokio::test]
async fn traceql_resource_scope_reads_only_resource_attributes() {
    assert_eq!(
        matches(r#"{ resource.region = "eu" }"#).await,
        [(1, 1), (1, 2), (1, 3), (1, 4)]
    );
}

#[tokio::test]
async fn traceql_unscoped_attribute_prefers_the_span_value_over_the_resource_value() {
    // 1:4 has span.region = "us" and resource.region = "eu": the span value wins.
    assert_eq!(
        matches(r#"{ .region = "eu" }"#).await,
        [(1, 1), (1, 2), (1, 3)]
    );
    assert_eq!(
        matches(r#"{ .region = "us" }"#).await,
        [(1, 4), (2, 1), (2, 2), (2, 3)]
    );
}

#[tokio::test]
async fn traceql_int_literal_matches_int_and_float_attributes_but_not_strings() {
    assert_eq!(matches("{ span.code = 500 }").await, [(1, 1), (1, 2)]);
}

#[tokio::test]
async fn traceql_float_literal_matches_int_attributes() {
    assert_eq!(matches("{ span.code = 500.0 }").await, [(1, 1), (1, 2)]);
}

#[tokio::test]
async fn traceql_string_literal_matches_only_string_attributes() {
    assert_eq!(matches(r#"{ span.code = "500" }"#).await, [(1, 3)]);
}

#[tokio::test]
async fn traceql_numeric_ordering_skips_strings() {
    assert_eq!(
        matches("{ span.code >= 500 }").await,
        [(1, 1), (1, 2), (2, 2)]
    );
}

#[tokio::test]
async fn traceql_not_equal_is_false_for_missing_attributes() {
    // 1:3 has a string code (ill-typed: false); 1:4, 2:3, 3:* and 4:1 have none.
    assert_eq!(matches("{ span.code != 500 }").await, [(2, 1), (2, 2)]);
}

#[tokio::test]
async fn traceql_negated_equality_includes_missing_attributes() {
    assert_eq!(
        matches("{ !(span.code = 500) }").await,
        [
            (1, 3),
            (1, 4),
            (2, 1),
            (2, 2),
            (2, 3),
            (3, 1),
            (3, 2),
            (4, 1)
        ]
    );
}

#[tokio::test]
async fn traceql_equal_nil_matches_missing_attributes() {
    assert_eq!(
        matches("{ span.code = nil }").await,
        [(1, 4), (2, 3), (3, 1), (3, 2), (4, 1)]
    );
}

#[tokio::test]
async fn traceql_bare_bool_attribute_keeps_spans_where_it_is_true() {
    assert_eq!(matches("{ span.flag }").await, [(1, 1)]);
}

#[tokio::test]
async fn traceql_regex_is_anchored() {
    assert_eq!(matches(r#"{ span.url =~ "bar" }"#).await, []);
    assert_eq!(matches(r#"{ span.url =~ ".*bar.*" }"#).await, [(2, 2)]);
    assert_eq!(matches(r#"{ name =~ "GET" }"#).await, []);
    assert_eq!(matches(r#"{ name =~ "GET.*" }"#).await, [(1, 1), (3, 1)]);
}

#[tokio::test]
async fn traceql_literal_regex_shapes_match_as_the_regex_does() {
    // A literal, prefix, suffix or infix pattern is answered by string comparison; the same
    // pattern with a group is answered by the regex engine. Both must agree.
    for (field, pattern) in [
        ("name", "GET /"),
        ("name", "GET.*"),
        ("name", ".*T.*"),
        ("name", ".*"),
        ("span.url", ".*baz"),
        ("span.url", ".*bar.*"),
        ("span.url", "http.*"),
        ("resource.service.name", ".*"),
    ] {
        for op in ["=~", "!~"] {
            let plain = format!(r#"{{ {field} {op} "{pattern}" }}"#);
            let grouped = format!(r#"{{ {field} {op} "(?:{pattern})" }}"#);
            assert_eq!(matches(&plain).await, matches(&grouped).await, "{plain}");
        }
    }
    assert_ne!(matches(r#"{ name =~ "GET.*" }"#).await, []);
    assert_ne!(matches(r#"{ span.url =~ ".*baz" }"#).await, []);
}

#[tokio::test]
async fn traceql_negated_regex_is_false_for_missing_attributes() {
    assert_eq!(matches(r#"{ span.url !~ "nope" }"#).await, [(2, 2)]);
}

#[tokio::test]
async fn traceql_arithmetic_inside_filters() {
    assert_eq!(matches("{ span.code + 3 = 503 }").await, [(1, 1), (1, 2)]);
    assert_eq!(matches("{ duration * 2 = 200ms }").await, [(1, 1)]);
}

#[tokio::test]
async fn traceql_and_inside_braces_needs_one_span_to_satisfy_both() {
    assert_eq!(
        matches("{ span.code = 500 && kind = server }").await,
        [(1, 1)]
    );
    assert_eq!(
        matches(r#"{ name = "GET /" && name = "SELECT" }"#).await,
        []
    );
}

#[tokio::test]
async fn traceql_or_inside_braces_keeps_spans_satisfying_either() {
    assert_eq!(
        matches(r#"{ name = "audit" || name = "cron" }"#).await,
        [(2, 3), (4, 1)]
    );
}

#[tokio::test]
async fn traceql_or_with_a_missing_operand_is_false() {
    // `cron` lacks span.flag, so `span.flag || name = "cron"` is false for it.
    assert_eq!(matches(r#"{ span.flag || name = "cron" }"#).await, [(1, 1)]);
}

#[tokio::test]
async fn traceql_and_between_spansets_needs_both_in_one_trace_and_returns_the_union() {
    assert_eq!(
        matches(r#"{ name = "GET /" } && { name = "SELECT" }"#).await,
        [(1, 1), (1, 2)]
    );
    assert_eq!(
        matches(r#"{ name = "GET /" } && { name = "charge" }"#).await,
        []
    );
}

#[tokio::test]
async fn traceql_and_between_spansets_does_not_duplicate_spans_matched_by_both() {
    let f = fixture().await;
    let response = f
        .search("{ kind = server } && { status = error }", 10, 10)
        .await;
    assert_eq!(pairs(&response), [(1, 1), (2, 1), (2, 2)]);
    let trace1 = response
        .traces
        .iter()
        .find(|t| t.trace_id == trace_hex(1))
        .unwrap();
    assert_eq!(trace1.span_sets[0].matched, 1);
}

#[tokio::test]
async fn traceql_or_between_spansets_returns_spans_of_either_side() {
    assert_eq!(
        matches(r#"{ name = "render" } || { name = "charge" }"#).await,
        [(1, 4), (2, 2)]
    );
}

#[tokio::test]
async fn traceql_child_operator_returns_children_of_the_left_side() {
    assert_eq!(
        matches(r#"{ name = "GET /" } > { }"#).await,
        [(1, 2), (1, 4)]
    );
}

#[tokio::test]
async fn traceql_parent_operator_returns_parents_of_the_left_side() {
    assert_eq!(matches(r#"{ name = "fetch" } < { }"#).await, [(1, 2)]);
}

#[tokio::test]
async fn traceql_descendant_operator_returns_all_descendants() {
    assert_eq!(
        matches(r#"{ name = "GET /" } >> { }"#).await,
        [(1, 2), (1, 3), (1, 4)]
    );
}

#[tokio::test]
async fn traceql_ancestor_operator_returns_all_ancestors() {
    assert_eq!(
        matches(r#"{ name = "fetch" } << { }"#).await,
        [(1, 1), (1, 2)]
    );
}

#[tokio::test]
async fn traceql_sibling_operator_excludes_the_span_itself() {
    assert_eq!(matches(r#"{ name = "SELECT" } ~ { }"#).await, [(1, 4)]);
}

#[tokio::test]
async fn traceql_not_child_operator_returns_spans_whose_parent_is_not_on_the_left() {
    assert_eq!(
        matches(r#"{ name = "GET /" } !> { kind = internal }"#).await,
        [(1, 3), (4, 1)]
    );
}

#[tokio::test]
async fn traceql_not_parent_operator_with_empty_filter_finds_leaves() {
    assert_eq!(
        matches(r#"{ } !< { rootServiceName = "frontend" }"#).await,
        [(1, 3), (1, 4)]
    );
}

#[tokio::test]
async fn traceql_not_descendant_and_not_ancestor_operators() {
    assert_eq!(
        matches(r#"{ name = "SELECT" } !>> { rootName = "GET /" }"#).await,
        [(1, 1), (1, 2), (1, 4)]
    );
    assert_eq!(
        matches(r#"{ name = "fetch" } !<< { rootName = "GET /" }"#).await,
        [(1, 3), (1, 4)]
    );
}

#[tokio::test]
async fn traceql_not_sibling_operator() {
    assert_eq!(
        matches(r#"{ name = "SELECT" } !~ { rootName = "GET /" }"#).await,
        [(1, 1), (1, 2), (1, 3)]
    );
}

#[tokio::test]
async fn traceql_empty_left_side_makes_negated_operators_return_every_right_span() {
    assert_eq!(
        matches(r#"{ name = "nope" } !>> { name = "charge" }"#).await,
        [(2, 2)]
    );
    assert_eq!(
        matches(r#"{ name = "nope" } >> { name = "charge" }"#).await,
        []
    );
}

#[tokio::test]
async fn traceql_unknown_nested_set_numbers_satisfy_only_negated_relations() {
    assert_eq!(matches(r#"{ name = "GET /health" } > { }"#).await, []);
    assert_eq!(
        matches(r#"{ name = "GET /health" } !> { name = "orphan" }"#).await,
        [(3, 2)]
    );
}

#[tokio::test]
async fn traceql_union_child_operator_returns_both_sides_that_matched() {
    assert_eq!(
        matches(r#"{ name = "SELECT" } &> { }"#).await,
        [(1, 2), (1, 3)]
    );
    assert_eq!(
        matches(r#"{ name = "GET /" } &>> { name = "fetch" }"#).await,
        [(1, 1), (1, 3)]
    );
}

#[tokio::test]
async fn traceql_union_ancestor_and_sibling_operators() {
    assert_eq!(
        matches(r#"{ name = "fetch" } &<< { kind = server }"#).await,
        [(1, 1), (1, 3)]
    );
    assert_eq!(
        matches(r#"{ name = "charge" } &~ { }"#).await,
        [(2, 2), (2, 3)]
    );
}

#[tokio::test]
async fn traceql_count_pipeline_keeps_traces_with_enough_spans() {
    assert_eq!(
        matches("{ } | count() > 3").await,
        [(1, 1), (1, 2), (1, 3), (1, 4)]
    );
    assert_eq!(
        matches("{ kind = client } | count() = 1").await,
        [(1, 2), (2, 2), (3, 2)]
    );
}

#[tokio::test]
async fn traceql_avg_pipeline_compares_per_trace_average() {
    // Averages: trace 1 40ms, trace 2 185ms, trace 3 30ms, trace 4 2s.
    assert_eq!(
        matches("{ } | avg(duration) > 100ms").await,
        [(2, 1), (2, 2), (2, 3), (4, 1)]
    );
}

#[tokio::test]
async fn traceql_min_max_sum_pipelines_skip_missing_values() {
    assert_eq!(
        matches("{ } | max(span.code) = 503").await,
        [(2, 1), (2, 2), (2, 3)]
    );
    assert_eq!(
        matches("{ } | min(duration) < 6ms").await,
        [(2, 1), (2, 2), (2, 3)]
    );
    assert_eq!(
        matches("{ span.code != nil } | sum(span.code) = 703").await,
        [(2, 1), (2, 2)]
    );
}

/// A spanset as (matched, its spans' ids, its attributes).
type Set = (usize, Vec<u8>, Vec<(String, AttrValue)>);

/// The spansets of trace `t`.
fn spansets(response: &SearchResponse, t: u8) -> Vec<Set> {
    let trace = response
        .traces
        .iter()
        .find(|r| r.trace_id == trace_hex(t))
        .unwrap_or_else(|| panic!("trace {t} not in {response:?}"));
    trace
        .span_sets
        .iter()
        .map(|set| {
            let spans = set
                .spans
                .iter()
                .map(|span| {
                    (1..=9)
                        .find(|s| span_hex(t, *s) == span.span_id)
                        .unwrap_or_default()
                })
                .collect();
            (set.matched, spans, set.attributes.clone())
        })
        .collect()
}

#[tokio::test]
async fn traceql_by_splits_each_trace_into_one_spanset_per_value() {
    let f = fixture().await;
    let response = f
        .search(r#"{ resource.region = "eu" } | by(kind)"#, 10, 10)
        .await;
    let by = |v: &str| vec![("by(span:kind)".to_string(), AttrValue::Str(v.into()))];
    assert_eq!(
        spansets(&response, 1),
        [
            (1, vec![2], by("client")),
            (2, vec![3, 4], by("internal")),
            (1, vec![1], by("server")),
        ]
    );
}

#[tokio::test]
async fn traceql_nested_by_splits_each_group_again() {
    let f = fixture().await;
    let response = f
        .search(
            r#"{ resource.region = "eu" } | by(kind) | by(status)"#,
            10,
            10,
        )
        .await;
    let by = |kind: &str, status: &str| {
        vec![
            ("by(span:kind)".to_string(), AttrValue::Str(kind.into())),
            ("by(span:status)".to_string(), AttrValue::Str(status.into())),
        ]
    };
    assert_eq!(
        spansets(&response, 1),
        [
            (1, vec![2], by("client", "unset")),
            (1, vec![3], by("internal", "ok")),
            (1, vec![4], by("internal", "unset")),
            (1, vec![1], by("server", "error")),
        ]
    );
    // The internal group of trace 1 has two spans; split by status, neither group has.
    assert!(
        matches("{ } | by(kind) | by(status) | count() > 1")
            .await
            .is_empty()
    );
    // coalesce() undoes every level.
    let response = f
        .search(
            r#"{ rootName = "GET /" } | by(kind) | by(status) | coalesce()"#,
            10,
            10,
        )
        .await;
    assert_eq!(spansets(&response, 1), [(4, vec![1, 2, 3, 4], vec![])]);
}

#[tokio::test]
async fn traceql_aggregates_after_by_apply_per_group() {
    assert_eq!(
        matches("{ } | by(kind) | count() > 1").await,
        [(1, 3), (1, 4)]
    );
}

#[tokio::test]
async fn traceql_scalar_filters_attach_their_value_to_the_spanset() {
    let f = fixture().await;
    let response = f.search("{ kind = client } | count() = 1", 10, 10).await;
    assert_eq!(
        spansets(&response, 2),
        [(1, vec![2], vec![("count()".to_string(), AttrValue::Int(1))])]
    );
    let response = f.search("{ } | avg(duration) > 1s", 10, 10).await;
    assert_eq!(
        spansets(&response, 4),
        [(
            1,
            vec![1],
            vec![("avg(span:duration)".to_string(), AttrValue::Float(2e9))]
        )]
    );
}

#[tokio::test]
async fn traceql_spansets_after_by_carry_the_group_and_aggregate_values() {
    let f = fixture().await;
    let response = f.search("{ } | by(kind) | count() > 1", 10, 10).await;
    assert_eq!(
        spansets(&response, 1),
        [(
            2,
            vec![3, 4],
            vec![
                (
                    "by(span:kind)".to_string(),
                    AttrValue::Str("internal".into())
                ),
                ("count()".to_string(), AttrValue::Int(2)),
            ]
        )]
    );
}

#[tokio::test]
async fn traceql_by_puts_missing_values_in_a_group_of_their_own() {
    let f = fixture().await;
    let response = f
        .search(r#"{ rootName = "GET /" } | by(span.db)"#, 10, 10)
        .await;
    assert_eq!(
        spansets(&response, 1),
        [
            (3, vec![1, 3, 4], vec![]),
            (
                1,
                vec![2],
                vec![("by(span.db)".to_string(), AttrValue::Str("pg".into()))]
            ),
        ]
    );
}

#[tokio::test]
async fn traceql_coalesce_merges_groups_back_into_one_spanset() {
    let f = fixture().await;
    let response = f
        .search(r#"{ rootName = "GET /" } | by(kind) | coalesce()"#, 10, 10)
        .await;
    assert_eq!(spansets(&response, 1), [(4, vec![1, 2, 3, 4], vec![])]);
}

#[tokio::test]
async fn traceql_pipelined_filters_narrow_the_spanset() {
    assert_eq!(
        matches(r#"{ resource.region = "eu" } | { kind = internal }"#).await,
        [(1, 3), (1, 4)]
    );
}

#[tokio::test]
async fn traceql_select_adds_attributes_to_returned_spans() {
    let f = fixture().await;
    let response = f
        .search(r#"{ name = "charge" } | select(span.url)"#, 10, 10)
        .await;
    let span = &response.traces[0].span_sets[0].spans[0];
    assert_eq!(
        span.attributes,
        [("url".to_string(), AttrValue::Str("http://x/bar/baz".into()))]
    );
}

#[tokio::test]
async fn traceql_returned_spans_carry_referenced_attributes_and_status_as_string() {
    let f = fixture().await;
    let response = f
        .search("{ status = error && span.code = 500 }", 10, 10)
        .await;
    let span = &response.traces[0].span_sets[0].spans[0];
    assert_eq!(
        span.attributes,
        [
            ("status".to_string(), AttrValue::Str("error".into())),
            ("code".to_string(), AttrValue::Int(500)),
        ]
    );
}

#[tokio::test]
async fn traceql_spss_caps_spans_but_not_the_matched_count() {
    let f = fixture().await;
    let response = f.search(r#"{ resource.region = "eu" }"#, 10, 2).await;
    let set = &response.traces[0].span_sets[0];
    assert_eq!(set.matched, 4);
    assert_eq!(pairs(&response), [(1, 1), (1, 2)]);
}

#[tokio::test]
async fn traceql_search_returns_traces_newest_first() {
    let f = fixture().await;
    let response = f.search("{ }", 10, 1).await;
    let order: Vec<String> = response.traces.iter().map(|t| t.trace_id.clone()).collect();
    assert_eq!(
        order,
        [trace_hex(4), trace_hex(3), trace_hex(2), trace_hex(1)]
    );
}

#[tokio::test]
async fn traceql_limit_caps_the_number_of_traces() {
    let f = fixture().await;
    let response = f.search("{ }", 2, 1).await;
    let order: Vec<String> = response.traces.iter().map(|t| t.trace_id.clone()).collect();
    assert_eq!(order, [trace_hex(4), trace_hex(3)]);
}

#[tokio::test]
async fn traceql_search_reports_trace_metadata() {
    let f = fixture().await;
    let response = f.search(r#"{ name = "charge" }"#, 10, 10).await;
    let trace = &response.traces[0];
    assert_eq!(trace.root_service_name.as_deref(), Some("payments"));
    assert_eq!(trace.root_trace_name.as_deref(), Some("POST /pay"));
    assert_eq!(trace.start_time_unix_nano, BASE + 2 * 10_000 * MS + MS);
    assert_eq!(trace.duration_ms, 300);
    let span = &trace.span_sets[0].spans[0];
    assert_eq!(span.name, "charge");
    assert_eq!(span.duration_nanos, 250 * MS);
}

/// A span of trace `t` (any number, the lower the newer) of service `service`, a root unless
/// `parent` is given.
fn numbered_span(t: u32, s: u8, parent: Option<u8>, service: &str, name: &str) -> SpanRow {
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&(0x2000_0000 + t).to_be_bytes());
    // The lower the number, the newer the trace.
    let start = BASE + (10_000 - t as i64) * MS + s as i64;
    SpanRow {
        trace_id: id,
        span_id: [0, 0, 0, 0, 0, 0, 0, s],
        parent_span_id: parent.map(|p| [0, 0, 0, 0, 0, 0, 0, p]),
        name: name.into(),
        start_time_unix_nano: start,
        end_time_unix_nano: start + MS,
        service_name: service.into(),
        ..SpanRow::default()
    }
}

#[tokio::test]
async fn traceql_search_reads_root_names_wherever_the_root_is() {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::common::open_holding_live(dir.path()).await;
    // Trace 0: its children flushed into a block, its root live. Trace 1: no root at all.
    // Traces 2..: a root each, live; more than a search lists by id.
    let children = vec![
        numbered_span(0, 2, Some(1), "db", "SELECT"),
        numbered_span(1, 2, Some(1), "db", "SELECT"),
    ];
    opened.ingester.push(SINGLE_TENANT, children).await.unwrap();
    opened.ingester.flush(true).await.unwrap();
    let mut live = vec![numbered_span(0, 1, None, "frontend", "GET /")];
    live.extend((2..1202).map(|t| numbered_span(t, 1, None, &format!("svc-{}", t % 7), "op")));
    opened.ingester.push(SINGLE_TENANT, live).await.unwrap();
    let f = Fixture { opened, _dir: dir };

    for limit in [10, 1202] {
        let response = f.search("{ }", limit, 1).await;
        assert_eq!(response.traces.len(), limit);
        for trace in &response.traces {
            let t = (u128::from_str_radix(&trace.trace_id, 16).unwrap() >> 96) as u32 - 0x2000_0000;
            let roots = (
                trace.root_service_name.as_deref(),
                trace.root_trace_name.as_deref(),
            );
            let service = format!("svc-{}", t % 7);
            let want = match t {
                0 => (Some("frontend"), Some("GET /")),
                1 => (None, None),
                _ => (Some(service.as_str()), Some("op")),
            };
            assert_eq!(roots, want, "trace {t}, limit {limit}");
        }
    }
}

#[tokio::test]
async fn traceql_search_time_window_keeps_overlapping_traces() {
    let f = fixture().await;
    let start = BASE + 2 * 10_000 * MS;
    let end = BASE + 3 * 10_000 * MS;
    let request = SearchRequest {
        query: "{ }".to_string(),
        range: TimeRange {
            start_ns: start,
            end_ns: end,
        },
        limit: 10,
        spss: 1,
    };
    let response = search(
        &f.opened.engine,
        &[SINGLE_TENANT.to_string()],
        &request,
        |_, _| {},
    )
    .await
    .unwrap();
    let order: Vec<String> = response.traces.iter().map(|t| t.trace_id.clone()).collect();
    assert_eq!(order, [trace_hex(2)]);
}

#[tokio::test]
async fn traceql_search_errors_keep_parse_invalid_and_unsupported_apart() {
    let f = fixture().await;
    let parse = f.error("{ .a < ").await;
    assert!(
        parse.starts_with("invalid TraceQL query: parse error at line 1"),
        "{parse}"
    );
    let invalid = f.error("{ 1 + 1 }").await;
    assert!(
        invalid.starts_with("invalid TraceQL query: invalid query: "),
        "{invalid}"
    );
    let unsupported = "invalid TraceQL query: unsupported: ";
    let after_by = f.error("{ } | by(kind) | { } > { }").await;
    assert!(
        after_by.starts_with(unsupported) && after_by.contains("coalesce()"),
        "{after_by}"
    );
    // As in Tempo, parent attributes validate as unsupported.
    let parent = f.error("{ parent.span.code = 500 }").await;
    assert!(
        parent.starts_with(unsupported) && parent.contains("parent"),
        "{parent}"
    );
    let event = f.error("{ } | by(event.retries)").await;
    assert!(
        event.starts_with(unsupported) && event.contains("outside a comparison"),
        "{event}"
    );
}

#[tokio::test]
async fn traceql_conjunctions_match_in_either_order() {
    // A filter's tests run cheapest first; the order written must not change the answer,
    // with missing attributes and boolean attributes as operands too.
    let fixture = fixture().await;
    for (a, b) in [
        ("span.code = 500", "kind = server"),
        (r#"name =~ "GET.*""#, "span.flag"),
        (r#"resource.service.name = "frontend""#, "span.code >= 400"),
        ("span.missing = 1", r#"name != "cron""#),
        ("span.flag = true", r#"span.db = "pg""#),
        (r#"span.code != "500""#, "status = error"),
    ] {
        let forward = format!("{{ {a} && {b} }}");
        let backward = format!("{{ {b} && {a} }}");
        assert_eq!(
            pairs(&fixture.search(&forward, 100, 100).await),
            pairs(&fixture.search(&backward, 100, 100).await),
            "{forward}"
        );
    }
    assert_eq!(
        pairs(
            &fixture
                .search(r#"{ name =~ "GET.*" && span.flag }"#, 100, 100)
                .await
        ),
        [(1, 1)]
    );
}

#[tokio::test]
async fn traceql_filters_test_numbers_before_strings() {
    let fixture = fixture().await;
    let request = SearchRequest {
        query: r#"{ name = "SELECT" && span.code > 1 }"#.to_string(),
        range: TimeRange::ALL,
        limit: 20,
        spss: 3,
    };
    let plan =
        spanlake::query::search::explain(&fixture.opened.engine, SINGLE_TENANT, &request, false)
            .await
            .unwrap();
    let filter = plan
        .lines()
        .find(|line| line.contains("FilterExec") && line.contains("SELECT"))
        .unwrap_or_else(|| panic!("no filter on the name in {plan}"));
    let name = filter.find("SELECT").unwrap();
    let code = filter
        .find("> 1")
        .unwrap_or_else(|| panic!("no test on the code in {filter}"));
    assert!(code < name, "{filter}");
}
