//! The way back: `spans` record batches → [`SpanRow`]s → OTLP resource spans, for answering
//! trace-by-id requests with the spans as they were ingested.
//!
//! Attribute values keep their OTLP type. What the schema does not keep cannot come back:
//! attribute order within a list (attributes come back grouped by type), and bytes values,
//! which are stored as hex text and return as strings.

use std::collections::HashMap;

use arrow::array::{
    Array, AsArray, FixedSizeBinaryArray, MapArray, RecordBatch, StringArray, StructArray,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::Event, span::Link,
};

use super::attrs::{self, SUFFIXES};
use super::otlp::SERVICE_NAME_KEY;
use super::rows::{AttrValue, EventRow, LinkRow, SpanRow};
use super::spans::{self, event, link};

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, ArrowError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| ArrowError::SchemaError(format!("spans batch lacks column {name}")))
}

fn struct_column<'a>(array: &'a StructArray, name: &str) -> Result<&'a dyn Array, ArrowError> {
    array
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| ArrowError::SchemaError(format!("struct lacks field {name}")))
}

/// Reads the five typed maps named `prefix_*` out of a batch or struct.
struct TypedMaps<'a>([&'a MapArray; 5]);

impl<'a> TypedMaps<'a> {
    fn new(
        get: impl Fn(&str) -> Result<&'a dyn Array, ArrowError>,
        prefix: &str,
    ) -> Result<Self, ArrowError> {
        let mut maps = Vec::with_capacity(5);
        for suffix in SUFFIXES {
            let array = get(&attrs::column_name(prefix, suffix))?;
            maps.push(array.as_map_opt().ok_or_else(|| {
                ArrowError::SchemaError(format!("{prefix}_{suffix} is not a map"))
            })?);
        }
        let maps: [&MapArray; 5] = maps
            .try_into()
            .map_err(|_| ArrowError::SchemaError(format!("{prefix} must have five typed maps")))?;
        Ok(Self(maps))
    }

    fn row(&self, i: usize) -> Vec<(String, AttrValue)> {
        let mut out = Vec::new();
        for (suffix, map) in SUFFIXES.iter().zip(self.0) {
            if map.is_null(i) {
                continue;
            }
            let entries = map.value(i);
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1);
            for j in 0..entries.len() {
                let value = match *suffix {
                    attrs::STR => AttrValue::Str(values.as_string::<i32>().value(j).to_string()),
                    attrs::INT => AttrValue::Int(values.as_primitive::<Int64Type>().value(j)),
                    attrs::FLOAT => AttrValue::Float(values.as_primitive::<Float64Type>().value(j)),
                    attrs::BOOL => AttrValue::Bool(values.as_boolean().value(j)),
                    _ => AttrValue::Json(values.as_string::<i32>().value(j).to_string()),
                };
                out.push((keys.value(j).to_string(), value));
            }
        }
        out
    }
}

fn fixed<const N: usize>(array: &FixedSizeBinaryArray, i: usize) -> [u8; N] {
    let mut id = [0; N];
    id.copy_from_slice(&array.value(i)[..N]);
    id
}

fn kind_number(name: &str) -> i32 {
    match name {
        "internal" => 1,
        "server" => 2,
        "client" => 3,
        "producer" => 4,
        "consumer" => 5,
        _ => 0,
    }
}

fn status_number(name: &str) -> i32 {
    match name {
        "ok" => 1,
        "error" => 2,
        _ => 0,
    }
}

/// Reads every row of a `spans` batch (all columns of [`spans::schema`] that rows carry).
pub fn rows_from_batch(batch: &RecordBatch) -> Result<Vec<SpanRow>, ArrowError> {
    let get = |name: &str| column(batch, name);
    let fixed_column = |name: &str| -> Result<&FixedSizeBinaryArray, ArrowError> {
        get(name)?
            .as_fixed_size_binary_opt()
            .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not fixed-size binary")))
    };
    let string_column = |name: &str| -> Result<&StringArray, ArrowError> {
        get(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a string column")))
    };
    let time_column = |name: &str| {
        get(name)?
            .as_primitive_opt::<TimestampNanosecondType>()
            .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a timestamp")))
    };
    let trace_id = fixed_column(spans::TRACE_ID)?;
    let span_id = fixed_column(spans::SPAN_ID)?;
    let parent = fixed_column(spans::PARENT_SPAN_ID)?;
    let trace_state = string_column(spans::TRACE_STATE)?;
    let name = string_column(spans::NAME)?;
    let kind = string_column(spans::KIND)?;
    let status_code = string_column(spans::STATUS_CODE)?;
    let status_message = string_column(spans::STATUS_MESSAGE)?;
    let start = time_column(spans::START_TIME)?;
    let end = time_column(spans::END_TIME)?;
    let service = string_column(spans::SERVICE_NAME)?;
    let scope_name = string_column(spans::SCOPE_NAME)?;
    let scope_version = string_column(spans::SCOPE_VERSION)?;
    let span_attrs = TypedMaps::new(get, spans::SPAN_ATTRS)?;
    let resource_attrs = TypedMaps::new(get, spans::RESOURCE_ATTRS)?;
    let events = get(spans::EVENTS)?.as_list::<i32>();
    let links = get(spans::LINKS)?.as_list::<i32>();

    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        rows.push(SpanRow {
            trace_id: fixed(trace_id, i),
            span_id: fixed(span_id, i),
            parent_span_id: parent.is_valid(i).then(|| fixed(parent, i)),
            trace_state: trace_state.value(i).to_string(),
            name: name.value(i).to_string(),
            kind: kind_number(kind.value(i)),
            status_code: status_number(status_code.value(i)),
            status_message: status_message.value(i).to_string(),
            start_time_unix_nano: start.value(i),
            end_time_unix_nano: end.value(i),
            service_name: service.value(i).to_string(),
            scope_name: scope_name.value(i).to_string(),
            scope_version: scope_version.value(i).to_string(),
            span_attrs: span_attrs.row(i),
            resource_attrs: resource_attrs.row(i),
            events: read_events(&events.value(i))?,
            links: read_links(&links.value(i))?,
        });
    }
    Ok(rows)
}

fn read_events(list: &dyn Array) -> Result<Vec<EventRow>, ArrowError> {
    let items = list.as_struct();
    let get = |name: &str| struct_column(items, name);
    let time = get(event::TIME)?.as_primitive::<TimestampNanosecondType>();
    let name = get(event::NAME)?.as_string::<i32>();
    let attrs = TypedMaps::new(get, event::ATTRS)?;
    Ok((0..items.len())
        .map(|j| EventRow {
            time_unix_nano: time.value(j),
            name: name.value(j).to_string(),
            attrs: attrs.row(j),
        })
        .collect())
}

fn read_links(list: &dyn Array) -> Result<Vec<LinkRow>, ArrowError> {
    let items = list.as_struct();
    let get = |name: &str| struct_column(items, name);
    let trace_id = get(link::TRACE_ID)?.as_fixed_size_binary();
    let span_id = get(link::SPAN_ID)?.as_fixed_size_binary();
    let trace_state = get(link::TRACE_STATE)?.as_string::<i32>();
    let attrs = TypedMaps::new(get, link::ATTRS)?;
    Ok((0..items.len())
        .map(|j| LinkRow {
            trace_id: fixed(trace_id, j),
            span_id: fixed(span_id, j),
            trace_state: trace_state.value(j).to_string(),
            attrs: attrs.row(j),
        })
        .collect())
}

fn any_value(value: &AttrValue) -> AnyValue {
    let value = match value {
        AttrValue::Str(s) => Value::StringValue(s.clone()),
        AttrValue::Int(i) => Value::IntValue(*i),
        AttrValue::Float(f) => Value::DoubleValue(*f),
        AttrValue::Bool(b) => Value::BoolValue(*b),
        AttrValue::Json(text) => match serde_json::from_str(text) {
            Ok(json) => json_value(&json),
            Err(_) => Value::StringValue(text.clone()),
        },
    };
    AnyValue { value: Some(value) }
}

/// Turns the JSON form of an array or key-value list back into its OTLP value.
fn json_value(json: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let any = |v: &J| AnyValue {
        value: (!v.is_null()).then(|| json_value(v)),
    };
    match json {
        J::Null => Value::StringValue(String::new()),
        J::Bool(b) => Value::BoolValue(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::IntValue(i),
            None => Value::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::StringValue(s.clone()),
        J::Array(items) => Value::ArrayValue(ArrayValue {
            values: items.iter().map(any).collect(),
        }),
        J::Object(entries) => Value::KvlistValue(KeyValueList {
            values: entries
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(any(v)),
                    ..Default::default()
                })
                .collect(),
        }),
    }
}

/// OTLP attributes from typed ones.
pub fn key_values(attrs: &[(String, AttrValue)]) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: Some(any_value(value)),
            ..Default::default()
        })
        .collect()
}

fn otlp_span(row: &SpanRow) -> Span {
    Span {
        trace_id: row.trace_id.to_vec(),
        span_id: row.span_id.to_vec(),
        trace_state: row.trace_state.clone(),
        parent_span_id: row.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: row.name.clone(),
        kind: row.kind,
        start_time_unix_nano: row.start_time_unix_nano as u64,
        end_time_unix_nano: row.end_time_unix_nano as u64,
        attributes: key_values(&row.span_attrs),
        events: row
            .events
            .iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano as u64,
                name: e.name.clone(),
                attributes: key_values(&e.attrs),
                dropped_attributes_count: 0,
            })
            .collect(),
        links: row
            .links
            .iter()
            .map(|l| Link {
                trace_id: l.trace_id.to_vec(),
                span_id: l.span_id.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: key_values(&l.attrs),
                ..Default::default()
            })
            .collect(),
        status: Some(Status {
            message: row.status_message.clone(),
            code: row.status_code,
        }),
        ..Default::default()
    }
}

/// Groups spans into OTLP resource spans: one per distinct resource, one scope spans per
/// distinct instrumentation scope within it, in order of first appearance. Every resource,
/// scope and status is present, as Grafana expects. A resource stored without attributes
/// gets its `service.name`, so that viewers that skip attribute-less resources show it.
pub fn resource_spans(rows: &[SpanRow]) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    let mut by_resource: HashMap<String, usize> = HashMap::new();
    let mut by_scope: HashMap<(usize, &str, &str), usize> = HashMap::new();
    for row in rows {
        let resource_key = format!("{:?}", row.resource_attrs);
        let r = *by_resource.entry(resource_key).or_insert_with(|| {
            let mut attributes = key_values(&row.resource_attrs);
            if attributes.is_empty() {
                attributes = key_values(&[(
                    SERVICE_NAME_KEY.to_string(),
                    AttrValue::Str(row.service_name.clone()),
                )]);
            }
            out.push(ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                ..Default::default()
            });
            out.len() - 1
        });
        let scope_spans = &mut out[r].scope_spans;
        let s = *by_scope
            .entry((r, &row.scope_name, &row.scope_version))
            .or_insert_with(|| {
                scope_spans.push(ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: row.scope_name.clone(),
                        version: row.scope_version.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
                scope_spans.len() - 1
            });
        scope_spans[s].spans.push(otlp_span(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::otlp::{spans_from_request, tests::span};
    use crate::schema::spans::to_batch;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn rows_survive_a_batch_round_trip() {
        let mut a = span(1, None, 100);
        a.span_attrs = vec![
            ("s".into(), AttrValue::Str("x".into())),
            ("i".into(), AttrValue::Int(-3)),
            ("f".into(), AttrValue::Float(1.5)),
            ("b".into(), AttrValue::Bool(false)),
            ("j".into(), AttrValue::Json("[1,\"a\"]".into())),
        ];
        a.resource_attrs = vec![("service.name".into(), AttrValue::Str("svc".into()))];
        a.events = vec![EventRow {
            time_unix_nano: 150,
            name: "exception".into(),
            attrs: vec![("exception.type".into(), AttrValue::Str("E".into()))],
        }];
        a.links = vec![LinkRow {
            trace_id: [7; 16],
            span_id: [8; 8],
            trace_state: "k=v".into(),
            attrs: vec![("n".into(), AttrValue::Int(1))],
        }];
        a.kind = 3;
        a.status_code = 2;
        a.status_message = "boom".into();
        let b = span(2, Some(1), 120);
        let batch = to_batch(&[vec![&a, &b]]).unwrap();
        assert_eq!(rows_from_batch(&batch).unwrap(), vec![a, b]);
    }

    #[test]
    fn otlp_comes_back_grouped_by_resource_and_scope() {
        let mut rows = vec![span(1, None, 1), span(2, Some(1), 2), span(3, Some(1), 3)];
        rows[0].resource_attrs = vec![("service.name".into(), AttrValue::Str("a".into()))];
        rows[1].resource_attrs = vec![("service.name".into(), AttrValue::Str("b".into()))];
        rows[2].resource_attrs = rows[0].resource_attrs.clone();
        rows[2].scope_name = "lib".into();
        for (row, service) in rows.iter_mut().zip(["a", "b", "a"]) {
            row.service_name = service.into();
        }
        let resource_spans = resource_spans(&rows);
        assert_eq!(resource_spans.len(), 2);
        assert_eq!(resource_spans[0].scope_spans.len(), 2);
        assert_eq!(resource_spans[1].scope_spans.len(), 1);
        let request = ExportTraceServiceRequest { resource_spans };
        let mut back = spans_from_request(&request).unwrap();
        back.sort_by_key(|r| r.span_id);
        assert_eq!(back, rows);
        let first = &request.resource_spans[0].scope_spans[0].spans[0];
        assert!(first.parent_span_id.is_empty());
        assert!(first.status.is_some());
    }

    #[test]
    fn json_attributes_become_arrays_and_lists_again() {
        let value = any_value(&AttrValue::Json(r#"{"k":[1,2.5,true,"s"]}"#.into()));
        let Some(Value::KvlistValue(list)) = value.value else {
            panic!("expected a key-value list, got {value:?}");
        };
        let Some(Value::ArrayValue(array)) = list.values[0].value.as_ref().unwrap().value.clone()
        else {
            panic!("expected an array");
        };
        let kinds: Vec<_> = array.values.into_iter().map(|v| v.value.unwrap()).collect();
        assert_eq!(
            kinds,
            vec![
                Value::IntValue(1),
                Value::DoubleValue(2.5),
                Value::BoolValue(true),
                Value::StringValue("s".into())
            ]
        );
    }
}
