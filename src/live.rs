//! The live-rows contract between the ingester and the tables: "the live rows of a tenant's
//! table, filtered by block, trace id and time" (the reader projects them). The
//! [`tables`](crate::tables) read through [`LiveSource`];
//! the [`ingester`](crate::ingester) implements it in process, and a remote ingester can
//! implement it over the network with the same [`LiveScan`] (which has a protobuf form for
//! that). This module sits below both and imports neither.

use std::sync::Arc;

use arrow::array::RecordBatch;

use crate::schema::{TableKind, TraceId};

/// A request for live rows: serialisable, so that it can travel to a remote ingester.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveScan {
    /// Whose rows.
    pub tenant: String,
    /// Which table's rows.
    pub table: TableKind,
    /// Blocks the reader already reads from Parquet: their rows are left out.
    pub exclude_blocks: Vec<String>,
    /// Only these traces (log records of these traces), when given.
    pub trace_ids: Option<Vec<TraceId>>,
    /// Only traces with a span starting at or after this time, or log records and points of
    /// this time or later (Unix nanoseconds).
    pub start_ns: Option<i64>,
    /// Only traces with a span starting before this time, or records and points before it.
    pub end_ns: Option<i64>,
    /// Only rows of these shards, when given (a cluster reads each shard from one holder).
    pub shards: Option<Vec<u32>>,
}

/// A table's protobuf form.
pub fn table_to_proto(table: TableKind) -> crate::proto::Table {
    match table {
        TableKind::Spans => crate::proto::Table::Spans,
        TableKind::Traces => crate::proto::Table::Traces,
        TableKind::Logs => crate::proto::Table::Logs,
        TableKind::Metrics => crate::proto::Table::Metrics,
    }
}

/// The table a protobuf `Table` value names.
pub fn table_from_proto(table: i32) -> Result<TableKind, String> {
    match crate::proto::Table::try_from(table) {
        Ok(crate::proto::Table::Spans) => Ok(TableKind::Spans),
        Ok(crate::proto::Table::Traces) => Ok(TableKind::Traces),
        Ok(crate::proto::Table::Logs) => Ok(TableKind::Logs),
        Ok(crate::proto::Table::Metrics) => Ok(TableKind::Metrics),
        Err(_) => Err(format!("unknown table {table}")),
    }
}

impl From<&LiveScan> for crate::proto::LiveScan {
    fn from(scan: &LiveScan) -> Self {
        Self {
            tenant: scan.tenant.clone(),
            table: table_to_proto(scan.table) as i32,
            exclude_blocks: scan.exclude_blocks.clone(),
            trace_ids: scan.trace_ids.as_ref().map(|ids| crate::proto::TraceIds {
                ids: ids.iter().map(|id| id.to_vec()).collect(),
            }),
            start_ns: scan.start_ns,
            end_ns: scan.end_ns,
            shards: scan.shards.as_ref().map(|shards| crate::proto::ShardList {
                shards: shards.clone(),
            }),
        }
    }
}

impl TryFrom<crate::proto::LiveScan> for LiveScan {
    type Error = String;

    fn try_from(scan: crate::proto::LiveScan) -> Result<Self, String> {
        let table = table_from_proto(scan.table)?;
        let trace_ids = scan
            .trace_ids
            .map(|ids| {
                ids.ids
                    .iter()
                    .map(|id| {
                        TraceId::try_from(id.as_slice())
                            .map_err(|_| format!("a trace id must be 16 bytes, got {}", id.len()))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Self {
            tenant: scan.tenant,
            table,
            exclude_blocks: scan.exclude_blocks,
            trace_ids,
            start_ns: scan.start_ns,
            end_ns: scan.end_ns,
            shards: scan.shards.map(|list| list.shards),
        })
    }
}

/// Where live rows come from: the in-process ingester, later a remote one over Arrow Flight.
pub trait LiveSource: std::fmt::Debug + Send + Sync {
    /// Live rows of the requested table, in the table's full schema.
    fn scan(&self, request: &LiveScan) -> Result<Vec<RecordBatch>, arrow::error::ArrowError>;

    /// A pin for a reader about to list blocks: while it is held, the rows of blocks committed
    /// after it was taken stay live, so a scan excluding the listed blocks still finds them.
    fn pin(&self) -> Arc<dyn LivePin>;
}

/// What [`LiveSource::pin`] gives; dropping it lets the source release those rows.
pub trait LivePin: std::fmt::Debug + Send + Sync {
    /// False once the source released rows the pin was meant to keep (a pin is honoured for a
    /// bounded time only): a scan it covers may then miss rows, and must fail instead.
    fn intact(&self) -> bool;
}

/// The pin of a source that never releases live rows a reader may still need.
#[derive(Debug)]
pub struct AlwaysLive;

impl LivePin for AlwaysLive {
    fn intact(&self) -> bool {
        true
    }
}
