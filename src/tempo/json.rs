//! JSON encoding of tempopb messages as Tempo writes them.
//!
//! Tempo's HTTP API answers with gogo `jsonpb` output (`EmitDefaults=false`), and the clients
//! that read it (Grafana, tempo-cli, tempo-vulture) decode with strict jsonpb decoders that
//! reject unknown fields. This module reproduces that output field by field: proto field names
//! (the json_name for OTLP's snake_case fields, tempopb names verbatim), zero scalars and empty
//! repeated fields left out, 64-bit integers as decimal strings, bytes as padded standard base64
//! (trace and span IDs included, unlike OTLP/JSON) and enums by name.
//!
//! It only encodes messages; which message an endpoint answers with, and with which status code,
//! belongs to the HTTP handlers.
//!
//! ```
//! use spanlake::tempo::json::TempoJson;
//! use spanlake::tempopb::TraceByIdResponse;
//!
//! let not_found = TraceByIdResponse { trace: Some(Default::default()), ..Default::default() };
//! assert_eq!(not_found.tempo_json().to_string(), r#"{"trace":{}}"#);
//! ```

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span, status};
use serde_json::{Map, Value};

use crate::tempopb;

/// A message that encodes to JSON exactly as Tempo's HTTP API writes it.
pub trait TempoJson {
    /// The gogo `jsonpb` (`EmitDefaults=false`) encoding of `self`.
    fn tempo_json(&self) -> Value;
}

/// The v1 `/api/traces/{id}` body: the trace with `resourceSpans` renamed to `batches`.
///
/// Tempo renames the key textually in its jsonpb output, so an empty trace stays `{}`.
pub fn trace_v1_json(trace: &tempopb::Trace) -> Value {
    Object::new()
        .list("batches", encode_all(&trace.resource_spans))
        .finish()
}

/// One JSON object under construction; each method leaves out what gogo `jsonpb` leaves out.
///
/// Fields are inserted in proto field order, which is Go's key order when the map keeps it.
struct Object(Map<String, Value>);

impl Object {
    fn new() -> Self {
        Self(Map::new())
    }

    fn finish(self) -> Value {
        Value::Object(self.0)
    }

    /// A field that is always present (a set oneof, a result list).
    fn put(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_owned(), value);
        self
    }

    fn put_unless(self, is_default: bool, key: &str, value: impl FnOnce() -> Value) -> Self {
        if is_default {
            self
        } else {
            self.put(key, value())
        }
    }

    fn string(self, key: &str, value: &str) -> Self {
        self.put_unless(value.is_empty(), key, || Value::from(value))
    }

    /// uint32, fixed32: a JSON number.
    fn uint32(self, key: &str, value: u32) -> Self {
        self.put_unless(value == 0, key, || Value::from(value))
    }

    fn int32(self, key: &str, value: i32) -> Self {
        self.put_unless(value == 0, key, || Value::from(value))
    }

    /// uint64, fixed64: a quoted decimal string.
    fn uint64(self, key: &str, value: u64) -> Self {
        self.put_unless(value == 0, key, || Value::String(value.to_string()))
    }

    fn bytes(self, key: &str, value: &[u8]) -> Self {
        self.put_unless(value.is_empty(), key, || base64(value))
    }

    /// An enum by name; a value without a name (newer than our proto) as a bare number, as Go does.
    fn enumeration(self, key: &str, value: i32, name: Option<&str>) -> Self {
        self.put_unless(value == 0, key, || {
            name.map_or(Value::from(value), Value::from)
        })
    }

    /// A sub-message: emitted whenever it is set, even when all its fields are zero (`{}`).
    fn message(self, key: &str, value: Option<&impl TempoJson>) -> Self {
        match value {
            Some(message) => self.put(key, message.tempo_json()),
            None => self,
        }
    }

    /// A repeated field, left out when empty (a nil Go slice).
    fn list(self, key: &str, items: Vec<Value>) -> Self {
        self.put_unless(items.is_empty(), key, || Value::Array(items))
    }

    /// A result list Tempo always allocates, so it reads `[]` when empty.
    fn result_list(self, key: &str, items: Vec<Value>) -> Self {
        self.put(key, Value::Array(items))
    }

    /// A map field as an object with sorted keys, left out when empty.
    fn map(self, key: &str, entries: &HashMap<String, impl TempoJson>) -> Self {
        let mut sorted: Vec<_> = entries.iter().collect();
        sorted.sort_unstable_by_key(|(name, _)| *name);
        let object = sorted
            .into_iter()
            .map(|(name, value)| (name.clone(), value.tempo_json()))
            .collect();
        self.put_unless(entries.is_empty(), key, || Value::Object(object))
    }
}

fn encode_all<T: TempoJson>(items: &[T]) -> Vec<Value> {
    items.iter().map(TempoJson::tempo_json).collect()
}

fn strings(items: &[String]) -> Vec<Value> {
    items
        .iter()
        .map(|item| Value::from(item.as_str()))
        .collect()
}

/// Bytes as Go's `encoding/json` writes `[]byte`: standard alphabet, padded.
fn base64(bytes: &[u8]) -> Value {
    Value::String(crate::ids::base64(bytes))
}

/// A double as a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"` where JSON has no number.
fn double(value: f64) -> Value {
    if value.is_nan() {
        Value::from("NaN")
    } else if value == f64::INFINITY {
        Value::from("Infinity")
    } else if value == f64::NEG_INFINITY {
        Value::from("-Infinity")
    } else {
        Value::from(value)
    }
}

// ---- tempopb ----

impl TempoJson for tempopb::Trace {
    fn tempo_json(&self) -> Value {
        Object::new()
            .list("resourceSpans", encode_all(&self.resource_spans))
            .finish()
    }
}

impl TempoJson for tempopb::TraceByIdResponse {
    fn tempo_json(&self) -> Value {
        let status = tempopb::PartialStatus::try_from(self.status).ok();
        Object::new()
            .message("trace", self.trace.as_ref())
            .message("metrics", self.metrics.as_ref())
            .enumeration("status", self.status, status.map(|s| s.as_str_name()))
            .string("message", &self.message)
            .finish()
    }
}

impl TempoJson for tempopb::TraceByIdMetrics {
    fn tempo_json(&self) -> Value {
        Object::new()
            .uint64("inspectedBytes", self.inspected_bytes)
            .finish()
    }
}

impl TempoJson for tempopb::SearchResponse {
    fn tempo_json(&self) -> Value {
        Object::new()
            .result_list("traces", encode_all(&self.traces))
            .message("metrics", self.metrics.as_ref())
            .finish()
    }
}

impl TempoJson for tempopb::TraceSearchMetadata {
    fn tempo_json(&self) -> Value {
        Object::new()
            .string("traceID", &self.trace_id)
            .string("rootServiceName", &self.root_service_name)
            .string("rootTraceName", &self.root_trace_name)
            .uint64("startTimeUnixNano", self.start_time_unix_nano)
            .uint32("durationMs", self.duration_ms)
            .message("spanSet", self.span_set.as_ref())
            .list("spanSets", encode_all(&self.span_sets))
            .map("serviceStats", &self.service_stats)
            .finish()
    }
}

impl TempoJson for tempopb::ServiceStats {
    fn tempo_json(&self) -> Value {
        Object::new()
            .uint32("spanCount", self.span_count)
            .uint32("errorCount", self.error_count)
            .finish()
    }
}

impl TempoJson for tempopb::SpanSet {
    fn tempo_json(&self) -> Value {
        Object::new()
            .list("spans", encode_all(&self.spans))
            .uint32("matched", self.matched)
            .list("attributes", encode_all(&self.attributes))
            .finish()
    }
}

impl TempoJson for tempopb::Span {
    fn tempo_json(&self) -> Value {
        Object::new()
            .string("spanID", &self.span_id)
            .string("name", &self.name)
            .uint64("startTimeUnixNano", self.start_time_unix_nano)
            .uint64("durationNanos", self.duration_nanos)
            .list("attributes", encode_all(&self.attributes))
            .finish()
    }
}

impl TempoJson for tempopb::SearchMetrics {
    fn tempo_json(&self) -> Value {
        Object::new()
            .uint32("inspectedTraces", self.inspected_traces)
            .uint64("inspectedBytes", self.inspected_bytes)
            .uint32("totalBlocks", self.total_blocks)
            .uint32("completedJobs", self.completed_jobs)
            .uint32("totalJobs", self.total_jobs)
            .uint64("totalBlockBytes", self.total_block_bytes)
            .uint64("inspectedSpans", self.inspected_spans)
            .finish()
    }
}

impl TempoJson for tempopb::QueryRangeResponse {
    fn tempo_json(&self) -> Value {
        let status = tempopb::PartialStatus::try_from(self.status).ok();
        Object::new()
            .result_list("series", encode_all(&self.series))
            .put("metrics", self.metrics.unwrap_or_default().tempo_json())
            .enumeration("status", self.status, status.map(|s| s.as_str_name()))
            .string("message", &self.message)
            .finish()
    }
}

impl TempoJson for tempopb::TimeSeries {
    fn tempo_json(&self) -> Value {
        Object::new()
            .list("labels", encode_all(&self.labels))
            .list("samples", encode_all(&self.samples))
            .list("exemplars", encode_all(&self.exemplars))
            .finish()
    }
}

impl TempoJson for tempopb::Sample {
    fn tempo_json(&self) -> Value {
        Object::new()
            .put_unless(self.timestamp_ms == 0, "timestampMs", || {
                Value::String(self.timestamp_ms.to_string())
            })
            .put_unless(self.value == 0.0, "value", || double(self.value))
            .finish()
    }
}

impl TempoJson for tempopb::Exemplar {
    fn tempo_json(&self) -> Value {
        Object::new()
            .list("labels", encode_all(&self.labels))
            .put_unless(self.value == 0.0, "value", || double(self.value))
            .put_unless(self.timestamp_ms == 0, "timestampMs", || {
                Value::String(self.timestamp_ms.to_string())
            })
            .finish()
    }
}

/// An instant response: `series` is left out when empty (Tempo's nil list), `metrics` never.
impl TempoJson for tempopb::QueryInstantResponse {
    fn tempo_json(&self) -> Value {
        let status = tempopb::PartialStatus::try_from(self.status).ok();
        Object::new()
            .list("series", encode_all(&self.series))
            .put("metrics", self.metrics.unwrap_or_default().tempo_json())
            .enumeration("status", self.status, status.map(|s| s.as_str_name()))
            .string("message", &self.message)
            .finish()
    }
}

impl TempoJson for tempopb::InstantSeries {
    fn tempo_json(&self) -> Value {
        Object::new()
            .list("labels", encode_all(&self.labels))
            .put_unless(self.value == 0.0, "value", || double(self.value))
            .finish()
    }
}

impl TempoJson for tempopb::SearchTagsResponse {
    fn tempo_json(&self) -> Value {
        Object::new()
            .result_list("tagNames", strings(&self.tag_names))
            .message("metrics", self.metrics.as_ref())
            .finish()
    }
}

impl TempoJson for tempopb::SearchTagsV2Response {
    fn tempo_json(&self) -> Value {
        Object::new()
            .result_list("scopes", encode_all(&self.scopes))
            .message("metrics", self.metrics.as_ref())
            .finish()
    }
}

impl TempoJson for tempopb::SearchTagsV2Scope {
    fn tempo_json(&self) -> Value {
        Object::new()
            .string("name", &self.name)
            .list("tags", strings(&self.tags))
            .finish()
    }
}

impl TempoJson for tempopb::SearchTagValuesResponse {
    fn tempo_json(&self) -> Value {
        Object::new()
            .result_list("tagValues", strings(&self.tag_values))
            .message("metrics", self.metrics.as_ref())
            .finish()
    }
}

impl TempoJson for tempopb::SearchTagValuesV2Response {
    fn tempo_json(&self) -> Value {
        Object::new()
            .result_list("tagValues", encode_all(&self.tag_values))
            .message("metrics", self.metrics.as_ref())
            .finish()
    }
}

impl TempoJson for tempopb::TagValue {
    fn tempo_json(&self) -> Value {
        Object::new()
            .string("type", &self.r#type)
            .string("value", &self.value)
            .finish()
    }
}

impl TempoJson for tempopb::MetadataMetrics {
    fn tempo_json(&self) -> Value {
        Object::new()
            .uint64("inspectedBytes", self.inspected_bytes)
            .uint32("totalJobs", self.total_jobs)
            .uint32("completedJobs", self.completed_jobs)
            .uint32("totalBlocks", self.total_blocks)
            .uint64("totalBlockBytes", self.total_block_bytes)
            .finish()
    }
}

// ---- OTLP trace ----

impl TempoJson for ResourceSpans {
    fn tempo_json(&self) -> Value {
        Object::new()
            .message("resource", self.resource.as_ref())
            .list("scopeSpans", encode_all(&self.scope_spans))
            .string("schemaUrl", &self.schema_url)
            .finish()
    }
}

impl TempoJson for ScopeSpans {
    fn tempo_json(&self) -> Value {
        Object::new()
            .message("scope", self.scope.as_ref())
            .list("spans", encode_all(&self.spans))
            .string("schemaUrl", &self.schema_url)
            .finish()
    }
}

impl TempoJson for opentelemetry_proto::tonic::trace::v1::Span {
    fn tempo_json(&self) -> Value {
        let kind = span::SpanKind::try_from(self.kind).ok();
        Object::new()
            .bytes("traceId", &self.trace_id)
            .bytes("spanId", &self.span_id)
            .string("traceState", &self.trace_state)
            .bytes("parentSpanId", &self.parent_span_id)
            .string("name", &self.name)
            .enumeration("kind", self.kind, kind.map(|k| k.as_str_name()))
            .uint64("startTimeUnixNano", self.start_time_unix_nano)
            .uint64("endTimeUnixNano", self.end_time_unix_nano)
            .list("attributes", encode_all(&self.attributes))
            .uint32("droppedAttributesCount", self.dropped_attributes_count)
            .list("events", encode_all(&self.events))
            .uint32("droppedEventsCount", self.dropped_events_count)
            .list("links", encode_all(&self.links))
            .uint32("droppedLinksCount", self.dropped_links_count)
            .message("status", self.status.as_ref())
            .uint32("flags", self.flags)
            .finish()
    }
}

impl TempoJson for span::Event {
    fn tempo_json(&self) -> Value {
        Object::new()
            .uint64("timeUnixNano", self.time_unix_nano)
            .string("name", &self.name)
            .list("attributes", encode_all(&self.attributes))
            .uint32("droppedAttributesCount", self.dropped_attributes_count)
            .finish()
    }
}

impl TempoJson for span::Link {
    fn tempo_json(&self) -> Value {
        Object::new()
            .bytes("traceId", &self.trace_id)
            .bytes("spanId", &self.span_id)
            .string("traceState", &self.trace_state)
            .list("attributes", encode_all(&self.attributes))
            .uint32("droppedAttributesCount", self.dropped_attributes_count)
            .uint32("flags", self.flags)
            .finish()
    }
}

impl TempoJson for Status {
    fn tempo_json(&self) -> Value {
        let code = status::StatusCode::try_from(self.code).ok();
        Object::new()
            .string("message", &self.message)
            .enumeration("code", self.code, code.map(|c| c.as_str_name()))
            .finish()
    }
}

// ---- OTLP resource and common ----

impl TempoJson for Resource {
    fn tempo_json(&self) -> Value {
        Object::new()
            .list("attributes", encode_all(&self.attributes))
            .uint32("droppedAttributesCount", self.dropped_attributes_count)
            .list("entityRefs", encode_all(&self.entity_refs))
            .finish()
    }
}

impl TempoJson for EntityRef {
    fn tempo_json(&self) -> Value {
        Object::new()
            .string("schemaUrl", &self.schema_url)
            .string("type", &self.r#type)
            .list("idKeys", strings(&self.id_keys))
            .list("descriptionKeys", strings(&self.description_keys))
            .finish()
    }
}

impl TempoJson for InstrumentationScope {
    fn tempo_json(&self) -> Value {
        Object::new()
            .string("name", &self.name)
            .string("version", &self.version)
            .list("attributes", encode_all(&self.attributes))
            .uint32("droppedAttributesCount", self.dropped_attributes_count)
            .finish()
    }
}

impl TempoJson for KeyValue {
    fn tempo_json(&self) -> Value {
        Object::new()
            .string("key", &self.key)
            .message("value", self.value.as_ref())
            .int32("keyStrindex", self.key_strindex)
            .finish()
    }
}

/// The oneof is emitted whenever it is set, zero values included (`{"intValue":"0"}`).
impl TempoJson for AnyValue {
    fn tempo_json(&self) -> Value {
        use any_value::Value as V;
        let Some(value) = &self.value else {
            return Object::new().finish();
        };
        let (key, json) = match value {
            V::StringValue(s) => ("stringValue", Value::from(s.as_str())),
            V::BoolValue(b) => ("boolValue", Value::Bool(*b)),
            V::IntValue(i) => ("intValue", Value::String(i.to_string())),
            V::DoubleValue(d) => ("doubleValue", double(*d)),
            V::ArrayValue(array) => ("arrayValue", array.tempo_json()),
            V::KvlistValue(list) => ("kvlistValue", list.tempo_json()),
            V::BytesValue(bytes) => ("bytesValue", base64(bytes)),
            V::StringValueStrindex(index) => ("stringValueStrindex", Value::from(*index)),
        };
        Object::new().put(key, json).finish()
    }
}

impl TempoJson for ArrayValue {
    fn tempo_json(&self) -> Value {
        Object::new()
            .list("values", encode_all(&self.values))
            .finish()
    }
}

impl TempoJson for KeyValueList {
    fn tempo_json(&self) -> Value {
        Object::new()
            .list("values", encode_all(&self.values))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
    use serde_json::json;

    use super::*;

    fn attr(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn string_attr(key: &str, value: &str) -> KeyValue {
        attr(key, any_value::Value::StringValue(value.to_owned()))
    }

    fn json_of(value: any_value::Value) -> Value {
        AnyValue { value: Some(value) }.tempo_json()
    }

    fn one_span_trace(span: OtlpSpan) -> tempopb::Trace {
        tempopb::Trace {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attr("service.name", "checkout")],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn otlp_span_encodes_every_field_kind_as_tempo_does() {
        let span = OtlpSpan {
            trace_id: (1..=16).collect(),
            span_id: vec![0xff; 8],
            trace_state: "vendor=x".to_owned(),
            parent_span_id: vec![0, 0, 0, 0, 0, 0, 0, 1],
            flags: 0x301,
            name: "GET /cart".to_owned(),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_500_000_000,
            attributes: vec![attr("http.status_code", any_value::Value::IntValue(200))],
            dropped_attributes_count: 2,
            events: vec![span::Event {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: "retry".to_owned(),
                attributes: vec![attr("attempt", any_value::Value::IntValue(0))],
                dropped_attributes_count: 0,
            }],
            dropped_events_count: 3,
            links: vec![span::Link {
                trace_id: vec![0xab; 16],
                span_id: vec![0xcd; 8],
                trace_state: String::new(),
                attributes: vec![],
                dropped_attributes_count: 1,
                flags: 1,
            }],
            dropped_links_count: 0,
            status: Some(Status {
                message: "boom".to_owned(),
                code: status::StatusCode::Error as i32,
            }),
        };
        assert_eq!(
            span.tempo_json(),
            json!({
                "traceId": "AQIDBAUGBwgJCgsMDQ4PEA==",
                "spanId": "//////////8=",
                "traceState": "vendor=x",
                "parentSpanId": "AAAAAAAAAAE=",
                "name": "GET /cart",
                "kind": "SPAN_KIND_SERVER",
                "startTimeUnixNano": "1700000000000000000",
                "endTimeUnixNano": "1700000000500000000",
                "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}],
                "droppedAttributesCount": 2,
                "events": [{
                    "timeUnixNano": "1700000000100000000",
                    "name": "retry",
                    "attributes": [{"key": "attempt", "value": {"intValue": "0"}}]
                }],
                "droppedEventsCount": 3,
                "links": [{
                    "traceId": "q6urq6urq6urq6urq6urqw==",
                    "spanId": "zc3Nzc3Nzc0=",
                    "droppedAttributesCount": 1,
                    "flags": 1
                }],
                "status": {"message": "boom", "code": "STATUS_CODE_ERROR"},
                "flags": 769
            })
        );
    }

    #[test]
    fn otlp_span_omits_zero_fields_but_keeps_an_empty_status() {
        let span = OtlpSpan {
            span_id: vec![1; 8],
            kind: span::SpanKind::Unspecified as i32,
            status: Some(Status::default()),
            ..Default::default()
        };
        assert_eq!(
            span.tempo_json(),
            json!({"spanId": "AQEBAQEBAQE=", "status": {}})
        );
    }

    #[test]
    fn unknown_enum_value_is_a_bare_number() {
        let span = OtlpSpan {
            kind: 9,
            ..Default::default()
        };
        assert_eq!(span.tempo_json(), json!({"kind": 9}));
    }

    #[test]
    fn any_value_zero_values_are_emitted() {
        use any_value::Value as V;
        assert_eq!(json_of(V::IntValue(0)), json!({"intValue": "0"}));
        assert_eq!(json_of(V::BoolValue(false)), json!({"boolValue": false}));
        assert_eq!(
            json_of(V::StringValue(String::new())),
            json!({"stringValue": ""})
        );
        assert_eq!(json_of(V::DoubleValue(0.0)), json!({"doubleValue": 0.0}));
        assert_eq!(json_of(V::BytesValue(vec![])), json!({"bytesValue": ""}));
    }

    #[test]
    fn any_value_encodes_every_kind() {
        use any_value::Value as V;
        assert_eq!(
            json_of(V::StringValue("a".into())),
            json!({"stringValue": "a"})
        );
        assert_eq!(json_of(V::BoolValue(true)), json!({"boolValue": true}));
        assert_eq!(json_of(V::IntValue(-42)), json!({"intValue": "-42"}));
        assert_eq!(json_of(V::DoubleValue(2.5)), json!({"doubleValue": 2.5}));
        assert_eq!(
            json_of(V::BytesValue(vec![0xde, 0xad])),
            json!({"bytesValue": "3q0="})
        );
        assert_eq!(
            json_of(V::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(V::IntValue(1))
                    },
                    AnyValue {
                        value: Some(V::StringValue("two".into()))
                    },
                ],
            })),
            json!({"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "two"}]}})
        );
        assert_eq!(
            json_of(V::KvlistValue(KeyValueList {
                values: vec![attr("ok", V::BoolValue(true))],
            })),
            json!({"kvlistValue": {"values": [{"key": "ok", "value": {"boolValue": true}}]}})
        );
        assert_eq!(
            json_of(V::ArrayValue(ArrayValue::default())),
            json!({"arrayValue": {}})
        );
    }

    #[test]
    fn any_value_without_a_value_is_an_empty_object() {
        assert_eq!(AnyValue { value: None }.tempo_json(), json!({}));
    }

    #[test]
    fn non_finite_doubles_are_strings() {
        use any_value::Value as V;
        assert_eq!(
            json_of(V::DoubleValue(f64::NAN)),
            json!({"doubleValue": "NaN"})
        );
        assert_eq!(
            json_of(V::DoubleValue(f64::INFINITY)),
            json!({"doubleValue": "Infinity"})
        );
        assert_eq!(
            json_of(V::DoubleValue(f64::NEG_INFINITY)),
            json!({"doubleValue": "-Infinity"})
        );
    }

    #[test]
    fn trace_keeps_empty_resource_and_scope() {
        let trace = tempopb::Trace {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans: vec![],
                    schema_url: "https://opentelemetry.io/schemas/1.21.0".to_owned(),
                }],
                schema_url: String::new(),
            }],
        };
        assert_eq!(
            trace.tempo_json(),
            json!({"resourceSpans": [{
                "resource": {},
                "scopeSpans": [{
                    "scope": {},
                    "schemaUrl": "https://opentelemetry.io/schemas/1.21.0"
                }]
            }]})
        );
    }

    #[test]
    fn v1_trace_renames_resource_spans_to_batches() {
        let trace = one_span_trace(OtlpSpan {
            name: "root".to_owned(),
            status: Some(Status::default()),
            ..Default::default()
        });
        let batches = json!([{
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]
            },
            "scopeSpans": [{"scope": {}, "spans": [{"name": "root", "status": {}}]}]
        }]);
        assert_eq!(trace_v1_json(&trace), json!({"batches": batches}));
        assert_eq!(trace.tempo_json(), json!({"resourceSpans": batches}));
    }

    #[test]
    fn v1_empty_trace_is_an_empty_object() {
        assert_eq!(trace_v1_json(&tempopb::Trace::default()), json!({}));
    }

    #[test]
    fn empty_trace_by_id_response_keeps_trace_and_metrics() {
        let response = tempopb::TraceByIdResponse {
            trace: Some(tempopb::Trace::default()),
            metrics: Some(tempopb::TraceByIdMetrics::default()),
            ..Default::default()
        };
        assert_eq!(response.tempo_json(), json!({"trace": {}, "metrics": {}}));
    }

    #[test]
    fn partial_trace_by_id_response_names_its_status() {
        let response = tempopb::TraceByIdResponse {
            trace: Some(one_span_trace(OtlpSpan::default())),
            metrics: Some(tempopb::TraceByIdMetrics {
                inspected_bytes: 1024,
            }),
            status: tempopb::PartialStatus::Partial as i32,
            message: "trace exceeds max size".to_owned(),
        };
        let json = response.tempo_json();
        assert_eq!(json["metrics"], json!({"inspectedBytes": "1024"}));
        assert_eq!(json["status"], json!("PARTIAL"));
        assert_eq!(json["message"], json!("trace exceeds max size"));
        assert_eq!(
            json["trace"]["resourceSpans"][0]["scopeSpans"][0]["spans"],
            json!([{}])
        );
    }

    #[test]
    fn search_response_without_traces_has_an_empty_list() {
        let response = tempopb::SearchResponse {
            traces: vec![],
            metrics: Some(tempopb::SearchMetrics {
                inspected_traces: 7,
                inspected_bytes: 5_000_000_000,
                total_blocks: 0,
                completed_jobs: 2,
                total_jobs: 2,
                total_block_bytes: 0,
                inspected_spans: 12,
            }),
        };
        assert_eq!(
            response.tempo_json(),
            json!({
                "traces": [],
                "metrics": {
                    "inspectedTraces": 7,
                    "inspectedBytes": "5000000000",
                    "completedJobs": 2,
                    "totalJobs": 2,
                    "inspectedSpans": "12"
                }
            })
        );
    }

    #[test]
    fn search_metadata_has_hex_ids_u64_strings_and_service_stats() {
        let span_set = tempopb::SpanSet {
            spans: vec![tempopb::Span {
                span_id: "00f067aa0ba902b7".to_owned(),
                name: "GET /cart".to_owned(),
                start_time_unix_nano: 1_700_000_000_000_000_000,
                duration_nanos: 1_500_000,
                attributes: vec![string_attr("http.method", "GET")],
            }],
            matched: 3,
            attributes: vec![],
        };
        let metadata = tempopb::TraceSearchMetadata {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            root_service_name: "frontend".to_owned(),
            root_trace_name: String::new(),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            duration_ms: 0,
            span_set: Some(span_set.clone()),
            span_sets: vec![span_set],
            service_stats: HashMap::from([
                (
                    "frontend".to_owned(),
                    tempopb::ServiceStats {
                        span_count: 2,
                        error_count: 0,
                    },
                ),
                (
                    "cart".to_owned(),
                    tempopb::ServiceStats {
                        span_count: 1,
                        error_count: 1,
                    },
                ),
            ]),
        };
        let span_set_json = json!({
            "spans": [{
                "spanID": "00f067aa0ba902b7",
                "name": "GET /cart",
                "startTimeUnixNano": "1700000000000000000",
                "durationNanos": "1500000",
                "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}]
            }],
            "matched": 3
        });
        assert_eq!(
            metadata.tempo_json(),
            json!({
                "traceID": "4bf92f3577b34da6a3ce929d0e0e4736",
                "rootServiceName": "frontend",
                "startTimeUnixNano": "1700000000000000000",
                "spanSet": span_set_json,
                "spanSets": [span_set_json],
                "serviceStats": {
                    "cart": {"spanCount": 1, "errorCount": 1},
                    "frontend": {"spanCount": 2}
                }
            })
        );
    }

    #[test]
    fn search_metadata_without_span_set_omits_it() {
        let metadata = tempopb::TraceSearchMetadata {
            trace_id: "1".to_owned(),
            duration_ms: 12,
            ..Default::default()
        };
        assert_eq!(
            metadata.tempo_json(),
            json!({"traceID": "1", "durationMs": 12})
        );
    }

    #[test]
    fn tag_responses_list_their_results_even_when_empty() {
        assert_eq!(
            tempopb::SearchTagsResponse::default().tempo_json(),
            json!({"tagNames": []})
        );
        assert_eq!(
            tempopb::SearchTagsV2Response::default().tempo_json(),
            json!({"scopes": []})
        );
        assert_eq!(
            tempopb::SearchTagValuesResponse::default().tempo_json(),
            json!({"tagValues": []})
        );
        assert_eq!(
            tempopb::SearchTagValuesV2Response::default().tempo_json(),
            json!({"tagValues": []})
        );
    }

    #[test]
    fn tag_responses_encode_names_scopes_values_and_metrics() {
        let metrics = tempopb::MetadataMetrics {
            inspected_bytes: 2048,
            total_jobs: 1,
            completed_jobs: 1,
            total_blocks: 0,
            total_block_bytes: 4096,
        };
        let metrics_json = json!({
            "inspectedBytes": "2048",
            "totalJobs": 1,
            "completedJobs": 1,
            "totalBlockBytes": "4096"
        });
        let tags = tempopb::SearchTagsResponse {
            tag_names: vec!["http.method".to_owned(), "service.name".to_owned()],
            metrics: Some(metrics),
        };
        assert_eq!(
            tags.tempo_json(),
            json!({"tagNames": ["http.method", "service.name"], "metrics": metrics_json})
        );
        let tags_v2 = tempopb::SearchTagsV2Response {
            scopes: vec![
                tempopb::SearchTagsV2Scope {
                    name: "span".to_owned(),
                    tags: vec!["http.method".to_owned()],
                },
                tempopb::SearchTagsV2Scope {
                    name: "event".to_owned(),
                    tags: vec![],
                },
            ],
            metrics: Some(tempopb::MetadataMetrics::default()),
        };
        assert_eq!(
            tags_v2.tempo_json(),
            json!({
                "scopes": [{"name": "span", "tags": ["http.method"]}, {"name": "event"}],
                "metrics": {}
            })
        );
        let values = tempopb::SearchTagValuesResponse {
            tag_values: vec!["GET".to_owned()],
            metrics: None,
        };
        assert_eq!(values.tempo_json(), json!({"tagValues": ["GET"]}));
        let values_v2 = tempopb::SearchTagValuesV2Response {
            tag_values: vec![tempopb::TagValue {
                r#type: "string".to_owned(),
                value: "GET".to_owned(),
            }],
            metrics: Some(metrics),
        };
        assert_eq!(
            values_v2.tempo_json(),
            json!({
                "tagValues": [{"type": "string", "value": "GET"}],
                "metrics": metrics_json
            })
        );
    }
}
