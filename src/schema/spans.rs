//! The `spans` table: one row per span.
//!
//! Columns added after schema version 1 (the OTLP fields that tempo-vulture compares but
//! queries rarely need: flags, dropped counts, schema URLs, scope attributes, bytes attributes)
//! are nullable and come after all older ones, so that blocks written before them still read:
//! DataFusion fills a column missing from a Parquet file with nulls, and readers take null as
//! zero or empty. The same holds for the fields added to the `events` and `links` elements.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, FixedSizeBinaryBuilder, Int32Builder, Int64Builder, ListArray, RecordBatch,
    StringBuilder, StructArray, TimestampNanosecondBuilder, UInt32Builder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use super::attrs::{self, TypedAttrsBuilder};
use super::nested_set::{self, NestedSet};
use super::rows::{AttrValue, SpanRow, kind_name, status_name};

pub const TRACE_ID: &str = "trace_id";
pub const SPAN_ID: &str = "span_id";
pub const PARENT_SPAN_ID: &str = "parent_span_id";
pub const TRACE_STATE: &str = "trace_state";
pub const NAME: &str = "name";
pub const KIND: &str = "kind";
pub const STATUS_CODE: &str = "status_code";
pub const STATUS_MESSAGE: &str = "status_message";
pub const START_TIME: &str = "start_time";
pub const END_TIME: &str = "end_time";
pub const DURATION_NS: &str = "duration_ns";
pub const SERVICE_NAME: &str = "service_name";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
pub const SPAN_ATTRS: &str = "span_attrs";
pub const RESOURCE_ATTRS: &str = "resource_attrs";
pub const EVENTS: &str = "events";
pub const LINKS: &str = "links";
pub const NESTED_SET_LEFT: &str = "nested_set_left";
pub const NESTED_SET_RIGHT: &str = "nested_set_right";
pub const NESTED_SET_PARENT: &str = "nested_set_parent";
pub const FLAGS: &str = "flags";
pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
pub const DROPPED_EVENTS_COUNT: &str = "dropped_events_count";
pub const DROPPED_LINKS_COUNT: &str = "dropped_links_count";
pub const RESOURCE_DROPPED_ATTRIBUTES_COUNT: &str = "resource_dropped_attributes_count";
pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
pub const SCOPE_ATTRS: &str = "scope_attrs";
pub const SCOPE_DROPPED_ATTRIBUTES_COUNT: &str = "scope_dropped_attributes_count";
pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";

/// Field names inside an `events` element.
pub mod event {
    pub const TIME: &str = "time";
    pub const NAME: &str = "name";
    pub const ATTRS: &str = "attrs";
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
}

/// Field names inside a `links` element.
pub mod link {
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const ATTRS: &str = "attrs";
    pub const DROPPED_ATTRIBUTES_COUNT: &str = "dropped_attributes_count";
    pub const FLAGS: &str = "flags";
}

/// Where a dedicated column takes its value from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrScope {
    Span,
    Resource,
}

/// The Arrow type of a dedicated column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedicatedType {
    Str,
    Int,
}

/// A well-known attribute copied into its own column so that filters on it read one narrow,
/// dictionary-encoded column instead of a map. The typed maps keep the attribute too.
#[derive(Debug, Clone, Copy)]
pub struct DedicatedColumn {
    pub column: &'static str,
    pub scope: AttrScope,
    /// Attribute keys, current semantic-convention name first; the first one present wins.
    pub keys: &'static [&'static str],
    pub ty: DedicatedType,
}

/// The dedicated columns, in column order.
pub const DEDICATED: &[DedicatedColumn] = &[
    dedicated(
        "http_method",
        AttrScope::Span,
        &["http.request.method", "http.method"],
        DedicatedType::Str,
    ),
    dedicated(
        "http_status_code",
        AttrScope::Span,
        &["http.response.status_code", "http.status_code"],
        DedicatedType::Int,
    ),
    dedicated(
        "http_route",
        AttrScope::Span,
        &["http.route"],
        DedicatedType::Str,
    ),
    dedicated(
        "http_url",
        AttrScope::Span,
        &["url.full", "http.url"],
        DedicatedType::Str,
    ),
    dedicated(
        "db_system",
        AttrScope::Span,
        &["db.system.name", "db.system"],
        DedicatedType::Str,
    ),
    dedicated(
        "rpc_system",
        AttrScope::Span,
        &["rpc.system"],
        DedicatedType::Str,
    ),
    dedicated(
        "rpc_service",
        AttrScope::Span,
        &["rpc.service"],
        DedicatedType::Str,
    ),
    dedicated(
        "rpc_method",
        AttrScope::Span,
        &["rpc.method"],
        DedicatedType::Str,
    ),
    dedicated(
        "k8s_namespace_name",
        AttrScope::Resource,
        &["k8s.namespace.name"],
        DedicatedType::Str,
    ),
    dedicated(
        "k8s_pod_name",
        AttrScope::Resource,
        &["k8s.pod.name"],
        DedicatedType::Str,
    ),
    dedicated(
        "deployment_environment",
        AttrScope::Resource,
        &["deployment.environment.name", "deployment.environment"],
        DedicatedType::Str,
    ),
];

const fn dedicated(
    column: &'static str,
    scope: AttrScope,
    keys: &'static [&'static str],
    ty: DedicatedType,
) -> DedicatedColumn {
    DedicatedColumn {
        column,
        scope,
        keys,
        ty,
    }
}

/// The timestamp type of every time column.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn event_fields() -> Fields {
    let mut fields = vec![
        Field::new(event::TIME, timestamp_type(), false),
        Field::new(event::NAME, DataType::Utf8, false),
    ];
    fields.extend(attrs::fields(event::ATTRS, false));
    // Added in schema version 2: nullable, see the module doc.
    fields.extend([
        attrs::bytes_field(event::ATTRS),
        Field::new(event::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, true),
    ]);
    fields.into()
}

fn link_fields() -> Fields {
    let mut fields = vec![
        Field::new(link::TRACE_ID, DataType::FixedSizeBinary(16), false),
        Field::new(link::SPAN_ID, DataType::FixedSizeBinary(8), false),
        Field::new(link::TRACE_STATE, DataType::Utf8, false),
    ];
    fields.extend(attrs::fields(link::ATTRS, false));
    // Added in schema version 2: nullable, see the module doc.
    fields.extend([
        attrs::bytes_field(link::ATTRS),
        Field::new(link::DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, true),
        Field::new(link::FLAGS, DataType::UInt32, true),
    ]);
    fields.into()
}

fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new(
        "item",
        DataType::Struct(fields),
        false,
    )))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new(TRACE_ID, DataType::FixedSizeBinary(16), false),
        Field::new(SPAN_ID, DataType::FixedSizeBinary(8), false),
        Field::new(PARENT_SPAN_ID, DataType::FixedSizeBinary(8), true),
        Field::new(TRACE_STATE, DataType::Utf8, false),
        Field::new(NAME, DataType::Utf8, false),
        Field::new(KIND, DataType::Utf8, false),
        Field::new(STATUS_CODE, DataType::Utf8, false),
        Field::new(STATUS_MESSAGE, DataType::Utf8, false),
        Field::new(START_TIME, timestamp_type(), false),
        Field::new(END_TIME, timestamp_type(), false),
        Field::new(DURATION_NS, DataType::Int64, false),
        Field::new(SERVICE_NAME, DataType::Utf8, false),
        Field::new(SCOPE_NAME, DataType::Utf8, false),
        Field::new(SCOPE_VERSION, DataType::Utf8, false),
    ];
    fields.extend(attrs::fields(SPAN_ATTRS, false));
    fields.extend(attrs::fields(RESOURCE_ATTRS, false));
    fields.extend(DEDICATED.iter().map(|d| {
        let ty = match d.ty {
            DedicatedType::Str => DataType::Utf8,
            DedicatedType::Int => DataType::Int64,
        };
        Field::new(d.column, ty, true)
    }));
    fields.extend([
        Field::new(EVENTS, list_of(event_fields()), false),
        Field::new(LINKS, list_of(link_fields()), false),
        Field::new(NESTED_SET_LEFT, DataType::Int32, false),
        Field::new(NESTED_SET_RIGHT, DataType::Int32, false),
        Field::new(NESTED_SET_PARENT, DataType::Int32, false),
        // Added in schema version 2: nullable, see the module doc.
        Field::new(FLAGS, DataType::UInt32, true),
        Field::new(DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, true),
        Field::new(DROPPED_EVENTS_COUNT, DataType::UInt32, true),
        Field::new(DROPPED_LINKS_COUNT, DataType::UInt32, true),
        attrs::bytes_field(SPAN_ATTRS),
        attrs::bytes_field(RESOURCE_ATTRS),
        Field::new(RESOURCE_DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, true),
        Field::new(RESOURCE_SCHEMA_URL, DataType::Utf8, true),
    ]);
    fields.extend(attrs::fields(SCOPE_ATTRS, true));
    fields.extend([
        attrs::bytes_field(SCOPE_ATTRS),
        Field::new(SCOPE_DROPPED_ATTRIBUTES_COUNT, DataType::UInt32, true),
        Field::new(SCOPE_SCHEMA_URL, DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
});

/// The schema of the `spans` table.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

fn find_attr<'a>(attrs: &'a [(String, AttrValue)], keys: &[&str]) -> Option<&'a AttrValue> {
    keys.iter()
        .find_map(|key| attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v))
}

/// Builds a `spans` batch from whole traces. Each inner slice holds one trace's spans; the
/// rows come out in the order given, and the nested-set columns are computed per trace.
pub fn to_batch(traces: &[Vec<&SpanRow>]) -> Result<RecordBatch, ArrowError> {
    let rows: usize = traces.iter().map(Vec::len).sum();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(rows, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(rows, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(rows, 8);
    let mut trace_state = StringBuilder::new();
    let mut name = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut status_code = StringBuilder::new();
    let mut status_message = StringBuilder::new();
    let mut start = TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut end = TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut duration = Int64Builder::with_capacity(rows);
    let mut service = StringBuilder::new();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut span_attrs = TypedAttrsBuilder::default();
    let mut resource_attrs = TypedAttrsBuilder::default();
    let mut dedicated: Vec<DedicatedBuilder> = DEDICATED
        .iter()
        .map(|d| DedicatedBuilder::new(d.ty))
        .collect();
    let mut events = EventsBuilder::default();
    let mut links = LinksBuilder::default();
    let mut left = Int32Builder::with_capacity(rows);
    let mut right = Int32Builder::with_capacity(rows);
    let mut nested_parent = Int32Builder::with_capacity(rows);
    let mut flags = UInt32Builder::with_capacity(rows);
    let mut dropped_attributes = UInt32Builder::with_capacity(rows);
    let mut dropped_events = UInt32Builder::with_capacity(rows);
    let mut dropped_links = UInt32Builder::with_capacity(rows);
    let mut resource_dropped_attributes = UInt32Builder::with_capacity(rows);
    let mut resource_schema_url = StringBuilder::new();
    let mut scope_attrs = TypedAttrsBuilder::default();
    let mut scope_dropped_attributes = UInt32Builder::with_capacity(rows);
    let mut scope_schema_url = StringBuilder::new();

    for trace in traces {
        let nested = nested_set::compute(trace);
        for (
            span,
            NestedSet {
                left: l,
                right: r,
                parent: p,
            },
        ) in trace.iter().zip(nested)
        {
            trace_id.append_value(span.trace_id)?;
            span_id.append_value(span.span_id)?;
            match &span.parent_span_id {
                Some(p) => parent.append_value(p)?,
                None => parent.append_null(),
            }
            trace_state.append_value(&span.trace_state);
            name.append_value(&span.name);
            kind.append_value(kind_name(span.kind));
            status_code.append_value(status_name(span.status_code));
            status_message.append_value(&span.status_message);
            start.append_value(span.start_time_unix_nano);
            end.append_value(span.end_time_unix_nano);
            duration.append_value(span.duration_ns());
            service.append_value(&span.service_name);
            scope_name.append_value(&span.scope_name);
            scope_version.append_value(&span.scope_version);
            span_attrs.append(&span.span_attrs);
            resource_attrs.append(&span.resource_attrs);
            for (d, builder) in DEDICATED.iter().zip(&mut dedicated) {
                let attrs = match d.scope {
                    AttrScope::Span => &span.span_attrs,
                    AttrScope::Resource => &span.resource_attrs,
                };
                builder.append(find_attr(attrs, d.keys));
            }
            events.append(span);
            links.append(span)?;
            left.append_value(l);
            right.append_value(r);
            nested_parent.append_value(p);
            flags.append_value(span.flags);
            dropped_attributes.append_value(span.dropped_attributes_count);
            dropped_events.append_value(span.dropped_events_count);
            dropped_links.append_value(span.dropped_links_count);
            resource_dropped_attributes.append_value(span.resource_dropped_attributes_count);
            resource_schema_url.append_value(&span.resource_schema_url);
            scope_attrs.append(&span.scope_attrs);
            scope_dropped_attributes.append_value(span.scope_dropped_attributes_count);
            scope_schema_url.append_value(&span.scope_schema_url);
        }
    }

    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(name.finish()),
        Arc::new(kind.finish()),
        Arc::new(status_code.finish()),
        Arc::new(status_message.finish()),
        Arc::new(start.finish()),
        Arc::new(end.finish()),
        Arc::new(duration.finish()),
        Arc::new(service.finish()),
        Arc::new(scope_name.finish()),
        Arc::new(scope_version.finish()),
    ];
    let span_attrs = span_attrs.finish();
    let resource_attrs = resource_attrs.finish();
    let scope_attrs = scope_attrs.finish();
    columns.extend(span_attrs.maps);
    columns.extend(resource_attrs.maps);
    columns.extend(dedicated.into_iter().map(DedicatedBuilder::finish));
    columns.extend([
        events.finish()?,
        links.finish()?,
        Arc::new(left.finish()),
        Arc::new(right.finish()),
        Arc::new(nested_parent.finish()),
        Arc::new(flags.finish()),
        Arc::new(dropped_attributes.finish()),
        Arc::new(dropped_events.finish()),
        Arc::new(dropped_links.finish()),
        span_attrs.bytes,
        resource_attrs.bytes,
        Arc::new(resource_dropped_attributes.finish()),
        Arc::new(resource_schema_url.finish()),
    ]);
    columns.extend(scope_attrs.maps);
    columns.extend([
        scope_attrs.bytes,
        Arc::new(scope_dropped_attributes.finish()),
        Arc::new(scope_schema_url.finish()),
    ]);
    RecordBatch::try_new(schema(), columns)
}

/// Builds one dedicated column: the attribute's value when it has the column's type, else null.
enum DedicatedBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
}

impl DedicatedBuilder {
    fn new(ty: DedicatedType) -> Self {
        match ty {
            DedicatedType::Str => Self::Str(StringBuilder::new()),
            DedicatedType::Int => Self::Int(Int64Builder::new()),
        }
    }

    fn append(&mut self, value: Option<&AttrValue>) {
        match (self, value) {
            (Self::Str(b), Some(AttrValue::Str(v))) => b.append_value(v),
            (Self::Str(b), _) => b.append_null(),
            (Self::Int(b), Some(AttrValue::Int(v))) => b.append_value(*v),
            (Self::Int(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Str(mut b) => Arc::new(b.finish()),
            Self::Int(mut b) => Arc::new(b.finish()),
        }
    }
}

#[derive(Default)]
struct EventsBuilder {
    offsets: Vec<usize>,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attrs: TypedAttrsBuilder,
    dropped_attributes: UInt32Builder,
}

impl EventsBuilder {
    fn append(&mut self, span: &SpanRow) {
        for event in &span.events {
            self.time.append_value(event.time_unix_nano);
            self.name.append_value(&event.name);
            self.attrs.append(&event.attrs);
            self.dropped_attributes
                .append_value(event.dropped_attributes_count);
        }
        self.offsets.push(span.events.len());
    }

    fn finish(mut self) -> Result<ArrayRef, ArrowError> {
        let mut children: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.name.finish()),
        ];
        let attrs = self.attrs.finish();
        children.extend(attrs.maps);
        children.extend([attrs.bytes, Arc::new(self.dropped_attributes.finish())]);
        list_array(event_fields(), children, &self.offsets)
    }
}

struct LinksBuilder {
    offsets: Vec<usize>,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
    trace_state: StringBuilder,
    attrs: TypedAttrsBuilder,
    dropped_attributes: UInt32Builder,
    flags: UInt32Builder,
}

impl Default for LinksBuilder {
    fn default() -> Self {
        Self {
            offsets: Vec::new(),
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
            trace_state: StringBuilder::new(),
            attrs: TypedAttrsBuilder::default(),
            dropped_attributes: UInt32Builder::new(),
            flags: UInt32Builder::new(),
        }
    }
}

impl LinksBuilder {
    fn append(&mut self, span: &SpanRow) -> Result<(), ArrowError> {
        for link in &span.links {
            self.trace_id.append_value(link.trace_id)?;
            self.span_id.append_value(link.span_id)?;
            self.trace_state.append_value(&link.trace_state);
            self.attrs.append(&link.attrs);
            self.dropped_attributes
                .append_value(link.dropped_attributes_count);
            self.flags.append_value(link.flags);
        }
        self.offsets.push(span.links.len());
        Ok(())
    }

    fn finish(mut self) -> Result<ArrayRef, ArrowError> {
        let mut children: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
        ];
        let attrs = self.attrs.finish();
        children.extend(attrs.maps);
        children.extend([
            attrs.bytes,
            Arc::new(self.dropped_attributes.finish()),
            Arc::new(self.flags.finish()),
        ]);
        list_array(link_fields(), children, &self.offsets)
    }
}

fn list_array(
    fields: Fields,
    children: Vec<ArrayRef>,
    lengths: &[usize],
) -> Result<ArrayRef, ArrowError> {
    let values = StructArray::try_new(fields.clone(), children, None)?;
    let item = Arc::new(Field::new("item", DataType::Struct(fields), false));
    let offsets = OffsetBuffer::<i32>::from_lengths(lengths.iter().copied());
    Ok(Arc::new(ListArray::try_new(
        item,
        offsets,
        Arc::new(values),
        None,
    )?))
}
