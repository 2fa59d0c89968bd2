//! Live traces in Arrow form: converted once per set of traces (a cut block; the open traces as
//! a reader last built them all, and those changed since) and then cut per reader by trace id
//! and time, instead of converting every selected span again for every scan.

use std::collections::HashSet;
use std::ops::Range;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::error::ArrowError;

use super::live::{LiveTrace, Selection, sorted_spans};
use crate::schema::{self, SpanRow, TableKind, TraceId};

/// Above this many runs of wanted traces a reader gets one filtered copy rather than slices.
const MAX_SLICES: usize = 16;

/// The `spans` and `traces` rows of a set of traces, with what selecting among them needs.
#[derive(Debug)]
pub struct TraceBatches {
    ids: Vec<TraceId>,
    /// Trace `i` has span rows `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
    /// Start times of the span rows, ascending within each trace.
    starts: Vec<i64>,
    spans: RecordBatch,
    /// One row per trace, in the order of `ids`.
    traces: RecordBatch,
}

impl TraceBatches {
    /// Converts `traces` (none of them empty) to Arrow, spans in row order.
    pub fn build<'a>(
        traces: impl IntoIterator<Item = (&'a TraceId, &'a LiveTrace)>,
    ) -> Result<Self, ArrowError> {
        let mut ids = Vec::new();
        let mut sorted: Vec<Vec<&SpanRow>> = Vec::new();
        for (id, trace) in traces {
            if trace.spans.is_empty() {
                continue;
            }
            ids.push(*id);
            sorted.push(sorted_spans(trace));
        }
        let mut offsets = Vec::with_capacity(sorted.len() + 1);
        offsets.push(0);
        let mut starts = Vec::with_capacity(sorted.iter().map(Vec::len).sum());
        for spans in &sorted {
            starts.extend(spans.iter().map(|s| s.start_time_unix_nano));
            offsets.push(starts.len());
        }
        Ok(Self {
            spans: schema::spans::to_batch(&sorted)?,
            traces: schema::traces::to_batch(&sorted)?,
            ids,
            offsets,
            starts,
        })
    }

    /// All span rows, one trace after the other.
    pub fn spans(&self) -> &RecordBatch {
        &self.spans
    }

    /// One row per trace.
    pub fn traces(&self) -> &RecordBatch {
        &self.traces
    }

    /// Start times of every span row, in row order.
    pub fn starts(&self) -> &[i64] {
        &self.starts
    }

    /// The rows of `table` (spans or traces) of the traces `selection` wants: the whole batch,
    /// zero-copy slices of it, or one filtered copy when the wanted traces are scattered.
    pub fn select(
        &self,
        table: TableKind,
        selection: &Selection,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        self.select_except(table, selection, &HashSet::new())
    }

    /// [`select`](Self::select), leaving out the traces `stale` lists.
    pub fn select_except(
        &self,
        table: TableKind,
        selection: &Selection,
        stale: &HashSet<TraceId>,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        let runs = self.wanted_runs(selection, stale);
        let (batch, rows): (&RecordBatch, Vec<Range<usize>>) = match table {
            TableKind::Traces => (&self.traces, runs),
            _ => (
                &self.spans,
                runs.into_iter()
                    .map(|r| self.offsets[r.start]..self.offsets[r.end])
                    .collect(),
            ),
        };
        match rows.as_slice() {
            [] => Ok(Vec::new()),
            [only] if only.len() == batch.num_rows() => Ok(vec![batch.clone()]),
            few if few.len() <= MAX_SLICES => {
                Ok(few.iter().map(|r| batch.slice(r.start, r.len())).collect())
            }
            many => {
                let mut mask = vec![false; batch.num_rows()];
                for r in many {
                    mask[r.clone()].fill(true);
                }
                Ok(vec![filter_record_batch(batch, &BooleanArray::from(mask))?])
            }
        }
    }

    /// Runs of consecutive traces the selection wants, as ranges of trace indices, leaving out
    /// those `stale` lists.
    fn wanted_runs(&self, selection: &Selection, stale: &HashSet<TraceId>) -> Vec<Range<usize>> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (i, id) in self.ids.iter().enumerate() {
            let starts = &self.starts[self.offsets[i]..self.offsets[i + 1]];
            if !selection.wants_sorted(id, starts) || (!stale.is_empty() && stale.contains(id)) {
                continue;
            }
            match runs.last_mut() {
                Some(run) if run.end == i => run.end = i + 1,
                _ => runs.push(i..i + 1),
            }
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};
    use std::sync::Arc;
    use std::time::Instant;

    fn trace(id: u8, starts: &[i64]) -> (TraceId, LiveTrace) {
        let mut spans = BTreeMap::new();
        for (i, start) in starts.iter().enumerate() {
            let span = SpanRow {
                trace_id: [id; 16],
                span_id: [id, i as u8, 0, 0, 0, 0, 0, 1],
                start_time_unix_nano: *start,
                end_time_unix_nano: *start + 10,
                name: format!("op{i}"),
                ..SpanRow::default()
            };
            spans.insert(span.span_id, Arc::new(span));
        }
        let trace = LiveTrace {
            spans,
            last_append: Instant::now(),
            bytes: 0,
        };
        ([id; 16], trace)
    }

    fn batches(traces: &[(TraceId, LiveTrace)]) -> TraceBatches {
        TraceBatches::build(traces.iter().map(|(id, t)| (id, t))).unwrap()
    }

    fn rows(batches: &[RecordBatch]) -> usize {
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    #[test]
    fn selects_by_trace_id_and_time() {
        let traces: Vec<_> = (1..=40u8)
            .map(|i| trace(i, &[i64::from(i) * 100, i64::from(i) * 100 + 5]))
            .collect();
        let all = batches(&traces);
        assert_eq!(all.spans().num_rows(), 80);
        assert_eq!(all.traces().num_rows(), 40);

        let everything = Selection::default();
        assert_eq!(
            rows(&all.select(TableKind::Spans, &everything).unwrap()),
            80
        );

        let two = Selection {
            trace_ids: Some(HashSet::from([[3; 16], [30; 16]])),
            ..Selection::default()
        };
        let spans = all.select(TableKind::Spans, &two).unwrap();
        assert_eq!((spans.len(), rows(&spans)), (2, 4));
        assert_eq!(rows(&all.select(TableKind::Traces, &two).unwrap()), 2);

        // A trace is wanted when any of its spans starts in the window: trace 10 by its
        // second span (1005), trace 11 by its first (1100).
        let window = Selection {
            start_ns: Some(1001),
            end_ns: Some(1101),
            ..Selection::default()
        };
        assert_eq!(rows(&all.select(TableKind::Traces, &window).unwrap()), 2);

        // Every other trace: more runs than slices, so one filtered copy.
        let odd = Selection {
            trace_ids: Some((1..=40u8).filter(|i| i % 2 == 1).map(|i| [i; 16]).collect()),
            ..Selection::default()
        };
        let spans = all.select(TableKind::Spans, &odd).unwrap();
        assert_eq!((spans.len(), rows(&spans)), (1, 40));
    }

    #[test]
    fn no_traces_gives_no_rows() {
        let none = batches(&[]);
        assert!(
            none.select(TableKind::Spans, &Selection::default())
                .unwrap()
                .is_empty()
        );
    }
}
