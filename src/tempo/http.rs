//! Tempo's HTTP endpoints: trace by id (v1, v2), search, tag names and tag values (v1, v2),
//! echo, readiness and build info. JSON by default, protobuf on `Accept:
//! application/protobuf`; errors as plain text with Tempo's status codes and messages.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use prost::Message;

use super::json::{TempoJson, trace_v1_json};
use super::tags::{TagScope, TagValuesRequest, TagsRequest};
use super::trace::parse_trace_id;
use super::{TempoApi, TempoError, Window};
use crate::tempopb::{TraceByIdMetrics, TraceByIdResponse};
use crate::tenant::ORG_ID_HEADER;

/// Content type of protobuf responses.
pub const PROTOBUF: &str = "application/protobuf";

/// The routes, to be merged into the HTTP server's router.
pub fn router(api: TempoApi) -> Router {
    Router::new()
        .route("/ready", any(|| async { text(StatusCode::OK, "ready\n") }))
        .route(
            "/api/echo",
            any(|| async { text(StatusCode::OK, "echo\n") }),
        )
        .route("/api/status/buildinfo", get(buildinfo))
        .route("/api/traces/{id}", any(trace_v1))
        .route("/api/v2/traces/{id}", any(trace_v2))
        .route("/api/search", any(search))
        .route("/api/search/tags", any(tags_v1))
        .route("/api/v2/search/tags", any(tags_v2))
        .route("/api/search/tag/{*rest}", any(tag_values_v1))
        .route("/api/v2/search/tag/{*rest}", any(tag_values_v2))
        // gzip when the client asks for it, as Tempo's frontend does.
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(api)
}

type Params = Query<HashMap<String, String>>;

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

impl IntoResponse for TempoError {
    fn into_response(self) -> Response {
        let body = match self {
            // Go's http.Error adds a newline; Tempo's validation errors do not.
            TempoError::NoOrgId => "no org id\n".to_string(),
            ref e => e.to_string(),
        };
        text(self.status(), body)
    }
}

/// Whether the client asked for protobuf (a substring match, as Tempo does).
fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(PROTOBUF))
}

fn json_response(value: serde_json::Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn protobuf_response(message: &impl Message) -> Response {
    ([(header::CONTENT_TYPE, PROTOBUF)], message.encode_to_vec()).into_response()
}

/// Answers with `message` in the format the client asked for.
fn respond<M: Message + TempoJson>(headers: &HeaderMap, message: &M) -> Response {
    if wants_protobuf(headers) {
        protobuf_response(message)
    } else {
        json_response(message.tempo_json())
    }
}

/// The message, or the error as Tempo answers it.
fn answer<M: Message + TempoJson>(headers: &HeaderMap, result: Result<M, TempoError>) -> Response {
    match result {
        Ok(message) => respond(headers, &message),
        Err(e) => e.into_response(),
    }
}

fn org_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok())
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn seconds(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, TempoError> {
    param(params, name)
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                TempoError::BadRequest(format!("invalid {name}: {v:?} is not a number of seconds"))
            })
        })
        .transpose()
}

async fn buildinfo(State(_): State<TempoApi>) -> Response {
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "revision": option_env!("SPANLAKE_REVISION").unwrap_or(""),
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{info}\n"),
    )
        .into_response()
}

/// The optional `start`/`end` window of trace-by-id requests.
fn trace_window(params: &HashMap<String, String>) -> Result<Option<Window>, TempoError> {
    let (start, end) = (seconds(params, "start")?, seconds(params, "end")?);
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        return Err(TempoError::BadRequest(format!(
            "http parameter start must be before end. received start={s} end={e}"
        )));
    }
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    Ok(Some(Window {
        start_ns: start.map_or(i64::MIN, super::seconds_to_ns),
        end_ns: end.map_or(i64::MAX, |e| {
            super::seconds_to_ns(e).saturating_add(super::NANOS_PER_SECOND - 1)
        }),
    }))
}

fn check_mode(params: &HashMap<String, String>) -> Result<(), TempoError> {
    match param(params, "mode") {
        None | Some("all" | "ingesters" | "blocks" | "external") => Ok(()),
        Some(other) => Err(TempoError::BadRequest(format!(
            "invalid value for mode {other}"
        ))),
    }
}

async fn trace_v1(
    State(api): State<TempoApi>,
    Path(id): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let tenants = api.tenants(org_id(&headers))?;
        let id = parse_trace_id(&id)?;
        check_mode(&params)?;
        let window = trace_window(&params)?;
        let found = api.timed(api.find_trace(&tenants, id, window)).await?;
        match found {
            None => Ok(StatusCode::NOT_FOUND.into_response()),
            Some(f) if f.truncated => {
                Err(TempoError::TraceTooLarge(api.settings.max_bytes_per_trace))
            }
            Some(f) if wants_protobuf(&headers) => Ok(protobuf_response(&f.trace)),
            Some(f) => Ok(json_response(trace_v1_json(&f.trace))),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn trace_v2(
    State(api): State<TempoApi>,
    Path(id): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let tenants = api.tenants(org_id(&headers))?;
        let id = parse_trace_id(&id)?;
        check_mode(&params)?;
        let window = trace_window(&params)?;
        let shape = super::trace::TraceFilter::from_params(&params)?;
        let found = api
            .timed(api.find_filtered_trace(&tenants, id, window, shape.as_ref()))
            .await?;
        let response = match found {
            Some(f) => f.into_response(api.settings.max_bytes_per_trace),
            None => TraceByIdResponse {
                trace: Some(Default::default()),
                metrics: Some(TraceByIdMetrics::default()),
                ..Default::default()
            },
        };
        Ok::<_, TempoError>(respond(&headers, &response))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn search(
    State(api): State<TempoApi>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let tenants = api.tenants(org_id(&headers))?;
        let raw = api.raw_search_from_http(&params)?;
        let params = api.search_params(raw)?;
        let response = api.timed(api.search(&tenants, &params, |_, _| {})).await?;
        Ok::<_, TempoError>(respond(&headers, &response))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `limit`-style parameters: absent or empty is 0 (unlimited).
fn count_param(params: &HashMap<String, String>, name: &str) -> Result<usize, TempoError> {
    param(params, name)
        .map(|v| {
            v.trim().parse::<usize>().map_err(|_| {
                TempoError::BadRequest(format!("invalid {name}: {v:?} is not a number"))
            })
        })
        .transpose()
        .map(Option::unwrap_or_default)
}

fn tag_window(api: &TempoApi, params: &HashMap<String, String>) -> Result<Window, TempoError> {
    let since = param(params, "since")
        .map(|v| {
            super::search::parse_prometheus_duration(v).ok_or_else(|| {
                TempoError::BadRequest(format!("invalid since: {v:?} is not a duration"))
            })
        })
        .transpose()?;
    api.request_window(seconds(params, "start")?, seconds(params, "end")?, since)
}

fn tags_request(
    api: &TempoApi,
    params: &HashMap<String, String>,
) -> Result<TagsRequest, TempoError> {
    let scope: TagScope = param(params, "scope").unwrap_or("").parse()?;
    let window = tag_window(api, params)?;
    Ok(TagsRequest {
        scope,
        query: param(params, "q").map(str::to_string),
        start_ns: Some(window.start_ns),
        end_ns: Some(window.end_ns),
        limit: count_param(params, "limit")?,
    })
}

async fn tags_v1(
    State(api): State<TempoApi>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let tenants = api.tenants(org_id(&headers))?;
        let request = tags_request(&api, &params)?;
        api.search_tags(&tenants, &request).await
    };
    answer(&headers, result.await)
}

async fn tags_v2(
    State(api): State<TempoApi>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let tenants = api.tenants(org_id(&headers))?;
        let request = tags_request(&api, &params)?;
        api.search_tags_v2(&tenants, &request).await
    };
    answer(&headers, result.await)
}

/// The tag of `/api[/v2]/search/tag/{tag}/values`; the tag itself may contain `/`.
fn values_tag(rest: &str) -> Result<String, TempoError> {
    match rest.strip_suffix("/values") {
        Some(tag) if !tag.is_empty() => Ok(tag.to_string()),
        _ => Err(TempoError::BadRequest(
            "please provide a non-empty tagName".into(),
        )),
    }
}

fn values_request(
    api: &TempoApi,
    rest: &str,
    params: &HashMap<String, String>,
) -> Result<TagValuesRequest, TempoError> {
    let window = tag_window(api, params)?;
    Ok(TagValuesRequest {
        tag: values_tag(rest)?,
        query: param(params, "q").map(str::to_string),
        start_ns: Some(window.start_ns),
        end_ns: Some(window.end_ns),
        limit: count_param(params, "limit")?,
    })
}

async fn tag_values_v1(
    State(api): State<TempoApi>,
    Path(rest): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let tenants = api.tenants(org_id(&headers))?;
        let request = values_request(&api, &rest, &params)?;
        api.search_tag_values(&tenants, &request).await
    };
    answer(&headers, result.await)
}

async fn tag_values_v2(
    State(api): State<TempoApi>,
    Path(rest): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let tenants = api.tenants(org_id(&headers))?;
        let request = values_request(&api, &rest, &params)?;
        api.search_tag_values_v2(&tenants, &request).await
    };
    answer(&headers, result.await)
}
