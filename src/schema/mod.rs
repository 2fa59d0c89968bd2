//! The Arrow schemas of spanlake's tables and the conversion from OTLP into them.
//!
//! This module is the one place that spells column names: everything else refers to the
//! constants in [`spans`] and [`traces`]. It owns the in-memory span representation
//! ([`SpanRow`]) that the WAL persists and the ingester holds, and turns sets of rows into
//! Arrow record batches. It does no I/O and imports nothing of spanlake but [`crate::ids`].

pub mod attrs;
pub mod display;
pub mod logs;
pub mod metrics;
pub mod nested_set;
pub mod otlp;
pub mod rows;
pub mod signals;
pub mod spans;
pub mod to_otlp;
pub mod traces;

use arrow::datatypes::SchemaRef;

pub use rows::{AttrValue, EventRow, LinkRow, SpanId, SpanRow, TraceId};
pub use signals::{ExemplarRow, ExpBuckets, LogRow, MetricType, PointRow};

/// Version of the on-disk schema, recorded in every block's meta. Version 2 added nullable
/// columns at the end of `spans` (see [`spans`]); blocks of version 1 read with them null.
pub const SCHEMA_VERSION: u32 = 2;

/// The signals spanlake stores, each in blocks of its own.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Signal {
    #[default]
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    /// The signal's name, also its directory in block storage.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
        }
    }
}

/// The tables of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// One row per span.
    Spans,
    /// One row per trace and block.
    Traces,
    /// One row per log record.
    Logs,
    /// One row per metric data point.
    Metrics,
}

impl TableKind {
    /// Every table, in the order sessions register them.
    pub const ALL: [TableKind; 4] = [
        TableKind::Spans,
        TableKind::Traces,
        TableKind::Logs,
        TableKind::Metrics,
    ];

    /// The SQL name of the table.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Spans => "spans",
            TableKind::Traces => "traces",
            TableKind::Logs => "logs",
            TableKind::Metrics => "metrics",
        }
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        match self {
            TableKind::Spans => spans::schema(),
            TableKind::Traces => traces::schema(),
            TableKind::Logs => logs::schema(),
            TableKind::Metrics => metrics::schema(),
        }
    }

    /// The signal whose blocks hold the table's rows.
    pub fn signal(self) -> Signal {
        match self {
            TableKind::Spans | TableKind::Traces => Signal::Traces,
            TableKind::Logs => Signal::Logs,
            TableKind::Metrics => Signal::Metrics,
        }
    }

    /// The table's trace id column, if it has one.
    pub fn trace_id_column(self) -> Option<&'static str> {
        match self {
            TableKind::Spans => Some(spans::TRACE_ID),
            TableKind::Traces => Some(traces::TRACE_ID),
            TableKind::Logs => Some(logs::TRACE_ID),
            TableKind::Metrics => None,
        }
    }

    /// The time column that block time ranges describe: span start, log or point time.
    pub fn time_column(self) -> &'static str {
        match self {
            TableKind::Spans => spans::START_TIME,
            TableKind::Traces => traces::START_TIME,
            TableKind::Logs => logs::TIME,
            TableKind::Metrics => metrics::TIME,
        }
    }

    /// The column whose distinct values a block lists in its meta, for pruning by name.
    pub fn name_column(self) -> Option<&'static str> {
        match self {
            TableKind::Spans | TableKind::Traces => None,
            TableKind::Logs => Some(logs::SERVICE_NAME),
            TableKind::Metrics => Some(metrics::METRIC_NAME),
        }
    }
}
