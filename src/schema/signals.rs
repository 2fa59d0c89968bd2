//! The in-memory log record and metric data point: what OTLP logs and metrics become after
//! validation, as the WAL persists them and the ingester holds them.
//!
//! Like [`SpanRow`](super::SpanRow), each row is flattened with its resource and scope, and
//! adding a field changes the WAL record format: see `ingester::wal`.

use serde::{Deserialize, Serialize};

use super::rows::{AttrValue, SpanId, TraceId, attrs_bytes, heap_bytes};

/// One log record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// `time_unix_nano`, or the observed time when the record has none (OTLP allows 0).
    pub time_unix_nano: i64,
    pub observed_time_unix_nano: i64,
    /// OTLP `SeverityNumber` (0 unspecified, 1–24).
    pub severity_number: i32,
    pub severity_text: String,
    /// The body as given: a string stays a string, anything else is kept typed.
    pub body: Option<AttrValue>,
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub flags: u32,
    pub event_name: String,
    pub dropped_attributes_count: u32,
    pub attrs: Vec<(String, AttrValue)>,
    pub service_name: String,
    pub scope_name: String,
    pub scope_version: String,
    pub scope_attrs: Vec<(String, AttrValue)>,
    pub resource_attrs: Vec<(String, AttrValue)>,
    pub resource_schema_url: String,
    pub scope_schema_url: String,
}

/// The OTLP metric types, as stored in the `metric_type` column.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricType {
    #[default]
    Gauge,
    Sum,
    Histogram,
    ExponentialHistogram,
    Summary,
}

impl MetricType {
    /// The `metric_type` column value.
    pub fn name(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Sum => "sum",
            MetricType::Histogram => "histogram",
            MetricType::ExponentialHistogram => "exponential_histogram",
            MetricType::Summary => "summary",
        }
    }
}

/// The buckets of an exponential histogram point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpBuckets {
    pub scale: i32,
    pub zero_count: u64,
    pub zero_threshold: f64,
    pub positive_offset: i32,
    pub positive_counts: Vec<u64>,
    pub negative_offset: i32,
    pub negative_counts: Vec<u64>,
}

/// A metric exemplar: one measurement, usually pointing at the span that made it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExemplarRow {
    pub time_unix_nano: i64,
    /// The value as a float, whatever its OTLP type.
    pub value: f64,
    /// The value when it was an integer.
    pub value_int: Option<i64>,
    pub trace_id: Option<TraceId>,
    pub span_id: Option<SpanId>,
    pub attrs: Vec<(String, AttrValue)>,
}

/// One metric data point of any type, with its metric's name, type, description and unit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PointRow {
    pub metric_name: String,
    pub metric_type: MetricType,
    pub description: String,
    pub unit: String,
    /// 0 when the point has no start time.
    pub start_time_unix_nano: i64,
    pub time_unix_nano: i64,
    /// Number points: the value as a float (ints converted); `None` for distributions.
    pub value: Option<f64>,
    /// Number points that were integers: the exact value.
    pub value_int: Option<i64>,
    /// OTLP `AggregationTemporality` for sums and histograms (1 delta, 2 cumulative).
    pub temporality: Option<i32>,
    /// Sums: whether the sum is monotonic.
    pub monotonic: Option<bool>,
    /// Histograms and summaries.
    pub count: Option<u64>,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Histograms: upper bounds and per-bucket counts (one more count than bounds).
    pub explicit_bounds: Vec<f64>,
    pub bucket_counts: Vec<u64>,
    /// Exponential histograms.
    pub exp: Option<ExpBuckets>,
    /// Summaries: (quantile, value) pairs.
    pub quantiles: Vec<(f64, f64)>,
    /// OTLP `DataPointFlags`.
    pub flags: u32,
    pub attrs: Vec<(String, AttrValue)>,
    pub exemplars: Vec<ExemplarRow>,
    pub service_name: String,
    pub scope_name: String,
    pub scope_version: String,
    pub resource_attrs: Vec<(String, AttrValue)>,
}

impl LogRow {
    /// The record's size in memory while held live (with its `Arc` and its slot in the list
    /// of records): used to cut blocks by size and to cap what a tenant holds.
    pub fn approx_bytes(&self) -> usize {
        let text = |s: &str| heap_bytes(s.len());
        let body = match &self.body {
            Some(AttrValue::Str(s) | AttrValue::Json(s)) => text(s),
            Some(AttrValue::Bytes(b)) => heap_bytes(b.len()),
            _ => 0,
        };
        size_of::<LogRow>()
            + HELD_ROW_OVERHEAD
            + body
            + text(&self.severity_text)
            + text(&self.event_name)
            + text(&self.service_name)
            + text(&self.scope_name)
            + text(&self.scope_version)
            + text(&self.resource_schema_url)
            + text(&self.scope_schema_url)
            + attrs_bytes(&self.attrs)
            + attrs_bytes(&self.resource_attrs)
            + attrs_bytes(&self.scope_attrs)
    }
}

/// What holding a record or point live costs besides the row: its `Arc` and its slot.
const HELD_ROW_OVERHEAD: usize = 24;

impl PointRow {
    /// The point's size in memory while held live, as [`LogRow::approx_bytes`].
    pub fn approx_bytes(&self) -> usize {
        let text = |s: &str| heap_bytes(s.len());
        let exp = self.exp.as_ref().map_or(0, |e| {
            size_of::<ExpBuckets>() + 8 * (e.positive_counts.len() + e.negative_counts.len())
        });
        size_of::<PointRow>()
            + HELD_ROW_OVERHEAD
            + text(&self.metric_name)
            + text(&self.description)
            + text(&self.unit)
            + text(&self.service_name)
            + text(&self.scope_name)
            + text(&self.scope_version)
            + 8 * (self.explicit_bounds.len() + self.bucket_counts.len())
            + 16 * self.quantiles.len()
            + exp
            + attrs_bytes(&self.attrs)
            + attrs_bytes(&self.resource_attrs)
            + self
                .exemplars
                .iter()
                .map(|e| size_of::<ExemplarRow>() + attrs_bytes(&e.attrs))
                .sum::<usize>()
    }

    /// Identifies the point's time series: a hash of its metric name, resource, scope and
    /// attributes (in the order given). Stable across processes and versions (FNV-1a).
    pub fn series_id(&self) -> u64 {
        let mut hash = Fnv::default();
        hash.write(self.metric_name.as_bytes());
        hash.write(self.scope_name.as_bytes());
        for (key, value) in self.resource_attrs.iter().chain(&self.attrs) {
            hash.write(key.as_bytes());
            match value {
                AttrValue::Str(s) | AttrValue::Json(s) => hash.write(s.as_bytes()),
                AttrValue::Int(i) => hash.write(&i.to_le_bytes()),
                AttrValue::Float(f) => hash.write(&f.to_bits().to_le_bytes()),
                AttrValue::Bool(b) => hash.write(&[u8::from(*b)]),
                AttrValue::Bytes(b) => hash.write(b),
            }
        }
        hash.0
    }
}

/// FNV-1a, 64 bit, with a separator between the pieces written.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf29ce484222325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes.iter().chain(&[0xff]) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}
