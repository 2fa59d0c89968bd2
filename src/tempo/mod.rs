//! Grafana Tempo's query API: the HTTP endpoints on the HTTP port and the tempopb gRPC
//! services, answering exactly as Tempo's query frontend does so that Grafana, tempo-cli and
//! tempo-vulture work unchanged.
//!
//! [`TempoApi`] holds what both transports share: tenant resolution, parameter rules and
//! limits, and the queries themselves. [`http`] and [`grpc`] only translate requests and
//! responses; [`json`] writes Tempo's JSON.

pub mod grpc;
pub mod http;
pub mod json;
pub mod search;
pub mod tags;
pub mod trace;

use std::future::Future;
use std::time::Duration;

use axum::http::StatusCode;

use crate::config::QuerySettings;
use crate::query::{QueryEngine, QueryError};
use crate::tempopb::{
    MetadataMetrics, SearchTagValuesResponse, SearchTagValuesV2Response, SearchTagsResponse,
    SearchTagsV2Response, SearchTagsV2Scope, TagValue,
};
use crate::tenant::{self, TenantError};

/// Why a query API request failed; each maps to Tempo's HTTP status and gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum TempoError {
    /// A parameter is missing or wrong (HTTP 400, INVALID_ARGUMENT).
    #[error("{0}")]
    BadRequest(String),
    /// No tenant was named while multitenancy is on (HTTP 401, UNAUTHENTICATED).
    #[error("no org id")]
    NoOrgId,
    /// The trace is larger than allowed (HTTP 422 on the v1 trace endpoint).
    #[error("trace exceeds max size (max bytes: {0})")]
    TraceTooLarge(usize),
    /// The query needed more memory than it may use (HTTP 429, RESOURCE_EXHAUSTED).
    #[error("{0}")]
    ResourcesExhausted(String),
    /// The request ran past the query timeout (HTTP 504, DEADLINE_EXCEEDED).
    #[error("context deadline exceeded")]
    Timeout,
    /// Anything else (HTTP 500, INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl TempoError {
    /// The HTTP status Tempo answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            TempoError::BadRequest(_) => StatusCode::BAD_REQUEST,
            TempoError::NoOrgId => StatusCode::UNAUTHORIZED,
            TempoError::TraceTooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            TempoError::ResourcesExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            TempoError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            TempoError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status Tempo answers with.
    pub fn grpc(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            TempoError::BadRequest(_) | TempoError::TraceTooLarge(_) => {
                tonic::Status::invalid_argument(message)
            }
            TempoError::NoOrgId => tonic::Status::unauthenticated(message),
            TempoError::ResourcesExhausted(_) => tonic::Status::resource_exhausted(message),
            TempoError::Timeout => tonic::Status::deadline_exceeded(message),
            TempoError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

impl From<TenantError> for TempoError {
    fn from(e: TenantError) -> Self {
        match e {
            TenantError::Missing => TempoError::NoOrgId,
            TenantError::Invalid(_) => TempoError::BadRequest(e.to_string()),
        }
    }
}

impl From<QueryError> for TempoError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(m) => TempoError::BadRequest(m),
            QueryError::ResourcesExhausted(m) => TempoError::ResourcesExhausted(m),
            QueryError::Execution(m) => TempoError::Internal(m),
        }
    }
}

impl From<datafusion::error::DataFusionError> for TempoError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        QueryError::from(e).into()
    }
}

impl From<arrow::error::ArrowError> for TempoError {
    fn from(e: arrow::error::ArrowError) -> Self {
        TempoError::Internal(e.to_string())
    }
}

impl From<tags::TagsError> for TempoError {
    fn from(e: tags::TagsError) -> Self {
        match e {
            tags::TagsError::Invalid(m) => TempoError::BadRequest(m),
            tags::TagsError::Execution(q) => q.into(),
        }
    }
}

/// A time window in Unix nanoseconds, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ns: i64,
    pub end_ns: i64,
}

const NANOS_PER_SECOND: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// The query API over one engine.
#[derive(Debug, Clone)]
pub struct TempoApi {
    pub engine: QueryEngine,
    pub settings: QuerySettings,
    pub multitenancy: bool,
}

impl TempoApi {
    pub fn new(engine: QueryEngine, settings: QuerySettings, multitenancy: bool) -> Self {
        Self {
            engine,
            settings,
            multitenancy,
        }
    }

    /// The tenants a request reads, from its org id (`a|b` reads both).
    pub fn tenants(&self, org_id: Option<&str>) -> Result<Vec<String>, TempoError> {
        Ok(tenant::resolve_many(org_id, self.multitenancy)?)
    }

    /// Runs `work` under the query timeout.
    pub async fn timed<T>(
        &self,
        work: impl Future<Output = Result<T, TempoError>>,
    ) -> Result<T, TempoError> {
        tokio::time::timeout(self.settings.timeout, work)
            .await
            .unwrap_or(Err(TempoError::Timeout))
    }

    /// The window of a search or tag request: the last `since` when given (it wins over
    /// `start`/`end`, as in Tempo), else [`Self::search_window`].
    pub fn request_window(
        &self,
        start: Option<u64>,
        end: Option<u64>,
        since: Option<Duration>,
    ) -> Result<Window, TempoError> {
        match since {
            Some(since) => {
                let end_ns = now_ns();
                Ok(Window {
                    start_ns: end_ns.saturating_sub(duration_ns(since)),
                    end_ns,
                })
            }
            None => self.search_window(start, end),
        }
    }

    /// The window of a search or tag request from its `start`/`end` in Unix seconds: both or
    /// neither; neither means the most recent `default_search_window`.
    pub fn search_window(
        &self,
        start: Option<u64>,
        end: Option<u64>,
    ) -> Result<Window, TempoError> {
        match (start, end) {
            (None, None) => {
                let end_ns = now_ns();
                Ok(Window {
                    start_ns: end_ns.saturating_sub(duration_ns(self.settings.default_search_window)),
                    end_ns,
                })
            }
            (Some(start), Some(end)) => {
                if end <= start {
                    return Err(TempoError::BadRequest(format!(
                        "http parameter start must be before end. received start={start} end={end}"
                    )));
                }
                let max = self.settings.max_search_duration;
                if Duration::from_secs(end - start) > max {
                    return Err(TempoError::BadRequest(format!(
                        "range specified by start and end exceeds {}. received start={start} end={end}",
                        go_duration(max)
                    )));
                }
                Ok(Window {
                    start_ns: seconds_to_ns(start),
                    // The whole last second belongs to the window.
                    end_ns: seconds_to_ns(end).saturating_add(NANOS_PER_SECOND - 1),
                })
            }
            _ => Err(TempoError::BadRequest(
                "error parsing date range: only one of start and end provided: must provide both or neither"
                    .into(),
            )),
        }
    }
}

impl TempoApi {
    /// Tag names of `tenants`, per scope; several tenants' names are merged.
    async fn tag_names(
        &self,
        tenants: &[String],
        request: &tags::TagsRequest,
    ) -> Result<Vec<tags::ScopeTags>, TempoError> {
        let mut merged: Vec<tags::ScopeTags> = Vec::new();
        for tenant in tenants {
            for scope in tags::tag_names(&self.engine, tenant, request).await? {
                match merged.iter_mut().find(|m| m.name == scope.name) {
                    Some(m) => m.tags.extend(scope.tags),
                    None => merged.push(scope),
                }
            }
        }
        for scope in &mut merged {
            scope.tags.sort();
            scope.tags.dedup();
            if request.limit > 0 {
                scope.tags.truncate(request.limit);
            }
        }
        Ok(merged)
    }

    /// v1 tag names: one sorted list, intrinsics only when asked for by scope.
    pub async fn search_tags(
        &self,
        tenants: &[String],
        request: &tags::TagsRequest,
    ) -> Result<SearchTagsResponse, TempoError> {
        let intrinsic_scope = matches!(request.scope, tags::TagScope::Intrinsic);
        let scopes = self.timed(self.tag_names(tenants, request)).await?;
        let mut names: Vec<String> = scopes
            .into_iter()
            .filter(|s| intrinsic_scope || s.name != "intrinsic")
            .flat_map(|s| s.tags)
            .collect();
        names.sort();
        names.dedup();
        if request.limit > 0 {
            names.truncate(request.limit);
        }
        Ok(SearchTagsResponse {
            tag_names: names,
            metrics: Some(MetadataMetrics::default()),
        })
    }

    /// v2 tag names, per scope.
    pub async fn search_tags_v2(
        &self,
        tenants: &[String],
        request: &tags::TagsRequest,
    ) -> Result<SearchTagsV2Response, TempoError> {
        let scopes = self.timed(self.tag_names(tenants, request)).await?;
        Ok(SearchTagsV2Response {
            scopes: scopes
                .into_iter()
                .map(|s| SearchTagsV2Scope {
                    name: s.name.to_string(),
                    tags: s.tags,
                })
                .collect(),
            metrics: Some(MetadataMetrics::default()),
        })
    }

    /// v2 tag values: typed values of a TraceQL attribute or intrinsic across `tenants`.
    pub async fn search_tag_values_v2(
        &self,
        tenants: &[String],
        request: &tags::TagValuesRequest,
    ) -> Result<SearchTagValuesV2Response, TempoError> {
        let found = self
            .timed(async {
                let mut values: Vec<tags::TypedValue> = Vec::new();
                for tenant in tenants {
                    for value in tags::tag_values_v2(&self.engine, tenant, request).await? {
                        if !values.contains(&value) {
                            values.push(value);
                        }
                    }
                }
                Ok(values)
            })
            .await?;
        let limit = if request.limit > 0 {
            request.limit
        } else {
            usize::MAX
        };
        Ok(SearchTagValuesV2Response {
            tag_values: found
                .into_iter()
                .take(limit)
                .map(|v| TagValue {
                    r#type: v.kind.to_string(),
                    value: v.value,
                })
                .collect(),
            metrics: Some(MetadataMetrics::default()),
        })
    }

    /// v1 tag values: values of a bare attribute name across `tenants`, sorted.
    pub async fn search_tag_values(
        &self,
        tenants: &[String],
        request: &tags::TagValuesRequest,
    ) -> Result<SearchTagValuesResponse, TempoError> {
        let mut values = self
            .timed(async {
                let mut values = Vec::new();
                for tenant in tenants {
                    values.extend(tags::tag_values_v1(&self.engine, tenant, request).await?);
                }
                Ok(values)
            })
            .await?;
        values.sort();
        values.dedup();
        if request.limit > 0 {
            values.truncate(request.limit);
        }
        Ok(SearchTagValuesResponse {
            tag_values: values,
            metrics: Some(MetadataMetrics::default()),
        })
    }
}

fn seconds_to_ns(seconds: u64) -> i64 {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(NANOS_PER_SECOND)
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A duration the way Go prints one (`168h0m0s`, `15m0s`, `30s`), for messages that quote
/// Tempo's.
pub fn go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_like_tempos_messages() {
        assert_eq!(go_duration(Duration::from_secs(168 * 3600)), "168h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
    }
}
