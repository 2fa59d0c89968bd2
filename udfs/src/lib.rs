//! DataFusion functions for trace analytics, usable by any DataFusion application.
//!
//! Ids:
//! - `to_trace_id(text)` / `to_span_id(text)`: a hex id (as OTLP JSON and Tempo print it) to the
//!   16- or 8-byte binary stored in `trace_id` / `span_id` columns. With a constant argument the
//!   call folds to a literal during planning, so `WHERE trace_id = to_trace_id('…')` still prunes
//!   Parquet row groups by statistics and bloom filter.
//! - `id_hex(binary)`: any binary id back to lowercase hex.
//! - `id_key(trace_id)` / `key_id(key)`: a 16-byte id as a 128-bit integer key and back, for
//!   grouping and joining on ids without DataFusion's row format.
//!
//! Maps:
//! - `map_value(map, key)`: the value of a constant key in each row's map (NULL without it),
//!   as `map[key]` gives, gathered for the whole batch at once.
//!
//! Mergeable quantile sketches ([`sketch`] describes the sketch and its encoding):
//! - `sketch(value [, alpha])` → the sketch of a numeric column (Binary), relative accuracy
//!   `alpha` (default 0.01); `sketch_merge(sketch)` → the merge of a column of sketches;
//! - `sketch_quantile(sketch, q)`, `sketch_quantiles(sketch, [q, …])`, `sketch_count(sketch)`,
//!   `sketch_sum(sketch)`, `sketch_min(sketch)`, `sketch_max(sketch)`;
//! - `approx_quantile_dd(value, q)`: a quantile in one step.
//!
//! Merging is exact: the sketch of a union is bit-identical to the merge of the sketches of its
//! parts, whatever the partitioning, so percentiles stay right across partitions, blocks, time
//! buckets and shards.
//!
//! OTLP metrics (the `counters` module documents their semantics):
//! - `counter_increase(value, time)` / `counter_rate(value, time)`: the increase of a cumulative
//!   counter over a group's samples, and that increase per second, with restarts handled as
//!   Prometheus does;
//! - `histogram_quantile(q, explicit_bounds, bucket_counts)`: a quantile of an explicit-bucket
//!   histogram; `histogram_merge(bucket_counts)` → the element-wise sum of a column of bucket
//!   counts, to read quantiles across series.
//!
//! ```
//! # use datafusion::prelude::SessionContext;
//! let ctx = SessionContext::new();
//! spanlake_udfs::register_all(&ctx);
//! ```

mod counters;
mod id_keys;
mod ids;
mod maps;
pub mod sketch;
mod sketch_fns;

use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::prelude::SessionContext;

pub use counters::{CounterAggregate, HistogramMerge, HistogramQuantile};
pub use id_keys::IdKey;
pub use ids::{IdError, IdHex, ToId, parse_hex_id};
pub use maps::MapValue;
pub use sketch::{Sketch, SketchError};
pub use sketch_fns::{SketchAggregate, SketchRead};

/// Every scalar function of this crate.
pub fn scalar_functions() -> Vec<ScalarUDF> {
    let mut functions = vec![
        ScalarUDF::new_from_impl(ToId::trace_id()),
        ScalarUDF::new_from_impl(ToId::span_id()),
        ScalarUDF::new_from_impl(IdHex::default()),
        ScalarUDF::new_from_impl(MapValue::default()),
        ScalarUDF::new_from_impl(IdKey::to_key()),
        ScalarUDF::new_from_impl(IdKey::to_id()),
        ScalarUDF::new_from_impl(HistogramQuantile::default()),
    ];
    functions.extend(SketchRead::all().into_iter().map(ScalarUDF::new_from_impl));
    functions
}

/// Every aggregate function of this crate.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::new_from_impl(SketchAggregate::build()),
        AggregateUDF::new_from_impl(SketchAggregate::merge()),
        AggregateUDF::new_from_impl(SketchAggregate::quantile()),
        AggregateUDF::new_from_impl(CounterAggregate::increase()),
        AggregateUDF::new_from_impl(CounterAggregate::rate()),
        AggregateUDF::new_from_impl(HistogramMerge::default()),
    ]
}

/// Registers every function of this crate with `ctx`.
pub fn register_all(ctx: &SessionContext) {
    for udf in scalar_functions() {
        ctx.register_udf(udf);
    }
    for udaf in aggregate_functions() {
        ctx.register_udaf(udaf);
    }
}
