//! The Arrow schemas of spanlake's tables and the conversion from OTLP into them.
//!
//! This module is the one place that spells column names: everything else refers to the
//! constants in [`spans`] and [`traces`]. It owns the in-memory span representation
//! ([`SpanRow`]) that the WAL persists and the ingester holds, and turns sets of rows into
//! Arrow record batches. It does no I/O.

pub mod attrs;
pub mod display;
pub mod nested_set;
pub mod otlp;
pub mod rows;
pub mod spans;
pub mod to_otlp;
pub mod traces;

pub use rows::{AttrValue, EventRow, LinkRow, SpanId, SpanRow, TraceId};

/// Version of the on-disk schema, recorded in every block's meta. Version 2 added nullable
/// columns at the end of `spans` (see [`spans`]); blocks of version 1 read with them null.
pub const SCHEMA_VERSION: u32 = 2;

/// Hex form of an id, lowercase, as OTLP JSON and Tempo spell trace and span ids.
pub fn id_hex(id: &[u8]) -> String {
    hex::encode(id)
}
