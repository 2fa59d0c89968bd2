//! The Arrow schemas of spanlake's tables and the conversion from OTLP into them.
//!
//! This module is the one place that spells column names: everything else refers to the
//! constants in [`spans`] and [`traces`]. It owns the in-memory span representation
//! ([`SpanRow`]) that the WAL persists and the ingester holds, and turns sets of rows into
//! Arrow record batches. It does no I/O and imports nothing of spanlake but [`crate::ids`].

pub mod attrs;
pub mod display;
pub mod nested_set;
pub mod otlp;
pub mod rows;
pub mod spans;
pub mod to_otlp;
pub mod traces;

use arrow::datatypes::SchemaRef;

pub use rows::{AttrValue, EventRow, LinkRow, SpanId, SpanRow, TraceId};

/// Version of the on-disk schema, recorded in every block's meta. Version 2 added nullable
/// columns at the end of `spans` (see [`spans`]); blocks of version 1 read with them null.
pub const SCHEMA_VERSION: u32 = 2;

/// The tables of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// One row per span.
    Spans,
    /// One row per trace and block.
    Traces,
}

impl TableKind {
    /// The SQL name of the table.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Spans => "spans",
            TableKind::Traces => "traces",
        }
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        match self {
            TableKind::Spans => spans::schema(),
            TableKind::Traces => traces::schema(),
        }
    }

    /// The table's trace id column.
    pub fn trace_id_column(self) -> &'static str {
        match self {
            TableKind::Spans => spans::TRACE_ID,
            TableKind::Traces => traces::TRACE_ID,
        }
    }

    /// The table's start time column.
    pub fn start_time_column(self) -> &'static str {
        match self {
            TableKind::Spans => spans::START_TIME,
            TableKind::Traces => traces::START_TIME,
        }
    }
}
