//! OTLP export requests → [`SpanRow`]s, [`LogRow`]s and [`PointRow`]s, validating as it goes.
//!
//! A request with any invalid span, log record or data point is refused whole, so an export
//! either lands completely or not at all; the error names the offending item by its position
//! in the request.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, NumberDataPoint, SummaryDataPoint,
    exemplar::Value as ExemplarValue, metric::Data, number_data_point::Value as NumberValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::rows::{AttrValue, EventRow, LinkRow, SpanId, SpanRow, TraceId};
use super::signals::{ExemplarRow, ExpBuckets, LogRow, MetricType, PointRow};

/// The resource attribute that names a service.
pub const SERVICE_NAME_KEY: &str = "service.name";
/// Service name of spans whose resource has none, as the OpenTelemetry SDKs default it.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// Why an OTLP payload was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OtlpError {
    #[error("{at}: trace_id must be 16 bytes, got {len}")]
    TraceIdLength { at: String, len: usize },
    #[error("{at}: trace_id must not be all zeroes")]
    ZeroTraceId { at: String },
    #[error("{at}: span_id must be 8 bytes, got {len}")]
    SpanIdLength { at: String, len: usize },
    #[error("{at}: span_id must not be all zeroes")]
    ZeroSpanId { at: String },
    #[error("{at}: parent_span_id must be empty or 8 bytes, got {len}")]
    ParentSpanIdLength { at: String, len: usize },
    #[error("{at}: {field} must be empty or {expected} bytes, got {len}")]
    LinkIdLength {
        at: String,
        field: &'static str,
        expected: usize,
        len: usize,
    },
    #[error("{at}: start_time_unix_nano {value} is past the year 2262 and cannot be stored")]
    TimeOutOfRange { at: String, value: u64 },
    #[error("{at}: {field} {value} is past the year 2262 and cannot be stored")]
    TimestampOutOfRange {
        at: String,
        field: &'static str,
        value: u64,
    },
    #[error("{at}: {field} must be empty or {expected} bytes, got {len}")]
    OptionalIdLength {
        at: String,
        field: &'static str,
        expected: usize,
        len: usize,
    },
    #[error("{at}: a metric must have a name")]
    EmptyMetricName { at: String },
    #[error(
        "{at}: bucket_counts must be empty or hold one count more than the {bounds} \
         explicit_bounds, got {len} counts"
    )]
    BucketCountsLength {
        at: String,
        bounds: usize,
        len: usize,
    },
}

/// Number of spans in an export request.
pub fn span_count(request: &ExportTraceServiceRequest) -> usize {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// Converts an export request into spans. Fails on the first invalid span.
pub fn spans_from_request(request: &ExportTraceServiceRequest) -> Result<Vec<SpanRow>, OtlpError> {
    let (no_resource, no_scope) = (Resource::default(), InstrumentationScope::default());
    let mut rows = Vec::new();
    for (ri, resource_spans) in request.resource_spans.iter().enumerate() {
        let resource = resource_spans.resource.as_ref().unwrap_or(&no_resource);
        let resource_attrs = convert_attrs(&resource.attributes);
        let service_name = resource_service_name(&resource_attrs);
        for (si, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let scope = scope_spans.scope.as_ref().unwrap_or(&no_scope);
            // What every span of this scope shares; convert_span fills in the rest.
            let shared = SpanRow {
                service_name: service_name.clone(),
                scope_name: scope.name.clone(),
                scope_version: scope.version.clone(),
                scope_attrs: convert_attrs(&scope.attributes),
                scope_dropped_attributes_count: scope.dropped_attributes_count,
                scope_schema_url: scope_spans.schema_url.clone(),
                resource_attrs: resource_attrs.clone(),
                resource_dropped_attributes_count: resource.dropped_attributes_count,
                resource_schema_url: resource_spans.schema_url.clone(),
                ..SpanRow::default()
            };
            for (i, span) in scope_spans.spans.iter().enumerate() {
                let at = || format!("resource_spans[{ri}].scope_spans[{si}].spans[{i}]");
                rows.push(convert_span(span, at, &shared)?);
            }
        }
    }
    Ok(rows)
}

fn convert_span(
    span: &Span,
    at: impl Fn() -> String,
    shared: &SpanRow,
) -> Result<SpanRow, OtlpError> {
    let trace_id: TraceId =
        span.trace_id
            .as_slice()
            .try_into()
            .map_err(|_| OtlpError::TraceIdLength {
                at: at(),
                len: span.trace_id.len(),
            })?;
    if trace_id == [0; 16] {
        return Err(OtlpError::ZeroTraceId { at: at() });
    }
    let span_id: SpanId =
        span.span_id
            .as_slice()
            .try_into()
            .map_err(|_| OtlpError::SpanIdLength {
                at: at(),
                len: span.span_id.len(),
            })?;
    if span_id == [0; 8] {
        return Err(OtlpError::ZeroSpanId { at: at() });
    }
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        8 => Some(span.parent_span_id.as_slice().try_into().unwrap_or([0; 8]))
            .filter(|p: &SpanId| *p != [0; 8]),
        len => return Err(OtlpError::ParentSpanIdLength { at: at(), len }),
    };
    let time = |value: u64| {
        i64::try_from(value).map_err(|_| OtlpError::TimeOutOfRange { at: at(), value })
    };
    let start = time(span.start_time_unix_nano)?;
    let end = time(span.end_time_unix_nano)?;
    let events = span
        .events
        .iter()
        .map(|e| {
            Ok(EventRow {
                time_unix_nano: time(e.time_unix_nano)?,
                name: e.name.clone(),
                attrs: convert_attrs(&e.attributes),
                dropped_attributes_count: e.dropped_attributes_count,
            })
        })
        .collect::<Result<_, OtlpError>>()?;
    let links = span
        .links
        .iter()
        .enumerate()
        .map(|(li, l)| {
            let id = |bytes: &[u8], field, expected: usize| -> Result<Vec<u8>, OtlpError> {
                match bytes.len() {
                    0 => Ok(vec![0; expected]),
                    n if n == expected => Ok(bytes.to_vec()),
                    len => Err(OtlpError::LinkIdLength {
                        at: format!("{}.links[{li}]", at()),
                        field,
                        expected,
                        len,
                    }),
                }
            };
            let trace_id = id(&l.trace_id, "trace_id", 16)?;
            let span_id = id(&l.span_id, "span_id", 8)?;
            Ok(LinkRow {
                trace_id: trace_id.try_into().unwrap_or([0; 16]),
                span_id: span_id.try_into().unwrap_or([0; 8]),
                trace_state: l.trace_state.clone(),
                attrs: convert_attrs(&l.attributes),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
        })
        .collect::<Result<_, OtlpError>>()?;
    Ok(SpanRow {
        trace_id,
        span_id,
        parent_span_id,
        trace_state: span.trace_state.clone(),
        name: span.name.clone(),
        kind: span.kind,
        status_code: span.status.as_ref().map(|s| s.code).unwrap_or_default(),
        status_message: span
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        flags: span.flags,
        dropped_attributes_count: span.dropped_attributes_count,
        dropped_events_count: span.dropped_events_count,
        dropped_links_count: span.dropped_links_count,
        span_attrs: convert_attrs(&span.attributes),
        events,
        links,
        ..shared.clone()
    })
}

/// Converts OTLP attributes, keeping each value's type. Attributes without a value are dropped.
/// Arrays and key-value lists become JSON text; bytes nested in them become hex strings.
pub fn convert_attrs(attrs: &[KeyValue]) -> Vec<(String, AttrValue)> {
    attrs
        .iter()
        .filter_map(|kv| {
            let value = kv.value.as_ref()?.value.as_ref()?;
            Some((kv.key.clone(), convert_value(value)))
        })
        .collect()
}

/// Converts one OTLP value as [`convert_attrs`] does.
fn convert_value(value: &Value) -> AttrValue {
    match value {
        Value::StringValue(s) => AttrValue::Str(s.clone()),
        Value::BoolValue(b) => AttrValue::Bool(*b),
        Value::IntValue(i) => AttrValue::Int(*i),
        Value::DoubleValue(f) => AttrValue::Float(*f),
        Value::BytesValue(b) => AttrValue::Bytes(b.clone()),
        other => AttrValue::Json(json_of(other).to_string()),
    }
}

/// The service a resource names in [`SERVICE_NAME_KEY`], or [`UNKNOWN_SERVICE`].
fn resource_service_name(resource_attrs: &[(String, AttrValue)]) -> String {
    resource_attrs
        .iter()
        .find_map(|(k, v)| match v {
            AttrValue::Str(s) if k == SERVICE_NAME_KEY => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_string())
}

/// An OTLP timestamp as stored: refused when past `i64::MAX` nanoseconds (the year 2262).
fn timestamp(value: u64, field: &'static str, at: &dyn Fn() -> String) -> Result<i64, OtlpError> {
    i64::try_from(value).map_err(|_| OtlpError::TimestampOutOfRange {
        at: at(),
        field,
        value,
    })
}

/// An optional trace or span id: empty or all zeroes is none, `N` bytes is the id, any other
/// length is refused.
fn optional_id<const N: usize>(
    bytes: &[u8],
    field: &'static str,
    at: &dyn Fn() -> String,
) -> Result<Option<[u8; N]>, OtlpError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let id: [u8; N] = bytes.try_into().map_err(|_| OtlpError::OptionalIdLength {
        at: at(),
        field,
        expected: N,
        len: bytes.len(),
    })?;
    Ok(Some(id).filter(|id| id.iter().any(|b| *b != 0)))
}

/// Number of log records in an export request.
pub fn log_count(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

/// Converts an export request into log rows. Fails on the first invalid record.
pub fn logs_from_request(request: &ExportLogsServiceRequest) -> Result<Vec<LogRow>, OtlpError> {
    let (no_resource, no_scope) = (Resource::default(), InstrumentationScope::default());
    let mut rows = Vec::with_capacity(log_count(request));
    for (ri, resource_logs) in request.resource_logs.iter().enumerate() {
        let resource = resource_logs.resource.as_ref().unwrap_or(&no_resource);
        let resource_attrs = convert_attrs(&resource.attributes);
        let service_name = resource_service_name(&resource_attrs);
        for (si, scope_logs) in resource_logs.scope_logs.iter().enumerate() {
            let scope = scope_logs.scope.as_ref().unwrap_or(&no_scope);
            // What every record of this scope shares; convert_log fills in the rest.
            let shared = LogRow {
                service_name: service_name.clone(),
                scope_name: scope.name.clone(),
                scope_version: scope.version.clone(),
                scope_attrs: convert_attrs(&scope.attributes),
                scope_schema_url: scope_logs.schema_url.clone(),
                resource_attrs: resource_attrs.clone(),
                resource_schema_url: resource_logs.schema_url.clone(),
                ..LogRow::default()
            };
            for (i, record) in scope_logs.log_records.iter().enumerate() {
                let at = || format!("resource_logs[{ri}].scope_logs[{si}].log_records[{i}]");
                rows.push(convert_log(record, &at, &shared)?);
            }
        }
    }
    Ok(rows)
}

fn convert_log(
    record: &LogRecord,
    at: &dyn Fn() -> String,
    shared: &LogRow,
) -> Result<LogRow, OtlpError> {
    let observed = timestamp(
        record.observed_time_unix_nano,
        "observed_time_unix_nano",
        at,
    )?;
    // OTLP allows a record without a time of its own; it then happened when it was observed.
    let time = match record.time_unix_nano {
        0 => observed,
        value => timestamp(value, "time_unix_nano", at)?,
    };
    Ok(LogRow {
        time_unix_nano: time,
        observed_time_unix_nano: observed,
        severity_number: record.severity_number,
        severity_text: record.severity_text.clone(),
        body: record
            .body
            .as_ref()
            .and_then(|body| body.value.as_ref())
            .map(convert_value),
        trace_id: optional_id(&record.trace_id, "trace_id", at)?,
        span_id: optional_id(&record.span_id, "span_id", at)?,
        flags: record.flags,
        event_name: record.event_name.clone(),
        dropped_attributes_count: record.dropped_attributes_count,
        attrs: convert_attrs(&record.attributes),
        ..shared.clone()
    })
}

/// Number of data points in an export request, over every metric type.
pub fn point_count(request: &ExportMetricsServiceRequest) -> usize {
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter_map(|m| m.data.as_ref())
        .map(|data| match data {
            Data::Gauge(g) => g.data_points.len(),
            Data::Sum(s) => s.data_points.len(),
            Data::Histogram(h) => h.data_points.len(),
            Data::ExponentialHistogram(h) => h.data_points.len(),
            Data::Summary(s) => s.data_points.len(),
        })
        .sum()
}

/// Converts an export request into data point rows, one per point of every metric type.
/// A metric without data has no rows. Fails on the first invalid metric or point.
pub fn points_from_request(
    request: &ExportMetricsServiceRequest,
) -> Result<Vec<PointRow>, OtlpError> {
    let (no_resource, no_scope) = (Resource::default(), InstrumentationScope::default());
    let mut rows = Vec::with_capacity(point_count(request));
    for (ri, resource_metrics) in request.resource_metrics.iter().enumerate() {
        let resource = resource_metrics.resource.as_ref().unwrap_or(&no_resource);
        let resource_attrs = convert_attrs(&resource.attributes);
        let service_name = resource_service_name(&resource_attrs);
        for (si, scope_metrics) in resource_metrics.scope_metrics.iter().enumerate() {
            let scope = scope_metrics.scope.as_ref().unwrap_or(&no_scope);
            for (mi, metric) in scope_metrics.metrics.iter().enumerate() {
                let at = || format!("resource_metrics[{ri}].scope_metrics[{si}].metrics[{mi}]");
                if metric.name.is_empty() {
                    return Err(OtlpError::EmptyMetricName { at: at() });
                }
                let Some(data) = &metric.data else {
                    continue;
                };
                // What every point of this metric shares; the point converters fill in the rest.
                let shared = PointRow {
                    metric_name: metric.name.clone(),
                    metric_type: metric_type(data),
                    description: metric.description.clone(),
                    unit: metric.unit.clone(),
                    service_name: service_name.clone(),
                    scope_name: scope.name.clone(),
                    scope_version: scope.version.clone(),
                    resource_attrs: resource_attrs.clone(),
                    ..PointRow::default()
                };
                convert_metric(data, &at, shared, &mut rows)?;
            }
        }
    }
    Ok(rows)
}

fn metric_type(data: &Data) -> MetricType {
    match data {
        Data::Gauge(_) => MetricType::Gauge,
        Data::Sum(_) => MetricType::Sum,
        Data::Histogram(_) => MetricType::Histogram,
        Data::ExponentialHistogram(_) => MetricType::ExponentialHistogram,
        Data::Summary(_) => MetricType::Summary,
    }
}

/// Appends a row per data point of one metric; `shared` holds the metric's fields.
fn convert_metric(
    data: &Data,
    at: &dyn Fn() -> String,
    shared: PointRow,
    rows: &mut Vec<PointRow>,
) -> Result<(), OtlpError> {
    let kind = shared.metric_type;
    match data {
        Data::Gauge(gauge) => push_points(&gauge.data_points, at, kind, rows, |point, at| {
            number_point(point, at, shared.clone())
        }),
        Data::Sum(sum) => {
            let shared = PointRow {
                temporality: Some(sum.aggregation_temporality),
                monotonic: Some(sum.is_monotonic),
                ..shared
            };
            push_points(&sum.data_points, at, kind, rows, |point, at| {
                number_point(point, at, shared.clone())
            })
        }
        Data::Histogram(histogram) => {
            let shared = PointRow {
                temporality: Some(histogram.aggregation_temporality),
                ..shared
            };
            push_points(&histogram.data_points, at, kind, rows, |point, at| {
                histogram_point(point, at, shared.clone())
            })
        }
        Data::ExponentialHistogram(histogram) => {
            let shared = PointRow {
                temporality: Some(histogram.aggregation_temporality),
                ..shared
            };
            push_points(&histogram.data_points, at, kind, rows, |point, at| {
                exponential_point(point, at, shared.clone())
            })
        }
        Data::Summary(summary) => push_points(&summary.data_points, at, kind, rows, |point, at| {
            summary_point(point, at, shared.clone())
        }),
    }
}

/// Converts each of a metric's points, naming a refused one by its position, e.g.
/// `resource_metrics[0].scope_metrics[0].metrics[1].histogram.data_points[0]`.
fn push_points<P>(
    points: &[P],
    at: &dyn Fn() -> String,
    kind: MetricType,
    rows: &mut Vec<PointRow>,
    convert: impl Fn(&P, &dyn Fn() -> String) -> Result<PointRow, OtlpError>,
) -> Result<(), OtlpError> {
    for (i, point) in points.iter().enumerate() {
        let point_at = || format!("{}.{}.data_points[{i}]", at(), kind.name());
        rows.push(convert(point, &point_at)?);
    }
    Ok(())
}

/// The fields every data point type has: attributes, times, flags and exemplars.
fn with_common_fields(
    shared: PointRow,
    at: &dyn Fn() -> String,
    attributes: &[KeyValue],
    (start_time, time): (u64, u64),
    flags: u32,
    exemplars: &[Exemplar],
) -> Result<PointRow, OtlpError> {
    let exemplars = exemplars
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let exemplar_at = || format!("{}.exemplars[{i}]", at());
            convert_exemplar(e, &exemplar_at).transpose()
        })
        .collect::<Result<_, OtlpError>>()?;
    Ok(PointRow {
        start_time_unix_nano: timestamp(start_time, "start_time_unix_nano", at)?,
        time_unix_nano: timestamp(time, "time_unix_nano", at)?,
        flags,
        attrs: convert_attrs(attributes),
        exemplars,
        ..shared
    })
}

/// A gauge or sum point. Integers keep their exact value in `value_int`. A point without a
/// value (invalid in OTLP) is kept with both null.
fn number_point(
    point: &NumberDataPoint,
    at: &dyn Fn() -> String,
    shared: PointRow,
) -> Result<PointRow, OtlpError> {
    let (value, value_int) = match point.value {
        Some(NumberValue::AsInt(i)) => (Some(i as f64), Some(i)),
        Some(NumberValue::AsDouble(d)) => (Some(d), None),
        None => (None, None),
    };
    let row = with_common_fields(
        shared,
        at,
        &point.attributes,
        (point.start_time_unix_nano, point.time_unix_nano),
        point.flags,
        &point.exemplars,
    )?;
    Ok(PointRow {
        value,
        value_int,
        ..row
    })
}

/// A histogram point. Its buckets must number one more than its bounds, or be absent.
fn histogram_point(
    point: &HistogramDataPoint,
    at: &dyn Fn() -> String,
    shared: PointRow,
) -> Result<PointRow, OtlpError> {
    let (bounds, counts) = (&point.explicit_bounds, &point.bucket_counts);
    if !counts.is_empty() && counts.len() != bounds.len() + 1 {
        return Err(OtlpError::BucketCountsLength {
            at: at(),
            bounds: bounds.len(),
            len: counts.len(),
        });
    }
    let row = with_common_fields(
        shared,
        at,
        &point.attributes,
        (point.start_time_unix_nano, point.time_unix_nano),
        point.flags,
        &point.exemplars,
    )?;
    Ok(PointRow {
        count: Some(point.count),
        sum: point.sum,
        min: point.min,
        max: point.max,
        explicit_bounds: bounds.clone(),
        bucket_counts: counts.clone(),
        ..row
    })
}

/// An exponential histogram point; absent bucket ranges read as offset 0 with no counts.
fn exponential_point(
    point: &ExponentialHistogramDataPoint,
    at: &dyn Fn() -> String,
    shared: PointRow,
) -> Result<PointRow, OtlpError> {
    let row = with_common_fields(
        shared,
        at,
        &point.attributes,
        (point.start_time_unix_nano, point.time_unix_nano),
        point.flags,
        &point.exemplars,
    )?;
    let (positive, negative) = (point.positive.as_ref(), point.negative.as_ref());
    Ok(PointRow {
        count: Some(point.count),
        sum: point.sum,
        min: point.min,
        max: point.max,
        exp: Some(ExpBuckets {
            scale: point.scale,
            zero_count: point.zero_count,
            zero_threshold: point.zero_threshold,
            positive_offset: positive.map_or(0, |b| b.offset),
            positive_counts: positive
                .map(|b| b.bucket_counts.clone())
                .unwrap_or_default(),
            negative_offset: negative.map_or(0, |b| b.offset),
            negative_counts: negative
                .map(|b| b.bucket_counts.clone())
                .unwrap_or_default(),
        }),
        ..row
    })
}

/// A summary point; summaries have no exemplars.
fn summary_point(
    point: &SummaryDataPoint,
    at: &dyn Fn() -> String,
    shared: PointRow,
) -> Result<PointRow, OtlpError> {
    let row = with_common_fields(
        shared,
        at,
        &point.attributes,
        (point.start_time_unix_nano, point.time_unix_nano),
        point.flags,
        &[],
    )?;
    Ok(PointRow {
        count: Some(point.count),
        sum: Some(point.sum),
        quantiles: point
            .quantile_values
            .iter()
            .map(|q| (q.quantile, q.value))
            .collect(),
        ..row
    })
}

/// An exemplar, or none when it has no value (OTLP calls such an exemplar invalid; it is
/// dropped rather than refusing the request). Its filtered attributes are kept in the row but
/// not stored in the table.
fn convert_exemplar(
    exemplar: &Exemplar,
    at: &dyn Fn() -> String,
) -> Result<Option<ExemplarRow>, OtlpError> {
    let (value, value_int) = match exemplar.value {
        Some(ExemplarValue::AsInt(i)) => (i as f64, Some(i)),
        Some(ExemplarValue::AsDouble(d)) => (d, None),
        None => return Ok(None),
    };
    Ok(Some(ExemplarRow {
        time_unix_nano: timestamp(exemplar.time_unix_nano, "time_unix_nano", at)?,
        value,
        value_int,
        trace_id: optional_id(&exemplar.trace_id, "trace_id", at)?,
        span_id: optional_id(&exemplar.span_id, "span_id", at)?,
        attrs: convert_attrs(&exemplar.filtered_attributes),
    }))
}

fn json_of(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    let any = |v: &AnyValue| v.value.as_ref().map(json_of).unwrap_or(J::Null);
    match value {
        Value::StringValue(s) => J::String(s.clone()),
        Value::BoolValue(b) => J::Bool(*b),
        Value::IntValue(i) => J::from(*i),
        Value::DoubleValue(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::ArrayValue(a) => J::Array(a.values.iter().map(any).collect()),
        Value::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map(any).unwrap_or(J::Null),
                    )
                })
                .collect(),
        ),
        Value::BytesValue(b) => J::String(hex::encode(b)),
        Value::StringValueStrindex(i) => J::from(*i),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, Metric, ResourceMetrics, ScopeMetrics,
    };
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    /// A minimal span of trace 0x01…, with the given id byte, parent id byte and start time.
    pub(crate) fn span(id: u8, parent: Option<u8>, start: i64) -> SpanRow {
        SpanRow {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_span_id: parent.map(|p| [p; 8]),
            name: format!("span-{id}"),
            kind: 2,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1,
            service_name: "svc".into(),
            ..SpanRow::default()
        }
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(SERVICE_NAME_KEY, Value::StringValue("api".into()))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn otlp_span(trace_id: Vec<u8>, span_id: Vec<u8>) -> Span {
        Span {
            trace_id,
            span_id,
            name: "GET /".into(),
            attributes: vec![
                kv("http.status_code", Value::IntValue(500)),
                kv("code", Value::StringValue("500".into())),
                kv(
                    "tags",
                    Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(Value::IntValue(1)),
                        }],
                    }),
                ),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn attribute_types_survive_conversion() {
        let rows = spans_from_request(&request(vec![otlp_span(vec![7; 16], vec![8; 8])])).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].service_name, "api");
        assert_eq!(
            rows[0].span_attrs,
            vec![
                ("http.status_code".to_string(), AttrValue::Int(500)),
                ("code".to_string(), AttrValue::Str("500".into())),
                ("tags".to_string(), AttrValue::Json("[1]".into())),
            ]
        );
    }

    #[test]
    fn empty_trace_id_is_refused_with_its_position() {
        let err = spans_from_request(&request(vec![otlp_span(vec![], vec![8; 8])])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource_spans[0].scope_spans[0].spans[0]: trace_id must be 16 bytes, got 0"
        );
    }

    #[test]
    fn zero_span_id_is_refused() {
        let err =
            spans_from_request(&request(vec![otlp_span(vec![7; 16], vec![0; 8])])).unwrap_err();
        assert!(matches!(err, OtlpError::ZeroSpanId { .. }));
    }

    fn api_resource() -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv(SERVICE_NAME_KEY, Value::StringValue("api".into()))],
            ..Default::default()
        })
    }

    fn logs_request(log_records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: api_resource(),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn metrics_request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: api_resource(),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn gauge(name: &str, point: NumberDataPoint) -> Metric {
        metric(
            name,
            Data::Gauge(Gauge {
                data_points: vec![point],
            }),
        )
    }

    fn int_gauge(name: &str, value: i64) -> Metric {
        gauge(
            name,
            NumberDataPoint {
                time_unix_nano: 10,
                value: Some(NumberValue::AsInt(value)),
                ..Default::default()
            },
        )
    }

    fn histogram(name: &str, point: HistogramDataPoint) -> Metric {
        metric(
            name,
            Data::Histogram(Histogram {
                data_points: vec![point],
                aggregation_temporality: 2,
            }),
        )
    }

    #[test]
    fn int_gauge_keeps_its_value_exact() {
        let big = i64::MAX - 1;
        let rows = points_from_request(&metrics_request(vec![int_gauge("queue", big)])).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].metric_type, MetricType::Gauge);
        assert_eq!(rows[0].service_name, "api");
        assert_eq!(rows[0].value_int, Some(big));
        assert_eq!(rows[0].value, Some(big as f64));
    }

    #[test]
    fn histogram_buckets_are_kept_exactly() {
        let point = HistogramDataPoint {
            time_unix_nano: 10,
            count: 6,
            sum: Some(12.5),
            explicit_bounds: vec![0.5, 2.5, 10.0],
            bucket_counts: vec![1, 2, 0, 3],
            ..Default::default()
        };
        let request = metrics_request(vec![histogram("latency", point)]);
        let rows = points_from_request(&request).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].metric_type, MetricType::Histogram);
        assert_eq!(rows[0].explicit_bounds, vec![0.5, 2.5, 10.0]);
        assert_eq!(rows[0].bucket_counts, vec![1, 2, 0, 3]);
        assert_eq!((rows[0].count, rows[0].sum), (Some(6), Some(12.5)));
        assert_eq!((rows[0].min, rows[0].max), (None, None));
        assert_eq!(rows[0].temporality, Some(2));
    }

    #[test]
    fn histogram_with_wrong_bucket_count_is_refused_with_its_position() {
        let bad = HistogramDataPoint {
            explicit_bounds: vec![1.0, 2.0],
            bucket_counts: vec![1, 1],
            ..Default::default()
        };
        let request = metrics_request(vec![int_gauge("queue", 1), histogram("latency", bad)]);
        let err = points_from_request(&request).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource_metrics[0].scope_metrics[0].metrics[1].histogram.data_points[0]: \
             bucket_counts must be empty or hold one count more than the 2 explicit_bounds, \
             got 2 counts"
        );
    }

    #[test]
    fn exemplar_with_short_span_id_is_refused_with_its_position() {
        let point = NumberDataPoint {
            value: Some(NumberValue::AsDouble(1.0)),
            exemplars: vec![Exemplar {
                value: Some(ExemplarValue::AsInt(3)),
                span_id: vec![1; 4],
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = points_from_request(&metrics_request(vec![gauge("queue", point)])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0].exemplars[0]: \
             span_id must be empty or 8 bytes, got 4"
        );
    }

    #[test]
    fn metric_without_a_name_is_refused() {
        let err = points_from_request(&metrics_request(vec![int_gauge("", 1)])).unwrap_err();
        assert!(matches!(err, OtlpError::EmptyMetricName { .. }));
    }

    #[test]
    fn log_with_three_byte_trace_id_is_refused_with_its_position() {
        let good = LogRecord {
            time_unix_nano: 5,
            ..Default::default()
        };
        let bad = LogRecord {
            trace_id: vec![1, 2, 3],
            ..Default::default()
        };
        let err = logs_from_request(&logs_request(vec![good, bad])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource_logs[0].scope_logs[0].log_records[1]: \
             trace_id must be empty or 16 bytes, got 3"
        );
    }

    #[test]
    fn log_without_time_takes_observed_time() {
        let record = LogRecord {
            observed_time_unix_nano: 42,
            ..Default::default()
        };
        let rows = logs_from_request(&logs_request(vec![record])).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].time_unix_nano, 42);
        assert_eq!(rows[0].observed_time_unix_nano, 42);
        assert_eq!(rows[0].service_name, "api");
    }

    #[test]
    fn structured_log_body_becomes_json() {
        let names = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Value::StringValue("ada".into())),
                },
                AnyValue {
                    value: Some(Value::IntValue(1)),
                },
            ],
        });
        let body = Value::KvlistValue(KeyValueList {
            values: vec![kv("user", names)],
        });
        let record = LogRecord {
            body: Some(AnyValue { value: Some(body) }),
            ..Default::default()
        };
        let rows = logs_from_request(&logs_request(vec![record])).unwrap();
        assert_eq!(
            rows[0].body,
            Some(AttrValue::Json(r#"{"user":["ada",1]}"#.into()))
        );
    }
}
