//! OTLP trace export requests → [`SpanRow`]s, validating as it goes.
//!
//! A request with any invalid span is refused whole, so an export either lands completely or
//! not at all; the error names the offending span by its position in the request.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::rows::{AttrValue, EventRow, LinkRow, SpanId, SpanRow, TraceId};

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
        let service_name = resource_attrs
            .iter()
            .find_map(|(k, v)| match v {
                AttrValue::Str(s) if k == SERVICE_NAME_KEY => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_else(|| UNKNOWN_SERVICE.to_string());
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
            let value = match value {
                Value::StringValue(s) => AttrValue::Str(s.clone()),
                Value::BoolValue(b) => AttrValue::Bool(*b),
                Value::IntValue(i) => AttrValue::Int(*i),
                Value::DoubleValue(f) => AttrValue::Float(*f),
                Value::BytesValue(b) => AttrValue::Bytes(b.clone()),
                other => AttrValue::Json(json_of(other).to_string()),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
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
    use opentelemetry_proto::tonic::common::v1::ArrayValue;
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
}
