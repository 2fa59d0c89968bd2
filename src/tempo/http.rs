//! Tempo's HTTP endpoints: trace by id (v1, v2), search, tag names and tag values (v1, v2),
//! TraceQL metrics (range and instant), echo, readiness and build info. JSON by default, protobuf on `Accept:
//! application/protobuf`; errors as plain text with Tempo's status codes and messages. Each
//! handler reads its parameters ([`super::params`]), calls [`TempoApi`] and encodes.

use std::future::Future;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};
use prost::Message;

use super::TempoApi;
use super::json::{TempoJson, trace_v1_json};
use super::params::{self, Params, RawSearch, SearchParams};
use crate::api::status::text;
use crate::query::Result;
use crate::query::search::StageTimings;
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
        .route("/api/traces/{id}", endpoint(Endpoint::TraceV1))
        .route("/api/v2/traces/{id}", endpoint(Endpoint::TraceV2))
        .route("/api/search", endpoint(Endpoint::Search))
        .route("/api/search/tags", endpoint(Endpoint::TagsV1))
        .route("/api/v2/search/tags", endpoint(Endpoint::TagsV2))
        .route("/api/search/tag/{*rest}", endpoint(Endpoint::TagValuesV1))
        .route(
            "/api/v2/search/tag/{*rest}",
            endpoint(Endpoint::TagValuesV2),
        )
        .route("/api/metrics/query_range", endpoint(Endpoint::MetricsRange))
        .route("/api/metrics/query", endpoint(Endpoint::MetricsInstant))
        // gzip when the client asks for it, as Tempo's frontend does.
        .layer(tower_http::compression::CompressionLayer::new())
        .with_state(api)
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

/// The `Server-Timing` response header (W3C Server Timing): a search's time per stage.
const SERVER_TIMING: header::HeaderName = header::HeaderName::from_static("server-timing");

/// `parse;dur=0.012, plan;dur=1.830, …` in milliseconds, as browsers' developer tools and the
/// search benchmark read it.
fn server_timing(timings: &StageTimings) -> String {
    timings
        .stages
        .iter()
        .map(|(stage, time)| format!("{stage};dur={:.3}", time.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The response `work` makes, or its error as Tempo answers it.
async fn answer(work: impl Future<Output = Result<Response>>) -> Response {
    work.await.unwrap_or_else(IntoResponse::into_response)
}

fn tenants(api: &TempoApi, headers: &HeaderMap) -> Result<Vec<String>> {
    api.tenants(headers.get(ORG_ID_HEADER).and_then(|v| v.to_str().ok()))
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

/// The query endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    TraceV1,
    TraceV2,
    Search,
    TagsV1,
    TagsV2,
    TagValuesV1,
    TagValuesV2,
    MetricsRange,
    MetricsInstant,
}

/// The handler of `which`: the path parameter (a trace id, or the tag of a values request)
/// when the route has one, the query string and the headers.
fn endpoint(which: Endpoint) -> MethodRouter<TempoApi> {
    any(
        move |State(api): State<TempoApi>,
              path: Option<Path<String>>,
              Query(params): Query<Params>,
              headers: HeaderMap| async move {
            let path = path.map(|Path(p)| p).unwrap_or_default();
            answer(handle(&api, which, &path, &params, &headers)).await
        },
    )
}

async fn handle(
    api: &TempoApi,
    which: Endpoint,
    path: &str,
    params: &Params,
    headers: &HeaderMap,
) -> Result<Response> {
    let tenants = tenants(api, headers)?;
    Ok(match which {
        Endpoint::TraceV1 => {
            let request = params::trace_from_http(path, params, false)?;
            match api.trace_v1(&tenants, &request).await? {
                None => StatusCode::NOT_FOUND.into_response(),
                Some(trace) if wants_protobuf(headers) => protobuf_response(&trace),
                Some(trace) => json_response(trace_v1_json(&trace)),
            }
        }
        Endpoint::TraceV2 => {
            let request = params::trace_from_http(path, params, true)?;
            respond(headers, &api.trace_v2(&tenants, &request).await?)
        }
        Endpoint::Search => {
            let raw = RawSearch::from_http(params)?;
            let search = SearchParams::new(raw, &api.settings, &api.window_rule())?;
            if let Some(explain) = search.explain {
                let analyze = explain == params::Explain::Analyze;
                text(
                    StatusCode::OK,
                    api.explain_search(&tenants, &search, analyze).await?,
                )
            } else {
                let (response, timings) = api.search_timed(&tenants, &search, |_, _| {}).await?;
                let started = std::time::Instant::now();
                let mut response = respond(headers, &response);
                let mut timings = timings;
                timings.add("encode", started.elapsed());
                if let Ok(value) = header::HeaderValue::from_str(&server_timing(&timings)) {
                    response.headers_mut().insert(SERVER_TIMING, value);
                }
                response
            }
        }
        Endpoint::TagsV1 => {
            let request = params::tags_from_http(api, params)?;
            respond(headers, &api.search_tags(&tenants, &request).await?)
        }
        Endpoint::TagsV2 => {
            let request = params::tags_from_http(api, params)?;
            respond(headers, &api.search_tags_v2(&tenants, &request).await?)
        }
        Endpoint::TagValuesV1 => {
            let request = params::values_from_http(api, path, params)?;
            respond(headers, &api.search_tag_values(&tenants, &request).await?)
        }
        Endpoint::TagValuesV2 => {
            let request = params::values_from_http(api, path, params)?;
            respond(
                headers,
                &api.search_tag_values_v2(&tenants, &request).await?,
            )
        }
        Endpoint::MetricsRange => {
            let request = params::metrics_range_from_http(api, params)?;
            if request.instant {
                respond(
                    headers,
                    &api.metrics_query_instant(&tenants, &request).await?,
                )
            } else {
                respond(headers, &api.metrics_query_range(&tenants, &request).await?)
            }
        }
        Endpoint::MetricsInstant => {
            let request = params::metrics_instant_from_http(api, params)?;
            respond(
                headers,
                &api.metrics_query_instant(&tenants, &request).await?,
            )
        }
    })
}
