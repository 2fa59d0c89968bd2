//! Tag names and tag values over a small hand-made trace set, half flushed to Parquet and half
//! live, with a second tenant whose tags must never show.
//!
//! ```text
//! trace 1 frontend (flushed, starts at BASE)   resource: service.name, region = "eu",
//!                                              cluster.size = 3
//!   1:1 "GET /"  server error "boom"           span: http.method = "GET", code = 500
//!                                              event "exception" {exception.type: "Timeout",
//!                                                                 retries: 3}
//!   1:2 "SELECT" client ok                     span: code = 500.5, db = "pg", cached = true
//! trace 2 payments (live, starts at BASE+10s)  resource: service.name, region = "us",
//!                                              tags = ["a"] (JSON)
//!   2:1 "POST /pay" server unset               span: code = "500"; link to 1:1 {rel: "follows"}
//!   2:2 "charge" internal ok                   span: sampled = false, region = "ap"
//! tenant-b: trace 3 hidden                     resource: secret.res = "x"; span: secret = "y"
//! ```

use spanlake::query::tags::{
    ScopeTags, TagScope, TagValuesRequest, TagsRequest, TypedValue, bare_tag_values, tag_names,
    tag_values,
};
use spanlake::query::{ErrorKind, QueryError};
use spanlake::schema::{AttrValue, EventRow, LinkRow, SpanRow};
use spanlake::server::Opened;
use spanlake::tenant::SINGLE_TENANT;
use spanlake::time::TimeRange;
use tempfile::TempDir;

const OTHER_TENANT: &str = "tenant-b";
const BASE: i64 = 1_700_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

// OTLP numbers.
const INTERNAL: i32 = 1;
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const UNSET: i32 = 0;
const OK: i32 = 1;
const ERROR: i32 = 2;

fn trace_id(t: u8) -> [u8; 16] {
    [0x10 + t; 16]
}

fn span_id(t: u8, s: u8) -> [u8; 8] {
    [0, 0, 0, 0, 0, 0, t, s]
}

fn attrs(list: Vec<(&str, AttrValue)>) -> Vec<(String, AttrValue)> {
    list.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn str(v: &str) -> AttrValue {
    AttrValue::Str(v.to_string())
}

/// A span of trace `t` starting `offset_s` seconds after the trace, lasting 100 ms.
#[allow(clippy::too_many_arguments)]
fn span(
    t: u8,
    s: u8,
    name: &str,
    kind: i32,
    status: i32,
    offset_s: i64,
    resource: &[(String, AttrValue)],
    span_attrs: Vec<(&str, AttrValue)>,
) -> SpanRow {
    let start = BASE + i64::from(t - 1) * 10 * SECOND + offset_s * SECOND;
    let service = resource
        .iter()
        .find_map(|(k, v)| match v {
            AttrValue::Str(s) if k == "service.name" => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default();
    SpanRow {
        trace_id: trace_id(t),
        span_id: span_id(t, s),
        parent_span_id: (s > 1).then(|| span_id(t, 1)),
        trace_state: String::new(),
        name: name.to_string(),
        kind,
        status_code: status,
        status_message: if status == ERROR {
            "boom".into()
        } else {
            String::new()
        },
        start_time_unix_nano: start,
        end_time_unix_nano: start + SECOND / 10,
        service_name: service,
        scope_name: "tests".into(),
        scope_version: "1".into(),
        span_attrs: attrs(span_attrs),
        resource_attrs: resource.to_vec(),
        events: Vec::new(),
        links: Vec::new(),
        ..SpanRow::default()
    }
}

fn flushed_spans() -> Vec<SpanRow> {
    let resource = attrs(vec![
        ("service.name", str("frontend")),
        ("region", str("eu")),
        ("cluster.size", AttrValue::Int(3)),
    ]);
    let mut root = span(
        1,
        1,
        "GET /",
        SERVER,
        ERROR,
        0,
        &resource,
        vec![("http.method", str("GET")), ("code", AttrValue::Int(500))],
    );
    root.events.push(EventRow {
        time_unix_nano: BASE,
        name: "exception".into(),
        attrs: attrs(vec![
            ("exception.type", str("Timeout")),
            ("retries", AttrValue::Int(3)),
        ]),
        ..EventRow::default()
    });
    let child = span(
        1,
        2,
        "SELECT",
        CLIENT,
        OK,
        1,
        &resource,
        vec![
            ("code", AttrValue::Float(500.5)),
            ("db", str("pg")),
            ("cached", AttrValue::Bool(true)),
        ],
    );
    vec![root, child]
}

fn live_spans() -> Vec<SpanRow> {
    let resource = attrs(vec![
        ("service.name", str("payments")),
        ("region", str("us")),
        ("tags", AttrValue::Json(r#"["a"]"#.into())),
    ]);
    let mut root = span(
        2,
        1,
        "POST /pay",
        SERVER,
        UNSET,
        0,
        &resource,
        vec![("code", str("500"))],
    );
    root.links.push(LinkRow {
        trace_id: trace_id(1),
        span_id: span_id(1, 1),
        trace_state: String::new(),
        attrs: attrs(vec![("rel", str("follows"))]),
        ..LinkRow::default()
    });
    let child = span(
        2,
        2,
        "charge",
        INTERNAL,
        OK,
        1,
        &resource,
        vec![("sampled", AttrValue::Bool(false)), ("region", str("ap"))],
    );
    vec![root, child]
}

fn other_tenant_spans() -> Vec<SpanRow> {
    let resource = attrs(vec![
        ("service.name", str("hidden")),
        ("secret.res", str("x")),
    ]);
    vec![span(
        3,
        1,
        "hidden",
        SERVER,
        UNSET,
        0,
        &resource,
        vec![("secret", str("y"))],
    )]
}

struct Fixture {
    opened: Opened,
    _dir: TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let opened = crate::common::open_holding_live(dir.path()).await;
    let ingester = &opened.ingester;
    ingester.push(SINGLE_TENANT, flushed_spans()).await.unwrap();
    ingester
        .push(OTHER_TENANT, other_tenant_spans())
        .await
        .unwrap();
    ingester.flush(true).await.unwrap();
    ingester.push(SINGLE_TENANT, live_spans()).await.unwrap();
    Fixture { opened, _dir: dir }
}

fn tenants() -> Vec<String> {
    vec![SINGLE_TENANT.to_string()]
}

fn names_request(scope: TagScope) -> TagsRequest {
    TagsRequest {
        scope,
        query: None,
        range: TimeRange::ALL,
        limit: 0,
    }
}

fn values_request(tag: &str) -> TagValuesRequest {
    TagValuesRequest {
        tag: tag.to_string(),
        query: None,
        range: TimeRange::ALL,
        limit: 0,
    }
}

fn typed(kind: &'static str, value: &str) -> TypedValue {
    TypedValue {
        kind,
        value: value.to_string(),
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The tags of scope `name` in `scopes`, which must hold it exactly once.
fn tags_of<'a>(scopes: &'a [ScopeTags], name: &str) -> &'a [String] {
    let found: Vec<&ScopeTags> = scopes.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "scope {name} in {scopes:?}");
    &found[0].tags
}

const INTRINSICS: [&str; 25] = [
    "duration",
    "event:name",
    "event:timeSinceStart",
    "instrumentation:name",
    "instrumentation:version",
    "kind",
    "link:spanID",
    "link:traceID",
    "name",
    "rootName",
    "rootServiceName",
    "span:duration",
    "span:id",
    "span:kind",
    "span:name",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "status",
    "statusMessage",
    "trace:duration",
    "trace:id",
    "trace:rootName",
    "trace:rootService",
    "traceDuration",
];

impl Fixture {
    async fn names(&self, req: &TagsRequest) -> Vec<ScopeTags> {
        tag_names(&self.opened.engine, &tenants(), req)
            .await
            .unwrap_or_else(|e| panic!("{req:?}: {e}"))
    }

    async fn values(&self, req: &TagValuesRequest) -> Vec<TypedValue> {
        tag_values(&self.opened.engine, &tenants(), req)
            .await
            .unwrap_or_else(|e| panic!("{req:?}: {e}"))
    }

    async fn values_of(&self, tag: &str) -> Vec<TypedValue> {
        self.values(&values_request(tag)).await
    }

    async fn v1(&self, tag: &str) -> Vec<String> {
        bare_tag_values(&self.opened.engine, &tenants(), &values_request(tag))
            .await
            .unwrap_or_else(|e| panic!("{tag}: {e}"))
    }
}

#[tokio::test]
async fn all_scopes_list_each_scope_once_with_sorted_distinct_tags() {
    let f = fixture().await;
    let scopes = f.names(&names_request(TagScope::All)).await;
    let names: Vec<&str> = scopes.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "intrinsic",
            "span",
            "resource",
            "event",
            "link",
            "instrumentation"
        ]
    );
    assert_eq!(
        tags_of(&scopes, "span"),
        strings(&["cached", "code", "db", "http.method", "region", "sampled"])
    );
    assert_eq!(
        tags_of(&scopes, "resource"),
        strings(&["cluster.size", "region", "service.name", "tags"])
    );
    assert_eq!(
        tags_of(&scopes, "event"),
        strings(&["exception.type", "retries"])
    );
    assert_eq!(tags_of(&scopes, "link"), strings(&["rel"]));
    assert!(tags_of(&scopes, "instrumentation").is_empty());
    assert_eq!(tags_of(&scopes, "intrinsic"), strings(&INTRINSICS));
}

#[tokio::test]
async fn a_single_scope_lists_only_that_scope() {
    let f = fixture().await;
    let resource = f.names(&names_request(TagScope::Resource)).await;
    assert_eq!(
        resource,
        [ScopeTags {
            name: "resource",
            tags: strings(&["cluster.size", "region", "service.name", "tags"]),
        }]
    );
    let intrinsic = f.names(&names_request(TagScope::Intrinsic)).await;
    assert_eq!(intrinsic.len(), 1);
    assert_eq!(tags_of(&intrinsic, "intrinsic"), strings(&INTRINSICS));
    assert!(f.names(&names_request(TagScope::Trace)).await.is_empty());
}

#[test]
fn scope_names_parse_and_unknown_scopes_are_invalid() {
    let cases = [
        ("", TagScope::All),
        ("none", TagScope::All),
        ("span", TagScope::Span),
        ("resource", TagScope::Resource),
        ("event", TagScope::Event),
        ("link", TagScope::Link),
        ("instrumentation", TagScope::Instrumentation),
        ("trace", TagScope::Trace),
        ("intrinsic", TagScope::Intrinsic),
    ];
    for (text, scope) in cases {
        assert_eq!(text.parse::<TagScope>().unwrap(), scope, "{text:?}");
    }
    match "spans".parse::<TagScope>() {
        Err(QueryError {
            kind: ErrorKind::BadRequest,
            message,
        }) => assert_eq!(message, "invalid scope: spans"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_query_restricts_tag_names_to_matching_spans() {
    let f = fixture().await;
    let req = TagsRequest {
        query: Some(r#"{ name = "SELECT" }"#.into()),
        ..names_request(TagScope::All)
    };
    let scopes = f.names(&req).await;
    assert_eq!(tags_of(&scopes, "span"), strings(&["cached", "code", "db"]));
    assert_eq!(
        tags_of(&scopes, "resource"),
        strings(&["cluster.size", "region", "service.name"])
    );
    assert!(tags_of(&scopes, "event").is_empty());
    assert!(tags_of(&scopes, "link").is_empty());
    assert_eq!(tags_of(&scopes, "intrinsic"), strings(&INTRINSICS));
}

#[tokio::test]
async fn empty_and_match_all_queries_filter_nothing() {
    let f = fixture().await;
    let all = f.names(&names_request(TagScope::Span)).await;
    for query in ["", "  ", "{}", "{ true }"] {
        let req = TagsRequest {
            query: Some(query.into()),
            ..names_request(TagScope::Span)
        };
        assert_eq!(f.names(&req).await, all, "{query:?}");
    }
}

#[tokio::test]
async fn an_invalid_query_for_tag_names_is_invalid_with_the_parser_message() {
    let f = fixture().await;
    let req = TagsRequest {
        query: Some("{ .a < 3".into()),
        ..names_request(TagScope::All)
    };
    match tag_names(&f.opened.engine, &tenants(), &req).await {
        Err(QueryError {
            kind: ErrorKind::BadRequest,
            message,
        }) => {
            assert!(message.contains("parse error at line 1"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_time_window_keeps_spans_starting_inside_it() {
    let f = fixture().await;
    let window = |start_ns: Option<i64>, end_ns: Option<i64>| TagsRequest {
        range: TimeRange {
            start_ns: start_ns.unwrap_or(i64::MIN),
            end_ns: end_ns.unwrap_or(i64::MAX),
        },
        ..names_request(TagScope::Span)
    };
    // Trace 2 starts at BASE + 10 s, its second span one second later.
    let late = f.names(&window(Some(BASE + 5 * SECOND), None)).await;
    assert_eq!(
        tags_of(&late, "span"),
        strings(&["code", "region", "sampled"])
    );
    let early = f.names(&window(None, Some(BASE + 5 * SECOND))).await;
    assert_eq!(
        tags_of(&early, "span"),
        strings(&["cached", "code", "db", "http.method"])
    );
    // Both bounds are inclusive: exactly the start of span 2:2.
    let one = BASE + 11 * SECOND;
    let exact = f.names(&window(Some(one), Some(one))).await;
    assert_eq!(tags_of(&exact, "span"), strings(&["region", "sampled"]));
    let none = f.names(&window(Some(BASE - SECOND), Some(BASE - 1))).await;
    assert!(tags_of(&none, "span").is_empty());
}

#[tokio::test]
async fn limit_caps_tag_names_per_scope() {
    let f = fixture().await;
    let req = TagsRequest {
        limit: 2,
        ..names_request(TagScope::All)
    };
    let scopes = f.names(&req).await;
    assert_eq!(tags_of(&scopes, "span"), strings(&["cached", "code"]));
    assert_eq!(
        tags_of(&scopes, "resource"),
        strings(&["cluster.size", "region"])
    );
    assert_eq!(tags_of(&scopes, "link"), strings(&["rel"]));
    assert_eq!(tags_of(&scopes, "intrinsic"), strings(&INTRINSICS[..2]));
}

#[tokio::test]
async fn another_tenants_tags_and_values_never_appear() {
    let f = fixture().await;
    let mine = f.names(&names_request(TagScope::All)).await;
    for scope in &mine {
        assert!(
            !scope.tags.iter().any(|t| t.starts_with("secret")),
            "{scope:?}"
        );
    }
    assert!(f.values_of("span.secret").await.is_empty());
    assert!(f.v1("secret").await.is_empty());
    assert!(
        !f.values_of("name")
            .await
            .contains(&typed("string", "hidden"))
    );

    let theirs = tag_names(
        &f.opened.engine,
        &[OTHER_TENANT.to_string()],
        &names_request(TagScope::All),
    )
    .await
    .unwrap();
    assert_eq!(tags_of(&theirs, "span"), strings(&["secret"]));
    assert_eq!(
        tags_of(&theirs, "resource"),
        strings(&["secret.res", "service.name"])
    );
    let values = tag_values(
        &f.opened.engine,
        &[OTHER_TENANT.to_string()],
        &values_request("resource.service.name"),
    )
    .await
    .unwrap();
    assert_eq!(values, [typed("string", "hidden")]);
}

#[tokio::test]
async fn attribute_values_keep_their_types() {
    let f = fixture().await;
    assert_eq!(
        f.values_of("span.code").await,
        [
            typed("int", "500"),
            typed("string", "500"),
            typed("float", "500.5"),
        ]
    );
    assert_eq!(
        f.values_of("resource.cluster.size").await,
        [typed("int", "3")]
    );
    assert_eq!(f.values_of("span.cached").await, [typed("bool", "true")]);
    assert_eq!(f.values_of("span.sampled").await, [typed("bool", "false")]);
    assert_eq!(
        f.values_of("resource.service.name").await,
        [typed("string", "frontend"), typed("string", "payments")]
    );
    assert!(f.values_of("span.missing").await.is_empty());
}

#[tokio::test]
async fn unscoped_attributes_take_values_from_span_and_resource() {
    let f = fixture().await;
    assert_eq!(
        f.values_of(".region").await,
        [
            typed("string", "ap"),
            typed("string", "eu"),
            typed("string", "us"),
        ]
    );
    assert_eq!(f.values_of("span.region").await, [typed("string", "ap")]);
}

#[tokio::test]
async fn event_and_link_attribute_values_come_from_their_elements() {
    let f = fixture().await;
    assert_eq!(
        f.values_of("event.exception.type").await,
        [typed("string", "Timeout")]
    );
    assert_eq!(f.values_of("event.retries").await, [typed("int", "3")]);
    assert_eq!(f.values_of("link.rel").await, [typed("string", "follows")]);
    assert!(f.values_of("instrumentation.anything").await.is_empty());
}

#[tokio::test]
async fn json_encoded_values_are_not_offered() {
    let f = fixture().await;
    assert!(f.values_of("resource.tags").await.is_empty());
}

#[tokio::test]
async fn status_and_kind_values_are_keywords() {
    let f = fixture().await;
    let status = [
        typed("keyword", "ok"),
        typed("keyword", "error"),
        typed("keyword", "unset"),
    ];
    assert_eq!(f.values_of("status").await, status);
    assert_eq!(f.values_of("span:status").await, status);
    let kinds = [
        "client",
        "server",
        "producer",
        "consumer",
        "internal",
        "unspecified",
    ]
    .map(|k| typed("keyword", k));
    assert_eq!(f.values_of("kind").await, kinds);
    assert_eq!(f.values_of("span:kind").await, kinds);
}

#[tokio::test]
async fn duration_intrinsics_have_no_values() {
    let f = fixture().await;
    for tag in [
        "duration",
        "span:duration",
        "traceDuration",
        "trace:duration",
    ] {
        assert!(f.values_of(tag).await.is_empty(), "{tag}");
    }
}

#[tokio::test]
async fn string_intrinsics_take_their_values_from_the_data() {
    let f = fixture().await;
    let names = ["GET /", "POST /pay", "SELECT", "charge"].map(|v| typed("string", v));
    assert_eq!(f.values_of("name").await, names);
    assert_eq!(f.values_of("span:name").await, names);
    let services = ["frontend", "payments"].map(|v| typed("string", v));
    assert_eq!(f.values_of("rootServiceName").await, services);
    assert_eq!(f.values_of("trace:rootService").await, services);
    let roots = ["GET /", "POST /pay"].map(|v| typed("string", v));
    assert_eq!(f.values_of("rootName").await, roots);
    assert_eq!(f.values_of("trace:rootName").await, roots);
    assert_eq!(
        f.values_of("event:name").await,
        [typed("string", "exception")]
    );
    assert_eq!(
        f.values_of("statusMessage").await,
        [typed("string", "boom")]
    );
    assert_eq!(
        f.values_of("instrumentation:name").await,
        [typed("string", "tests")]
    );
}

#[tokio::test]
async fn a_query_restricts_values_to_matching_spans() {
    let f = fixture().await;
    let req = TagValuesRequest {
        query: Some(r#"{ resource.service.name = "payments" }"#.into()),
        ..values_request("span.code")
    };
    assert_eq!(f.values(&req).await, [typed("string", "500")]);
    // Root intrinsics follow the traces of the matching spans.
    let req = TagValuesRequest {
        query: Some(r#"{ name = "SELECT" }"#.into()),
        ..values_request("rootServiceName")
    };
    assert_eq!(f.values(&req).await, [typed("string", "frontend")]);
}

#[tokio::test]
async fn an_invalid_query_for_tag_values_is_ignored() {
    let f = fixture().await;
    let req = TagValuesRequest {
        query: Some(r#"{ resource.service.name = "payments" && span."#.into()),
        ..values_request("resource.service.name")
    };
    assert_eq!(
        f.values(&req).await,
        [typed("string", "frontend"), typed("string", "payments")]
    );
}

#[tokio::test]
async fn the_time_window_restricts_values() {
    let f = fixture().await;
    let req = TagValuesRequest {
        range: TimeRange {
            start_ns: BASE + 5 * SECOND,
            end_ns: i64::MAX,
        },
        ..values_request("name")
    };
    assert_eq!(
        f.values(&req).await,
        ["POST /pay", "charge"].map(|v| typed("string", v))
    );
    let req = TagValuesRequest {
        range: TimeRange {
            start_ns: i64::MIN,
            end_ns: BASE,
        },
        ..values_request("name")
    };
    assert_eq!(f.values(&req).await, [typed("string", "GET /")]);
}

#[tokio::test]
async fn limit_caps_values() {
    let f = fixture().await;
    let req = TagValuesRequest {
        limit: 2,
        ..values_request("name")
    };
    assert_eq!(
        f.values(&req).await,
        ["GET /", "POST /pay"].map(|v| typed("string", v))
    );
    let req = TagValuesRequest {
        limit: 1,
        ..values_request("status")
    };
    assert_eq!(f.values(&req).await, [typed("keyword", "ok")]);
    let req = TagValuesRequest {
        limit: 1,
        ..values_request("code")
    };
    let v1 = bare_tag_values(&f.opened.engine, &tenants(), &req)
        .await
        .unwrap();
    assert_eq!(v1, ["500"]);
}

#[tokio::test]
async fn invalid_v2_tag_names_are_invalid() {
    let f = fixture().await;
    for tag in [
        "",
        "foo",
        "span.a b",
        ".a = 1",
        "span:nope",
        "{ .a }",
        "parent.a",
    ] {
        match tag_values(&f.opened.engine, &tenants(), &values_request(tag)).await {
            Err(QueryError {
                kind: ErrorKind::BadRequest,
                message,
            }) => assert!(
                message.starts_with(&format!("please provide a valid tagName: {tag}")),
                "{tag:?}: {message}"
            ),
            other => panic!("{tag:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn quoted_attribute_names_are_valid_tags() {
    let f = fixture().await;
    assert_eq!(
        f.values_of(r#"span."http.method""#).await,
        [typed("string", "GET")]
    );
}

#[tokio::test]
async fn v1_values_are_strings_from_span_and_resource_attributes() {
    let f = fixture().await;
    assert_eq!(f.v1("code").await, ["500", "500.5"]);
    assert_eq!(f.v1("region").await, ["ap", "eu", "us"]);
    assert_eq!(f.v1("service.name").await, ["frontend", "payments"]);
    assert_eq!(f.v1("cached").await, ["true"]);
    // Only span and resource attributes, and no JSON-encoded values.
    assert!(f.v1("retries").await.is_empty());
    assert!(f.v1("tags").await.is_empty());
}
