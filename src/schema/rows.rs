//! The in-memory span: what an OTLP span becomes after validation.

use serde::{Deserialize, Serialize};

pub use crate::ids::{SpanId, TraceId};

/// An attribute value with its OTLP type kept: TraceQL and SQL compare `500` and `"500"`
/// differently, so the type must survive storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Arrays and key-value lists, encoded as JSON text.
    Json(String),
    /// Raw bytes, kept apart from the JSON text so that they come back as bytes.
    Bytes(Vec<u8>),
}

/// One span, flattened with its resource and scope.
///
/// Every OTLP field of the span, its resource and its scope is here, so that a trace read back
/// by id equals the one pushed (tempo-vulture compares them field by field). Adding a field
/// changes the WAL record format: see `ingester::wal`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanRow {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub trace_state: String,
    pub name: String,
    /// OTLP `SpanKind` number.
    pub kind: i32,
    /// OTLP `Status.code` number.
    pub status_code: i32,
    pub status_message: String,
    pub start_time_unix_nano: i64,
    pub end_time_unix_nano: i64,
    /// OTLP `Span.flags`: W3C trace flags in bits 0–7, `is_remote` in bits 8–9.
    pub flags: u32,
    pub dropped_attributes_count: u32,
    pub dropped_events_count: u32,
    pub dropped_links_count: u32,
    pub service_name: String,
    pub scope_name: String,
    pub scope_version: String,
    pub scope_attrs: Vec<(String, AttrValue)>,
    pub scope_dropped_attributes_count: u32,
    /// `ScopeSpans.schema_url`.
    pub scope_schema_url: String,
    pub span_attrs: Vec<(String, AttrValue)>,
    pub resource_attrs: Vec<(String, AttrValue)>,
    pub resource_dropped_attributes_count: u32,
    /// `ResourceSpans.schema_url`.
    pub resource_schema_url: String,
    pub events: Vec<EventRow>,
    pub links: Vec<LinkRow>,
}

/// A span event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventRow {
    pub time_unix_nano: i64,
    pub name: String,
    pub attrs: Vec<(String, AttrValue)>,
    pub dropped_attributes_count: u32,
}

/// A span link.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkRow {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub trace_state: String,
    pub attrs: Vec<(String, AttrValue)>,
    pub dropped_attributes_count: u32,
    /// OTLP `Link.flags`, as in [`SpanRow::flags`].
    pub flags: u32,
}

impl SpanRow {
    /// Span duration in nanoseconds; a span that ends before it starts counts as zero.
    pub fn duration_ns(&self) -> i64 {
        (self.end_time_unix_nano - self.start_time_unix_nano).max(0)
    }

    /// True when the span's status is ERROR.
    pub fn is_error(&self) -> bool {
        self.status_code == STATUS_CODE_ERROR
    }

    /// The span's size in memory while held live, with what holding it costs: used to cut
    /// blocks by size and to cap what a tenant holds.
    pub fn approx_bytes(&self) -> usize {
        let text = |s: &str| heap_bytes(s.len());
        size_of::<SpanRow>()
            + HELD_SPAN_OVERHEAD
            + text(&self.name)
            + text(&self.status_message)
            + text(&self.service_name)
            + text(&self.trace_state)
            + text(&self.scope_name)
            + text(&self.scope_version)
            + text(&self.scope_schema_url)
            + text(&self.resource_schema_url)
            + attrs_bytes(&self.span_attrs)
            + attrs_bytes(&self.resource_attrs)
            + attrs_bytes(&self.scope_attrs)
            + self
                .events
                .iter()
                .map(|e| size_of::<EventRow>() + text(&e.name) + attrs_bytes(&e.attrs))
                .sum::<usize>()
            + self
                .links
                .iter()
                .map(|l| size_of::<LinkRow>() + text(&l.trace_state) + attrs_bytes(&l.attrs))
                .sum::<usize>()
    }
}

/// What holding a span live costs besides the span: its `Arc` and its entry in its trace's
/// span map.
const HELD_SPAN_OVERHEAD: usize = 48;

/// Bytes `len` bytes of text take on the heap: the allocator hands out 16-byte steps, and an
/// empty string allocates nothing.
pub(crate) fn heap_bytes(len: usize) -> usize {
    len.div_ceil(16) * 16
}

/// An attribute list's size in memory: its entries, and their keys' and values' text.
pub(crate) fn attrs_bytes(attrs: &[(String, AttrValue)]) -> usize {
    attrs
        .iter()
        .map(|(k, v)| {
            size_of::<(String, AttrValue)>()
                + heap_bytes(k.len())
                + match v {
                    AttrValue::Str(s) | AttrValue::Json(s) => heap_bytes(s.len()),
                    AttrValue::Bytes(b) => heap_bytes(b.len()),
                    _ => 0,
                }
        })
        .sum()
}

/// OTLP `Status.code` for errors.
pub const STATUS_CODE_ERROR: i32 = 2;

/// Lowercase name of an OTLP span kind, as stored in the `kind` column.
pub fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// Lowercase name of an OTLP status code, as stored in the `status_code` column.
pub fn status_name(code: i32) -> &'static str {
    match code {
        1 => "ok",
        STATUS_CODE_ERROR => "error",
        _ => "unset",
    }
}
