//! Anomaly reports: which groups of spans (by default each service's server and consumer
//! operations) got slower, fail more, changed their traffic, show new errors or values, or
//! disappeared, comparing a current window with a baseline; how sure we are; and which traces
//! show it.
//!
//! [`ReportOptions`] is what every edge takes (CLI flags, the JSON body of
//! `POST /api/v1/report`, the Flight action `report`, `[[reports]]` in the config);
//! [`run`] resolves them, runs the plans of [`crate::query::report`], tests and corrects in
//! [`analyze`] with [`stats`], and returns a [`model::Report`] that [`render`] turns into
//! JSON, Markdown or HTML. `docs/reports.md` documents the method and the JSON schema.
//!
//! This layer sits on the query layer and below the edges; it opens no listener.

pub mod analyze;
pub mod model;
pub mod render;
pub mod schedule;
pub mod scheduled;
pub mod stats;

use serde::{Deserialize, Serialize};

pub use crate::config::ReportOptions;
use crate::query::report::{ReportQuery, Side, report_data};
use crate::query::{QueryEngine, QueryError};
use crate::time::{DurationSyntax, parse_duration_ns};
use model::{Report, ReportStatus, SCHEMA_VERSION, Severity, Thresholds, Window};

/// Group keys when none are given: each operation of each service.
pub const DEFAULT_GROUP_BY: &[&str] = &["service.name", "name"];
/// Span kinds compared when none are given: the spans that serve requests.
pub const DEFAULT_KINDS: &[&str] = &["server", "consumer"];
/// Span attributes checked for values new in the current window when none are given.
pub const DEFAULT_NEW_VALUE_KEYS: &[&str] = &[
    "error.type",
    "http.response.status_code",
    "http.status_code",
    "rpc.grpc.status_code",
];
/// The current window when none is given.
pub const DEFAULT_CURRENT: &str = "now-1h..now";

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The options are wrong; the message names the bad value and what is accepted.
    #[error("{0}")]
    BadOptions(String),
    /// A plan failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The output could not be drawn.
    #[error(transparent)]
    Render(#[from] render::RenderError),
}

/// Edges answer a failed report as they answer a failed query: bad options are bad requests.
impl From<ReportError> for QueryError {
    fn from(error: ReportError) -> Self {
        match error {
            ReportError::BadOptions(message) => QueryError::bad_request(message),
            ReportError::Query(e) => e,
            ReportError::Render(e) => QueryError::internal(e.to_string()),
        }
    }
}

impl ReportError {
    fn bad(message: impl Into<String>) -> Self {
        ReportError::BadOptions(message.into())
    }
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Md,
    Html,
}

impl Format {
    /// The MIME type of the output.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Md => "text/markdown; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    /// The format named `json`, `md` or `html` (also a file's extension).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "json" => Some(Format::Json),
            "md" => Some(Format::Md),
            "html" => Some(Format::Html),
            _ => None,
        }
    }

    /// The file extension of the output.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Md => "md",
            Format::Html => "html",
        }
    }

    /// `report` in this format.
    pub fn render(self, report: &Report) -> Result<String, ReportError> {
        Ok(match self {
            Format::Json => render::json(report),
            Format::Md => render::markdown(report),
            Format::Html => render::html(report)?,
        })
    }
}

/// Parses a time range `A..B` relative to `now_ns`: each end is `now`, `now-DURATION`,
/// RFC 3339 or Unix seconds. Returns `[start, end)` in nanoseconds.
pub fn parse_range(text: &str, now_ns: i64) -> Result<Window, ReportError> {
    let (start, end) = text.split_once("..").ok_or_else(|| {
        ReportError::bad(format!(
            "invalid range {text:?}: write START..END, e.g. now-1h..now, 2024-05-01T10:00:00Z..2024-05-01T11:00:00Z or 1714557600..1714561200"
        ))
    })?;
    let window = Window {
        start_ns: parse_instant(start.trim(), now_ns)?,
        end_ns: parse_instant(end.trim(), now_ns)?,
    };
    if window.start_ns >= window.end_ns {
        return Err(ReportError::bad(format!(
            "invalid range {text:?}: its start is not before its end"
        )));
    }
    Ok(window)
}

fn parse_instant(text: &str, now_ns: i64) -> Result<i64, ReportError> {
    if text == "now" {
        return Ok(now_ns);
    }
    if let Some(ago) = text.strip_prefix("now-") {
        let ago = parse_duration_ns(ago, DurationSyntax::Either).ok_or_else(|| {
            ReportError::bad(format!(
                "invalid time {text:?}: after now- write a duration such as 1h, 30m or 7d"
            ))
        })?;
        return Ok(now_ns.saturating_sub(ago));
    }
    if let Ok(seconds) = text.parse::<i64>() {
        return seconds
            .checked_mul(1_000_000_000)
            .ok_or_else(|| ReportError::bad(format!("invalid time {text:?}: too far from 1970")));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            ReportError::bad(format!(
                "invalid time {text:?}: use now, now-DURATION, RFC 3339 (2024-05-01T10:00:00Z) or Unix seconds"
            ))
        })
}

/// Options with every default filled in and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub query: ReportQuery,
    pub current: Window,
    pub baseline: Window,
    pub thresholds: Thresholds,
    pub link_template: Option<String>,
}

impl ReportOptions {
    /// Fills in the defaults relative to `now_ns` and checks every value.
    pub fn resolve(&self, now_ns: i64) -> Result<Resolved, ReportError> {
        let current = parse_range(self.current.as_deref().unwrap_or(DEFAULT_CURRENT), now_ns)?;
        let baseline = match &self.baseline {
            Some(text) => parse_range(text, now_ns)?,
            None => Window {
                start_ns: current.start_ns - 24 * 3_600_000_000_000,
                end_ns: current.start_ns,
            },
        };
        let defaults = Thresholds::default();
        let thresholds = Thresholds {
            min_requests: self.min_requests.unwrap_or(defaults.min_requests),
            max_q: self.max_q.unwrap_or(defaults.max_q),
            min_ratio: self.min_ratio.unwrap_or(defaults.min_ratio),
            min_error_rate_delta: self
                .min_error_rate_delta
                .unwrap_or(defaults.min_error_rate_delta),
            min_new_value_spans: self
                .min_new_value_spans
                .unwrap_or(defaults.min_new_value_spans),
        };
        if !(thresholds.max_q > 0.0 && thresholds.max_q <= 1.0) {
            return Err(ReportError::bad(format!(
                "max_q must be in (0, 1], got {}",
                thresholds.max_q
            )));
        }
        if !(thresholds.min_ratio.is_finite() && thresholds.min_ratio >= 1.0) {
            return Err(ReportError::bad(format!(
                "min_ratio must be a number of at least 1, got {}",
                thresholds.min_ratio
            )));
        }
        if !(0.0..=1.0).contains(&thresholds.min_error_rate_delta) {
            return Err(ReportError::bad(format!(
                "min_error_rate_delta must be in [0, 1], got {}",
                thresholds.min_error_rate_delta
            )));
        }
        let strings = |given: &Option<Vec<String>>, default: &[&str]| -> Vec<String> {
            given
                .clone()
                .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect())
        };
        let group_by = strings(&self.group_by, DEFAULT_GROUP_BY);
        if group_by.is_empty() {
            return Err(ReportError::bad(
                "group_by needs at least one key, e.g. service.name",
            ));
        }
        for key in &group_by {
            crate::query::report::group_expr(key)?;
        }
        let mut kinds = strings(&self.kinds, DEFAULT_KINDS);
        if kinds.iter().any(|k| k == "all") {
            kinds.clear();
        }
        // Every value the `kind` column holds, as the schema spells them (OTLP kinds 0–5).
        let known: Vec<&str> = (0..=5).map(crate::schema::rows::kind_name).collect();
        if let Some(bad) = kinds.iter().find(|k| !known.contains(&k.as_str())) {
            return Err(ReportError::bad(format!(
                "unknown span kind {bad:?}: use {} or all",
                known.join(", ")
            )));
        }
        if let Some(template) = &self.link_template
            && !template.contains("{trace_id}")
        {
            return Err(ReportError::bad(format!(
                "link_template {template:?} has no {{trace_id}} to fill in"
            )));
        }
        Ok(Resolved {
            query: ReportQuery {
                current: (current.start_ns, current.end_ns),
                baseline: (baseline.start_ns, baseline.end_ns),
                filter: self.filter.clone().filter(|f| !f.trim().is_empty()),
                group_by,
                kinds,
                new_value_keys: strings(&self.new_value_keys, DEFAULT_NEW_VALUE_KEYS),
            },
            current,
            baseline,
            thresholds,
            link_template: self.link_template.clone(),
        })
    }
}

/// Makes the report `options` ask for over `tenant`'s data, relative to `now_ns`.
pub async fn run(
    engine: &QueryEngine,
    tenant: &str,
    options: &ReportOptions,
    now_ns: i64,
) -> Result<Report, ReportError> {
    let resolved = options.resolve(now_ns)?;
    let data = report_data(engine, tenant, &resolved.query).await?;
    let spans_in = |side: Side| -> u64 {
        data.stats
            .values()
            .filter_map(|sides| sides.get(&side))
            .map(|s| s.spans)
            .sum()
    };
    let has_data = spans_in(Side::Current) > 0 && spans_in(Side::Baseline) > 0;
    let (findings, tests_run) = if has_data {
        analyze::findings(
            &data,
            &analyze::Context {
                current: resolved.current,
                baseline: resolved.baseline,
                group_by: &resolved.query.group_by,
                thresholds: &resolved.thresholds,
                link_template: resolved.link_template.as_deref(),
            },
        )
    } else {
        (Vec::new(), 0)
    };
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        tenant: tenant.to_string(),
        generated_at: rfc3339(now_ns),
        current: resolved.current,
        baseline: resolved.baseline,
        filter: resolved.query.filter.clone(),
        group_by: resolved.query.group_by.clone(),
        thresholds: resolved.thresholds,
        status: if has_data {
            ReportStatus::Ok
        } else {
            ReportStatus::NoData
        },
        groups_compared: data.stats.len(),
        tests_run,
        findings,
    })
}

pub use crate::time::rfc3339;

/// The exit status for automation: 0 without findings, 1 when every finding is below
/// `fail_on`, 2 when one is at or above it.
pub fn exit_status(report: &Report, fail_on: Severity) -> u8 {
    match report.findings.iter().map(|f| f.severity).max() {
        None => 0,
        Some(worst) if worst >= fail_on => 2,
        Some(_) => 1,
    }
}
