//! What a report says: the stable, documented JSON shape every output format is drawn from.
//!
//! `schema_version` changes only when a field changes meaning or goes away; new fields may be
//! added within a version. `docs/reports.md` documents every field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The JSON schema version of [`Report`].
pub const SCHEMA_VERSION: u32 = 1;

/// One comparison of a current window with a baseline window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tenant: String,
    /// When the report was made, RFC 3339.
    pub generated_at: String,
    pub current: Window,
    pub baseline: Window,
    /// The TraceQL spanset filter the spans were scoped by, if any.
    pub filter: Option<String>,
    /// The columns findings are grouped by, e.g. `["service.name", "name"]`.
    pub group_by: Vec<String>,
    pub thresholds: Thresholds,
    /// `ok`, or `no_data` when the current or the baseline window holds no span.
    pub status: ReportStatus,
    /// Groups seen in either window.
    pub groups_compared: usize,
    /// Statistical tests run across all groups and measures (the Benjamini–Hochberg family).
    pub tests_run: usize,
    /// Most severe first, then by q-value.
    pub findings: Vec<Finding>,
}

/// A half-open time range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start_ns: i64,
    pub end_ns: i64,
}

impl Window {
    /// The window's length in seconds.
    pub fn seconds(&self) -> f64 {
        (self.end_ns - self.start_ns) as f64 / 1e9
    }
}

/// Whether the windows held data to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    Ok,
    NoData,
}

/// What makes a difference a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// A group needs this many spans in each window before its rates and latencies are tested.
    pub min_requests: u64,
    /// A finding's q-value (Benjamini–Hochberg adjusted p-value) is at most this.
    pub max_q: f64,
    /// Latency and traffic findings change by at least this factor (1.5 = +50 % or −33 %).
    pub min_ratio: f64,
    /// Error-rate findings change by at least this much (0.01 = one percentage point).
    pub min_error_rate_delta: f64,
    /// A new status message or attribute value is reported once this many spans carry it.
    pub min_new_value_spans: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_requests: 30,
            max_q: 0.01,
            min_ratio: 1.25,
            min_error_rate_delta: 0.01,
            min_new_value_spans: 5,
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A latency quantile moved (measures `p50_ms`, `p90_ms`, `p99_ms`).
    Latency,
    /// The share of failed spans moved (measure `error_rate`).
    Errors,
    /// Spans per second moved (measure `rate_per_s`).
    Traffic,
    /// A status message seen only in the current window (measure `error_count`).
    NewError,
    /// An attribute value seen only in the current window (measure `span_count`).
    NewAttributeValue,
    /// A group with baseline traffic and none in the current window (measure `rate_per_s`).
    Disappeared,
}

/// Which way the measure went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
    New,
    Gone,
}

/// One difference between the windows that passed the thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The group's values, keyed like [`Report::group_by`].
    pub group: BTreeMap<String, String>,
    /// What was measured, e.g. `p99_ms`, `error_rate`, `rate_per_s`.
    pub measure: String,
    pub direction: Direction,
    /// The measure in the current window.
    pub current: f64,
    /// The measure in the baseline window (0 for a new value).
    pub baseline: f64,
    /// current / baseline for latency and traffic, current − baseline for error rates;
    /// `None` where there is no baseline.
    pub effect: Option<f64>,
    /// The test's two-sided p-value; `None` for findings that are facts, not estimates (a
    /// new status message).
    pub p_value: Option<f64>,
    /// The Benjamini–Hochberg adjusted p-value across every test of the report.
    pub q_value: Option<f64>,
    /// Name of the test: `fisher_exact`, `two_proportion_z`, `poisson_rate`, `rank_sum`.
    pub test: Option<String>,
    pub severity: Severity,
    /// One sentence a person reads first.
    pub summary: String,
    /// Extra facts, e.g. the new status message or attribute `key=value`.
    pub detail: Option<String>,
    /// Current-window traces that show it.
    pub exemplars: Vec<Exemplar>,
    /// The measure over time, both windows, for a chart.
    pub series: Option<Series>,
    /// Latency distributions of both windows, for latency findings.
    pub distribution: Option<Distribution>,
}

/// A trace that shows a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exemplar {
    pub trace_id: String,
    /// `slowest` or `errored`.
    pub why: String,
    pub duration_ms: f64,
    /// The link template with `{trace_id}` filled in, when one is configured.
    pub link: Option<String>,
}

/// A measure per time bucket in each window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub bucket_ns: i64,
    /// `(bucket start, value)`, in time order.
    pub current: Vec<(i64, f64)>,
    pub baseline: Vec<(i64, f64)>,
}

/// Latency histograms of the two windows over the same bucket upper bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Upper bounds of the buckets, milliseconds, increasing.
    pub upper_ms: Vec<f64>,
    /// Share of the window's spans in each bucket (sums to 1).
    pub current: Vec<f64>,
    pub baseline: Vec<f64>,
}
