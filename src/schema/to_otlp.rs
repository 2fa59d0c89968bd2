//! The way back: `spans` record batches → [`SpanRow`]s → OTLP resource spans, for answering
//! trace-by-id requests with the spans as they were ingested.
//!
//! Every OTLP field of a span, its resource and its scope comes back as ingested, so that
//! clients comparing traces for equality (tempo-vulture) find no difference. Attribute values
//! keep their OTLP type. What the schema does not keep cannot come back: attribute order
//! within a list (attributes come back grouped by type), bytes nested inside arrays and
//! key-value lists (they return as hex strings), and which spans shared one `ResourceSpans` or
//! `ScopeSpans` (spans are regrouped by equal resource and scope).
//!
//! Columns added in schema version 2 may be null (blocks written before them): a null count
//! reads as 0, a null schema URL as empty, a null map as no attributes.

use std::collections::HashMap;

use arrow::array::{
    Array, AsArray, FixedSizeBinaryArray, MapArray, RecordBatch, StringArray, StructArray,
    UInt32Array,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType, UInt32Type};
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

/// A column added in schema version 2: absent or null where older blocks lack it, but of the
/// right type when present.
fn since_v2<'a, T: ?Sized>(
    array: Option<&'a dyn Array>,
    name: &str,
    cast: impl Fn(&'a dyn Array) -> Option<&'a T>,
) -> Result<Option<&'a T>, ArrowError> {
    array
        .map(|a| {
            cast(a).ok_or_else(|| {
                ArrowError::SchemaError(format!("{name} has type {}", a.data_type()))
            })
        })
        .transpose()
}

/// A `UInt32` column of schema version 2 as a reader: null and absent read as 0.
fn u32_reader<'a>(
    array: Option<&'a dyn Array>,
    name: &str,
) -> Result<impl Fn(usize) -> u32 + 'a, ArrowError> {
    let array: Option<&UInt32Array> =
        since_v2(array, name, |a| a.as_primitive_opt::<UInt32Type>())?;
    Ok(move |i| array.filter(|a| a.is_valid(i)).map_or(0, |a| a.value(i)))
}

/// A `Utf8` column of schema version 2 as a reader: null and absent read as empty.
fn string_reader<'a>(
    array: Option<&'a dyn Array>,
    name: &str,
) -> Result<impl Fn(usize) -> String + 'a, ArrowError> {
    let array: Option<&StringArray> = since_v2(array, name, |a| a.as_string_opt::<i32>())?;
    Ok(move |i| {
        array
            .filter(|a| a.is_valid(i))
            .map_or_else(String::new, |a| a.value(i).to_string())
    })
}

/// Reads the typed maps named `prefix_*` out of a batch or struct.
struct TypedMaps<'a> {
    /// Each map with its suffix; `None` for a map of schema version 2 that is absent.
    maps: Vec<(&'static str, Option<&'a MapArray>)>,
}

impl<'a> TypedMaps<'a> {
    /// `since_v2`: the whole group came with schema version 2 (scope attributes) and may be
    /// absent; otherwise only the bytes map may be.
    fn new(
        get: impl Fn(&str) -> Option<&'a dyn Array>,
        prefix: &str,
        since_v2: bool,
    ) -> Result<Self, ArrowError> {
        let mut maps = Vec::with_capacity(SUFFIXES.len() + 1);
        for suffix in SUFFIXES.into_iter().chain([attrs::BYTES]) {
            let name = attrs::column_name(prefix, suffix);
            let map = match get(&name) {
                Some(array) => Some(
                    array
                        .as_map_opt()
                        .ok_or_else(|| ArrowError::SchemaError(format!("{name} is not a map")))?,
                ),
                None if since_v2 || suffix == attrs::BYTES => None,
                None => return Err(ArrowError::SchemaError(format!("{name} is missing"))),
            };
            maps.push((suffix, map));
        }
        Ok(Self { maps })
    }

    fn row(&self, i: usize) -> Vec<(String, AttrValue)> {
        let mut out = Vec::new();
        for (suffix, map) in &self.maps {
            let Some(map) = map.filter(|m| m.is_valid(i)) else {
                continue;
            };
            let entries = map.value(i);
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1);
            for j in 0..entries.len() {
                let value = match *suffix {
                    attrs::STR => AttrValue::Str(values.as_string::<i32>().value(j).to_string()),
                    attrs::INT => AttrValue::Int(values.as_primitive::<Int64Type>().value(j)),
                    attrs::FLOAT => AttrValue::Float(values.as_primitive::<Float64Type>().value(j)),
                    attrs::BOOL => AttrValue::Bool(values.as_boolean().value(j)),
                    attrs::BYTES => AttrValue::Bytes(values.as_binary::<i32>().value(j).to_vec()),
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
    let get_v2 = |name: &str| batch.column_by_name(name).map(|c| c.as_ref());
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
    let span_attrs = TypedMaps::new(get_v2, spans::SPAN_ATTRS, false)?;
    let resource_attrs = TypedMaps::new(get_v2, spans::RESOURCE_ATTRS, false)?;
    let events = get(spans::EVENTS)?.as_list::<i32>();
    let links = get(spans::LINKS)?.as_list::<i32>();
    let u32_column = |name| u32_reader(get_v2(name), name);
    let flags = u32_column(spans::FLAGS)?;
    let dropped_attributes = u32_column(spans::DROPPED_ATTRIBUTES_COUNT)?;
    let dropped_events = u32_column(spans::DROPPED_EVENTS_COUNT)?;
    let dropped_links = u32_column(spans::DROPPED_LINKS_COUNT)?;
    let resource_dropped = u32_column(spans::RESOURCE_DROPPED_ATTRIBUTES_COUNT)?;
    let resource_schema_url = string_reader(
        get_v2(spans::RESOURCE_SCHEMA_URL),
        spans::RESOURCE_SCHEMA_URL,
    )?;
    let scope_attrs = TypedMaps::new(get_v2, spans::SCOPE_ATTRS, true)?;
    let scope_dropped = u32_column(spans::SCOPE_DROPPED_ATTRIBUTES_COUNT)?;
    let scope_schema_url = string_reader(get_v2(spans::SCOPE_SCHEMA_URL), spans::SCOPE_SCHEMA_URL)?;

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
            flags: flags(i),
            dropped_attributes_count: dropped_attributes(i),
            dropped_events_count: dropped_events(i),
            dropped_links_count: dropped_links(i),
            service_name: service.value(i).to_string(),
            scope_name: scope_name.value(i).to_string(),
            scope_version: scope_version.value(i).to_string(),
            scope_attrs: scope_attrs.row(i),
            scope_dropped_attributes_count: scope_dropped(i),
            scope_schema_url: scope_schema_url(i),
            span_attrs: span_attrs.row(i),
            resource_attrs: resource_attrs.row(i),
            resource_dropped_attributes_count: resource_dropped(i),
            resource_schema_url: resource_schema_url(i),
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
    let get_v2 = |name: &str| items.column_by_name(name).map(|c| c.as_ref());
    let attrs = TypedMaps::new(get_v2, event::ATTRS, false)?;
    let dropped_attributes = u32_reader(
        get_v2(event::DROPPED_ATTRIBUTES_COUNT),
        event::DROPPED_ATTRIBUTES_COUNT,
    )?;
    Ok((0..items.len())
        .map(|j| EventRow {
            time_unix_nano: time.value(j),
            name: name.value(j).to_string(),
            attrs: attrs.row(j),
            dropped_attributes_count: dropped_attributes(j),
        })
        .collect())
}

fn read_links(list: &dyn Array) -> Result<Vec<LinkRow>, ArrowError> {
    let items = list.as_struct();
    let get = |name: &str| struct_column(items, name);
    let trace_id = get(link::TRACE_ID)?.as_fixed_size_binary();
    let span_id = get(link::SPAN_ID)?.as_fixed_size_binary();
    let trace_state = get(link::TRACE_STATE)?.as_string::<i32>();
    let get_v2 = |name: &str| items.column_by_name(name).map(|c| c.as_ref());
    let attrs = TypedMaps::new(get_v2, link::ATTRS, false)?;
    let dropped_attributes = u32_reader(
        get_v2(link::DROPPED_ATTRIBUTES_COUNT),
        link::DROPPED_ATTRIBUTES_COUNT,
    )?;
    let flags = u32_reader(get_v2(link::FLAGS), link::FLAGS)?;
    Ok((0..items.len())
        .map(|j| LinkRow {
            trace_id: fixed(trace_id, j),
            span_id: fixed(span_id, j),
            trace_state: trace_state.value(j).to_string(),
            attrs: attrs.row(j),
            dropped_attributes_count: dropped_attributes(j),
            flags: flags(j),
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
        AttrValue::Bytes(b) => Value::BytesValue(b.clone()),
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
        flags: row.flags,
        name: row.name.clone(),
        kind: row.kind,
        start_time_unix_nano: row.start_time_unix_nano as u64,
        end_time_unix_nano: row.end_time_unix_nano as u64,
        attributes: key_values(&row.span_attrs),
        dropped_attributes_count: row.dropped_attributes_count,
        events: row
            .events
            .iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano as u64,
                name: e.name.clone(),
                attributes: key_values(&e.attrs),
                dropped_attributes_count: e.dropped_attributes_count,
            })
            .collect(),
        dropped_events_count: row.dropped_events_count,
        links: row
            .links
            .iter()
            .map(|l| Link {
                trace_id: l.trace_id.to_vec(),
                span_id: l.span_id.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: key_values(&l.attrs),
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            })
            .collect(),
        dropped_links_count: row.dropped_links_count,
        status: Some(Status {
            message: row.status_message.clone(),
            code: row.status_code,
        }),
    }
}

/// Groups spans into OTLP resource spans: one per distinct resource (attributes, dropped
/// count, schema URL), one scope spans per distinct instrumentation scope (name, version,
/// attributes, dropped count, schema URL) within it, in order of first appearance. Every
/// resource, scope and status is present, as Grafana expects. A resource stored without
/// attributes gets its `service.name`, so that viewers that skip attribute-less resources
/// show it.
pub fn resource_spans(rows: &[SpanRow]) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    // Attribute values hold floats, which are not `Hash`: their debug text is the key.
    let mut by_resource: HashMap<String, usize> = HashMap::new();
    let mut by_scope: HashMap<(usize, String), usize> = HashMap::new();
    for row in rows {
        let resource_key = format!(
            "{:?}",
            (
                &row.resource_attrs,
                row.resource_dropped_attributes_count,
                &row.resource_schema_url
            )
        );
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
                    dropped_attributes_count: row.resource_dropped_attributes_count,
                    ..Default::default()
                }),
                schema_url: row.resource_schema_url.clone(),
                ..Default::default()
            });
            out.len() - 1
        });
        let scope_key = format!(
            "{:?}",
            (
                &row.scope_name,
                &row.scope_version,
                &row.scope_attrs,
                row.scope_dropped_attributes_count,
                &row.scope_schema_url
            )
        );
        let scope_spans = &mut out[r].scope_spans;
        let s = *by_scope.entry((r, scope_key)).or_insert_with(|| {
            scope_spans.push(ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: row.scope_name.clone(),
                    version: row.scope_version.clone(),
                    attributes: key_values(&row.scope_attrs),
                    dropped_attributes_count: row.scope_dropped_attributes_count,
                }),
                schema_url: row.scope_schema_url.clone(),
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
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    /// One attribute of every OTLP value type, keys in order.
    fn every_type(prefix: &str) -> Vec<KeyValue> {
        let any = |value| AnyValue { value: Some(value) };
        vec![
            kv(
                &format!("{prefix}.array"),
                Value::ArrayValue(ArrayValue {
                    values: vec![any(Value::StringValue("a".into())), any(Value::IntValue(2))],
                }),
            ),
            kv(&format!("{prefix}.bool"), Value::BoolValue(true)),
            kv(
                &format!("{prefix}.bytes"),
                Value::BytesValue(vec![0, 1, 254, 255]),
            ),
            kv(&format!("{prefix}.double"), Value::DoubleValue(2.5)),
            kv(&format!("{prefix}.empty_bytes"), Value::BytesValue(vec![])),
            kv(&format!("{prefix}.int"), Value::IntValue(-7)),
            kv(
                &format!("{prefix}.kvlist"),
                Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("a", Value::DoubleValue(1.5)),
                        kv("b", Value::StringValue("x".into())),
                    ],
                }),
            ),
            kv(&format!("{prefix}.string"), Value::StringValue("s".into())),
        ]
    }

    /// A request that sets every OTLP field spanlake stores, with spans in the order in which
    /// [`resource_spans`] groups them.
    fn request_with_every_field() -> ExportTraceServiceRequest {
        let mut service = vec![kv(SERVICE_NAME_KEY, Value::StringValue("api".into()))];
        service.extend(every_type("res"));
        let full_span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: "vendor=x".into(),
            parent_span_id: vec![3; 8],
            flags: 0x101,
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_500_000_000,
            attributes: every_type("span"),
            dropped_attributes_count: 4,
            events: vec![Event {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: "exception".into(),
                attributes: every_type("event"),
                dropped_attributes_count: 5,
            }],
            dropped_events_count: 6,
            links: vec![Link {
                trace_id: vec![9; 16],
                span_id: vec![8; 8],
                trace_state: "other=y".into(),
                attributes: every_type("link"),
                dropped_attributes_count: 7,
                flags: 0x301,
            }],
            dropped_links_count: 8,
            status: Some(Status {
                message: "boom".into(),
                code: StatusCode::Error as i32,
            }),
        };
        let bare_span = Span {
            trace_id: vec![1; 16],
            span_id: vec![3; 8],
            name: "root".into(),
            status: Some(Status::default()),
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: service,
                        dropped_attributes_count: 1,
                        ..Default::default()
                    }),
                    scope_spans: vec![
                        ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "lib".into(),
                                version: "1.2".into(),
                                attributes: every_type("scope"),
                                dropped_attributes_count: 2,
                            }),
                            spans: vec![full_span],
                            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                        },
                        ScopeSpans {
                            scope: Some(InstrumentationScope::default()),
                            spans: vec![bare_span.clone()],
                            schema_url: String::new(),
                        },
                    ],
                    schema_url: "https://opentelemetry.io/schemas/1.25.0".into(),
                },
                // Same attributes, another schema URL: a resource of its own.
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv(SERVICE_NAME_KEY, Value::StringValue("api".into()))],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope::default()),
                        spans: vec![Span {
                            span_id: vec![4; 8],
                            ..bare_span
                        }],
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                },
            ],
        }
    }

    /// Sorts every attribute list by key: storage keeps attributes grouped by type.
    fn sorted(mut resource_spans: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
        let sort = |attrs: &mut Vec<KeyValue>| attrs.sort_by(|a, b| a.key.cmp(&b.key));
        for r in &mut resource_spans {
            r.resource.iter_mut().for_each(|r| sort(&mut r.attributes));
            for s in &mut r.scope_spans {
                s.scope.iter_mut().for_each(|s| sort(&mut s.attributes));
                for span in &mut s.spans {
                    sort(&mut span.attributes);
                    span.events.iter_mut().for_each(|e| sort(&mut e.attributes));
                    span.links.iter_mut().for_each(|l| sort(&mut l.attributes));
                }
            }
        }
        resource_spans
    }

    #[test]
    fn every_otlp_field_survives_storage() {
        let request = request_with_every_field();
        let rows = spans_from_request(&request).unwrap();
        let batch = to_batch(&[rows.iter().collect()]).unwrap();
        let back = resource_spans(&rows_from_batch(&batch).unwrap());
        assert_eq!(sorted(back), sorted(request.resource_spans));
    }

    #[test]
    fn bytes_attributes_come_back_as_bytes() {
        let value = any_value(&AttrValue::Bytes(vec![0xde, 0xad]));
        assert_eq!(value.value, Some(Value::BytesValue(vec![0xde, 0xad])));
    }

    /// Columns and element fields that schema version 2 added to `spans`.
    fn is_v2(name: &str) -> bool {
        let top_level = spans::schema()
            .fields()
            .iter()
            .skip_while(|f| f.name() != spans::NESTED_SET_PARENT)
            .skip(1)
            .any(|f| f.name() == name);
        let element = [
            attrs::column_name(event::ATTRS, attrs::BYTES),
            event::DROPPED_ATTRIBUTES_COUNT.to_string(),
            link::FLAGS.to_string(),
        ]
        .contains(&name.to_string());
        top_level || element
    }

    /// `batch` as schema version 1 wrote it: without the columns and fields of version 2.
    fn as_version_1(batch: &RecordBatch) -> RecordBatch {
        use arrow::array::{ArrayRef, ListArray};
        use arrow::datatypes::{DataType, Field, Fields, Schema};
        use std::sync::Arc;
        let strip = |list: &ListArray| -> ArrayRef {
            let (fields, columns, nulls) = list.values().as_struct().clone().into_parts();
            let (fields, columns): (Vec<_>, Vec<_>) = fields
                .iter()
                .cloned()
                .zip(columns)
                .filter(|(f, _)| !is_v2(f.name()))
                .unzip();
            let fields = Fields::from(fields);
            let values = StructArray::new(fields.clone(), columns, nulls);
            let item = Field::new("item", DataType::Struct(fields), false);
            Arc::new(ListArray::new(
                Arc::new(item),
                list.offsets().clone(),
                Arc::new(values),
                None,
            ))
        };
        let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .filter(|(f, _)| !is_v2(f.name()))
            .map(|(f, c)| match c.as_list_opt::<i32>() {
                Some(list) => {
                    let c = strip(list);
                    (f.as_ref().clone().with_data_type(c.data_type().clone()), c)
                }
                None => (f.as_ref().clone(), c.clone()),
            })
            .unzip();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// Writes `batch` to a Parquet file and reads it back as a `spans` table through
    /// DataFusion, as block scans do.
    async fn through_parquet(batch: &RecordBatch) -> Vec<SpanRow> {
        use datafusion::prelude::{ParquetReadOptions, SessionContext};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.parquet");
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();

        let ctx = SessionContext::new();
        let schema = spans::schema();
        let options = ParquetReadOptions::default().schema(&schema);
        ctx.register_parquet("spans", path.to_str().unwrap(), options)
            .await
            .unwrap();
        let batches = ctx.table("spans").await.unwrap().collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| rows_from_batch(b).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn every_otlp_field_survives_parquet() {
        let request = request_with_every_field();
        let rows = spans_from_request(&request).unwrap();
        let batch = to_batch(&[rows.iter().collect()]).unwrap();
        let back = resource_spans(&through_parquet(&batch).await);
        assert_eq!(sorted(back), sorted(request.resource_spans));
    }

    #[tokio::test]
    async fn parquet_of_schema_version_1_reads_with_the_new_fields_empty() {
        let mut full = span(1, None, 100);
        full.span_attrs = vec![("s".into(), AttrValue::Str("x".into()))];
        full.events = vec![EventRow {
            name: "e".into(),
            attrs: vec![("i".into(), AttrValue::Int(1))],
            ..Default::default()
        }];
        full.links = vec![LinkRow {
            trace_id: [7; 16],
            span_id: [8; 8],
            ..Default::default()
        }];
        let old = as_version_1(&to_batch(&[vec![&full]]).unwrap());
        assert!(old.num_columns() < spans::schema().fields().len());
        let rows = through_parquet(&old).await;
        assert_eq!(rows, vec![full]);
    }

    #[test]
    fn rows_survive_a_batch_round_trip() {
        let mut a = span(1, None, 100);
        a.span_attrs = vec![
            ("s".into(), AttrValue::Str("x".into())),
            ("i".into(), AttrValue::Int(-3)),
            ("f".into(), AttrValue::Float(1.5)),
            ("b".into(), AttrValue::Bool(false)),
            ("j".into(), AttrValue::Json("[1,\"a\"]".into())),
            ("y".into(), AttrValue::Bytes(vec![0, 255])),
        ];
        a.resource_attrs = vec![("service.name".into(), AttrValue::Str("svc".into()))];
        a.events = vec![EventRow {
            time_unix_nano: 150,
            name: "exception".into(),
            attrs: vec![("exception.type".into(), AttrValue::Str("E".into()))],
            dropped_attributes_count: 1,
        }];
        a.links = vec![LinkRow {
            trace_id: [7; 16],
            span_id: [8; 8],
            trace_state: "k=v".into(),
            attrs: vec![("n".into(), AttrValue::Int(1))],
            dropped_attributes_count: 2,
            flags: 0x301,
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
