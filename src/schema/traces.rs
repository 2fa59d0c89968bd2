//! The `traces` table: one row per trace (per block), so that search and trace-level
//! intrinsics read a row instead of re-aggregating spans.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, FixedSizeBinaryBuilder, Int64Array, Int64Builder, ListArray, RecordBatch,
    StringArray, StringBuilder, StructArray, TimestampNanosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::SpanRow;
use super::spans::timestamp_type;

pub const TRACE_ID: &str = "trace_id";
pub const START_TIME: &str = "start_time";
pub const END_TIME: &str = "end_time";
pub const DURATION_NS: &str = "duration_ns";
pub const ROOT_SERVICE_NAME: &str = "root_service_name";
pub const ROOT_SPAN_NAME: &str = "root_span_name";
pub const SPAN_COUNT: &str = "span_count";
pub const ERROR_COUNT: &str = "error_count";
pub const SERVICES: &str = "services";

/// Field names inside a `services` element.
pub mod service {
    pub const SERVICE_NAME: &str = "service_name";
    pub const SPAN_COUNT: &str = "span_count";
    pub const ERROR_COUNT: &str = "error_count";
}

fn service_fields() -> Fields {
    vec![
        Field::new(service::SERVICE_NAME, DataType::Utf8, false),
        Field::new(service::SPAN_COUNT, DataType::Int64, false),
        Field::new(service::ERROR_COUNT, DataType::Int64, false),
    ]
    .into()
}

fn service_item() -> Arc<Field> {
    Arc::new(Field::new(
        "item",
        DataType::Struct(service_fields()),
        false,
    ))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(TRACE_ID, DataType::FixedSizeBinary(16), false),
        Field::new(START_TIME, timestamp_type(), false),
        Field::new(END_TIME, timestamp_type(), false),
        Field::new(DURATION_NS, DataType::Int64, false),
        Field::new(ROOT_SERVICE_NAME, DataType::Utf8, true),
        Field::new(ROOT_SPAN_NAME, DataType::Utf8, true),
        Field::new(SPAN_COUNT, DataType::Int64, false),
        Field::new(ERROR_COUNT, DataType::Int64, false),
        Field::new(SERVICES, DataType::List(service_item()), false),
    ]))
});

/// The schema of the `traces` table.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Builds a `traces` batch: one row per non-empty inner slice, in the order given.
pub fn to_batch(traces: &[Vec<&SpanRow>]) -> Result<RecordBatch, ArrowError> {
    let traces: Vec<&Vec<&SpanRow>> = traces.iter().filter(|t| !t.is_empty()).collect();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(traces.len(), 16);
    let mut start = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut end = TimestampNanosecondBuilder::new().with_timezone("UTC");
    let mut duration = Int64Builder::new();
    let mut root_service = StringBuilder::new();
    let mut root_name = StringBuilder::new();
    let mut span_count = Int64Builder::new();
    let mut error_count = Int64Builder::new();
    let mut service_lengths = Vec::with_capacity(traces.len());
    let (mut svc_names, mut svc_spans, mut svc_errors) = (Vec::new(), Vec::new(), Vec::new());

    for spans in traces {
        let first = spans
            .iter()
            .map(|s| s.start_time_unix_nano)
            .min()
            .unwrap_or_default();
        let last = spans
            .iter()
            .map(|s| s.end_time_unix_nano)
            .max()
            .unwrap_or_default();
        trace_id.append_value(spans[0].trace_id)?;
        start.append_value(first);
        end.append_value(last);
        duration.append_value((last - first).max(0));
        let root = spans
            .iter()
            .filter(|s| s.parent_span_id.is_none())
            .min_by_key(|s| s.start_time_unix_nano);
        root_service.append_option(root.map(|r| &r.service_name));
        root_name.append_option(root.map(|r| &r.name));
        span_count.append_value(spans.len() as i64);
        error_count.append_value(spans.iter().filter(|s| s.is_error()).count() as i64);
        let mut per_service: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for span in spans.iter() {
            let entry = per_service.entry(&span.service_name).or_default();
            entry.0 += 1;
            entry.1 += i64::from(span.is_error());
        }
        service_lengths.push(per_service.len());
        for (name, (spans, errors)) in per_service {
            svc_names.push(name.to_string());
            svc_spans.push(spans);
            svc_errors.push(errors);
        }
    }

    let services = StructArray::try_new(
        service_fields(),
        vec![
            Arc::new(StringArray::from(svc_names)),
            Arc::new(Int64Array::from(svc_spans)),
            Arc::new(Int64Array::from(svc_errors)),
        ],
        None,
    )?;
    let services = ListArray::try_new(
        service_item(),
        OffsetBuffer::<i32>::from_lengths(service_lengths),
        Arc::new(services),
        None,
    )?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(duration.finish()),
        Arc::new(root_service.finish()),
        Arc::new(root_name.finish()),
        Arc::new(span_count.finish()),
        Arc::new(error_count.finish()),
        Arc::new(services),
    ];
    RecordBatch::try_new(schema(), columns)
}
