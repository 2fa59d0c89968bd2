//! The `logs` table: one row per OTLP log record, flattened with its resource and scope.
//!
//! Blocks sort the rows by `service_name`, then `time`, so that a query for one service's
//! recent logs reads few row groups; `trace_id` carries a bloom filter, so that the logs of a
//! trace are found without scanning. The body is one text column: a string body as given,
//! any other body as text (see [`body_text`]), so that SQL can search every body alike.
//!
//! This module only names the columns and builds batches from [`LogRow`]s; the conversion
//! from OTLP is in [`super::otlp`].

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, FixedSizeBinaryBuilder, Int32Builder, RecordBatch, StringBuilder,
    TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::attrs::{self, TypedAttrsBuilder};
use super::rows::AttrValue;
use super::signals::LogRow;
use super::spans::timestamp_type;

pub const TIME: &str = "time";
pub const OBSERVED_TIME: &str = "observed_time";
pub const SEVERITY_NUMBER: &str = "severity_number";
pub const SEVERITY_TEXT: &str = "severity_text";
pub const BODY: &str = "body";
pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const FLAGS: &str = "flags";
pub const EVENT_NAME: &str = "event_name";
pub const SERVICE_NAME: &str = "service_name";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
/// Prefix of the record's typed attribute maps (`attrs_str`, `attrs_int`, …).
pub const ATTRS: &str = "attrs";
/// Prefix of the resource's typed attribute maps.
pub const RESOURCE_ATTRS: &str = "resource_attrs";
pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
/// Prefix of the scope's typed attribute maps.
pub const SCOPE_ATTRS: &str = "scope_attrs";
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new(TIME, timestamp_type(), false),
        Field::new(OBSERVED_TIME, timestamp_type(), false),
        Field::new(SEVERITY_NUMBER, DataType::Int32, false),
        Field::new(SEVERITY_TEXT, DataType::Utf8, false),
        Field::new(BODY, DataType::Utf8, true),
        Field::new(TRACE_ID, DataType::FixedSizeBinary(16), true),
        Field::new(SPAN_ID, DataType::FixedSizeBinary(8), true),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(EVENT_NAME, DataType::Utf8, false),
        Field::new(SERVICE_NAME, DataType::Utf8, false),
        Field::new(SCOPE_NAME, DataType::Utf8, false),
        Field::new(SCOPE_VERSION, DataType::Utf8, false),
    ];
    fields.extend(attrs::fields(ATTRS, false));
    fields.extend(attrs::fields(RESOURCE_ATTRS, false));
    fields.extend([
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, false),
        attrs::bytes_field(ATTRS),
        attrs::bytes_field(RESOURCE_ATTRS),
    ]);
    fields.extend(attrs::fields(SCOPE_ATTRS, false));
    fields.extend([
        attrs::bytes_field(SCOPE_ATTRS),
        Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, false),
        Field::new(SCOPE_SCHEMA_URL, DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
});

/// The schema of the `logs` table.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The text a log body reads as in the `body` column: a string as given; numbers and booleans
/// as JSON text (`42`, `1.5`, `true`; a NaN or infinite float, which JSON cannot spell, as
/// Rust prints it); arrays and key-value lists as their JSON text; bytes as lowercase hex.
pub fn body_text(value: &AttrValue) -> String {
    match value {
        AttrValue::Str(s) | AttrValue::Json(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Float(f) => {
            serde_json::Number::from_f64(*f).map_or_else(|| f.to_string(), |n| n.to_string())
        }
        AttrValue::Bool(b) => b.to_string(),
        AttrValue::Bytes(b) => hex::encode(b),
    }
}

/// Builds a `logs` batch; the rows come out in the order given.
pub fn to_batch(rows: &[&LogRow]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut observed_time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut severity_number = Int32Builder::with_capacity(n);
    let mut severity_text = StringBuilder::new();
    let mut body = StringBuilder::new();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut flags = UInt32Builder::with_capacity(n);
    let mut event_name = StringBuilder::new();
    let mut service_name = StringBuilder::new();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut log_attrs = TypedAttrsBuilder::default();
    let mut resource_attrs = TypedAttrsBuilder::default();
    let mut dropped_attributes = UInt32Builder::with_capacity(n);
    let mut scope_attrs = TypedAttrsBuilder::default();
    let mut resource_schema_url = StringBuilder::new();
    let mut scope_schema_url = StringBuilder::new();

    for row in rows {
        time.append_value(row.time_unix_nano);
        observed_time.append_value(row.observed_time_unix_nano);
        severity_number.append_value(row.severity_number);
        severity_text.append_value(&row.severity_text);
        body.append_option(row.body.as_ref().map(body_text));
        match &row.trace_id {
            Some(id) => trace_id.append_value(id)?,
            None => trace_id.append_null(),
        }
        match &row.span_id {
            Some(id) => span_id.append_value(id)?,
            None => span_id.append_null(),
        }
        flags.append_value(row.flags);
        event_name.append_value(&row.event_name);
        service_name.append_value(&row.service_name);
        scope_name.append_value(&row.scope_name);
        scope_version.append_value(&row.scope_version);
        log_attrs.append(&row.attrs);
        resource_attrs.append(&row.resource_attrs);
        dropped_attributes.append_value(row.dropped_attributes_count);
        scope_attrs.append(&row.scope_attrs);
        resource_schema_url.append_value(&row.resource_schema_url);
        scope_schema_url.append_value(&row.scope_schema_url);
    }

    let log_attrs = log_attrs.finish();
    let resource_attrs = resource_attrs.finish();
    let scope_attrs = scope_attrs.finish();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(time.finish()),
        Arc::new(observed_time.finish()),
        Arc::new(severity_number.finish()),
        Arc::new(severity_text.finish()),
        Arc::new(body.finish()),
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(flags.finish()),
        Arc::new(event_name.finish()),
        Arc::new(service_name.finish()),
        Arc::new(scope_name.finish()),
        Arc::new(scope_version.finish()),
    ];
    columns.extend(log_attrs.maps);
    columns.extend(resource_attrs.maps);
    columns.extend([
        Arc::new(dropped_attributes.finish()) as ArrayRef,
        log_attrs.bytes,
        resource_attrs.bytes,
    ]);
    columns.extend(scope_attrs.maps);
    columns.extend([
        scope_attrs.bytes,
        Arc::new(resource_schema_url.finish()),
        Arc::new(scope_schema_url.finish()),
    ]);
    RecordBatch::try_new(schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_text_spells_each_type_as_json_text() {
        assert_eq!(body_text(&AttrValue::Str("hi".into())), "hi");
        assert_eq!(body_text(&AttrValue::Int(42)), "42");
        assert_eq!(body_text(&AttrValue::Float(1.5)), "1.5");
        assert_eq!(body_text(&AttrValue::Bool(true)), "true");
        assert_eq!(body_text(&AttrValue::Json("[1]".into())), "[1]");
        assert_eq!(body_text(&AttrValue::Bytes(vec![0xab, 0x01])), "ab01");
    }

    #[test]
    fn batch_matches_the_schema() {
        let row = LogRow {
            time_unix_nano: 2,
            observed_time_unix_nano: 3,
            body: Some(AttrValue::Int(7)),
            trace_id: Some([1; 16]),
            service_name: "api".into(),
            attrs: vec![("k".into(), AttrValue::Bytes(vec![1]))],
            ..LogRow::default()
        };
        let batch = to_batch(&[&row, &LogRow::default()]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema());
    }
}
