//! SQL functions over OTLP cumulative counters and explicit-bucket histograms, as the `metrics`
//! table stores them (one row per data point).
//!
//! A cumulative counter holds the total since its process started, and falls back to 0 when the
//! process restarts. What users want is how much it rose over a range, so the two counter
//! aggregates order a series' samples by time and add up the rises, reading a fall as a restart
//! from 0, as Prometheus' `increase()` does (without Prometheus' extrapolation to the edges of
//! the range):
//! - `counter_increase(value, time)`: the increase over the rows of a group; NULL below two
//!   samples;
//! - `counter_rate(value, time)`: that increase per second between the first and the last sample;
//!   NULL below two samples or when they share one time.
//!
//! Rows with a NULL value or time are skipped. The partial state is every sample, so the answer
//! does not depend on how the rows were partitioned or in which order they arrive.
//!
//! ```sql
//! SELECT series_id, counter_increase(value, time), counter_rate(value, time)
//! FROM metrics
//! WHERE metric_name = 'http.server.request.count' AND time > now() - INTERVAL '1 hour'
//! GROUP BY series_id;
//! ```
//!
//! Explicit-bucket histograms: `bucket_counts[i]` counts the observations in
//! `(explicit_bounds[i-1], explicit_bounds[i]]`, and the last bucket those above the last bound.
//! - `histogram_quantile(q, explicit_bounds, bucket_counts)`: the `q` quantile, interpolated
//!   linearly within the bucket where it falls, as Prometheus reads classic histograms. The first
//!   bucket starts at 0 when its bound is positive, and is the single point of its bound
//!   otherwise; a quantile in the last, unbounded bucket is the last bound. NULL when a list is
//!   NULL or holds a NULL, when there are no observations or when there are no bounds.
//! - `histogram_merge(bucket_counts)`: the element-wise sum of the bucket counts of a group, a
//!   histogram of all its observations; NULL rows are skipped, a NULL count counts 0. Every row
//!   must have as many buckets as the first: the function cannot check that their bounds are the
//!   same, so group by what fixes the bounds (the metric). Sum the points of one instant across
//!   series, or delta points over a range: cumulative points summed over time count each
//!   observation once per point.
//!
//! ```sql
//! -- p99 of each data point
//! SELECT series_id, time, histogram_quantile(0.99, explicit_bounds, bucket_counts)
//! FROM metrics WHERE metric_name = 'http.server.request.duration';
//! -- p99 across the series of an instant: merge the buckets, then read the quantile
//! SELECT time,
//!        histogram_quantile(0.99, first_value(explicit_bounds), histogram_merge(bucket_counts))
//! FROM metrics WHERE metric_name = 'http.server.request.duration' GROUP BY time;
//! ```
//!
//! Where Prometheus divides 0 by 0 (q = 0 with an empty first bucket), `histogram_quantile`
//! answers the lower edge of the first non-empty bucket. Errors name the bad value: `q` outside
//! [0, 1], `bucket_counts` whose length is not one more than that of `explicit_bounds` (in a
//! merge: not that of the first row), bounds that do not increase, negative counts.
//!
//! Nothing here knows spanlake's schema: the examples use the `metrics` table's columns, but any
//! columns of these types work.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Float64Builder, Int64Builder, ListArray,
    ListBuilder, UInt64Builder,
};
use arrow::datatypes::{
    DataType, Field, FieldRef, Float64Type, Int64Type, TimeUnit, TimestampNanosecondType,
    UInt64Type,
};
use datafusion::common::{Result, ScalarValue, exec_err, internal_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs,
    ScalarUDFImpl, Signature, Volatility,
};

use crate::sketch_fns::is_numeric;

const HISTOGRAM_QUANTILE: &str = "histogram_quantile";
const HISTOGRAM_MERGE: &str = "histogram_merge";
const NANOS_PER_SECOND: f64 = 1e9;

/// A list of `item`s, as the builders here produce it.
fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new_list_field(item, true)))
}

/// Whether `t` is a list whose elements `accept`, or NULL.
fn is_list_of(t: &DataType, accept: impl Fn(&DataType) -> bool) -> bool {
    match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            accept(f.data_type())
        }
        DataType::Null => true,
        _ => false,
    }
}

/// Whether `filter` keeps `row`.
fn selected(filter: Option<&BooleanArray>, row: usize) -> bool {
    filter.is_none_or(|f| f.is_valid(row) && f.value(row))
}

/// The position of row `row`'s elements in the child array of `lists`.
fn row_range(lists: &ListArray, row: usize) -> std::ops::Range<usize> {
    let offsets = lists.value_offsets();
    offsets[row] as usize..offsets[row + 1] as usize
}

// ---------------------------------------------------------------------------------------------
// Counters

/// One sample of a counter: Unix nanoseconds and value.
type Sample = (i64, f64);

/// What a counter aggregate returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Counter {
    /// The increase over the samples.
    Increase,
    /// The increase per second between the first and the last sample.
    Rate,
}

impl Counter {
    fn of(self, samples: &mut [Sample]) -> Option<f64> {
        match self {
            Counter::Increase => increase(samples),
            Counter::Rate => rate(samples),
        }
    }
}

/// Sorts `samples` by time; samples of one time by value, so that the answer does not depend on
/// the order rows arrive in.
fn sort_samples(samples: &mut [Sample]) {
    samples.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
}

/// The increase of a counter over `samples`, given in any order (they are sorted here): the sum
/// of the rises between consecutive samples, where a fall means the counter restarted from 0
/// and so rose by its new value. `None` below two samples.
fn increase(samples: &mut [Sample]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    sort_samples(samples);
    let rises = samples.windows(2).map(|pair| {
        let (previous, next) = (pair[0].1, pair[1].1);
        if next >= previous {
            next - previous
        } else {
            next
        }
    });
    Some(rises.sum::<f64>())
}

/// [`increase`] per second between the first and the last sample; `None` below two samples or
/// when all samples share one time.
fn rate(samples: &mut [Sample]) -> Option<f64> {
    let risen = increase(samples)?;
    let (first, last) = (samples.first()?.0, samples.last()?.0);
    // In i128: the difference of two i64 may not fit an i64.
    let seconds = (i128::from(last) - i128::from(first)) as f64 / NANOS_PER_SECOND;
    (seconds > 0.0).then_some(risen / seconds)
}

/// `counter_increase(value, time)` and `counter_rate(value, time)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CounterAggregate {
    name: &'static str,
    counter: Counter,
    signature: Signature,
}

impl CounterAggregate {
    /// `counter_increase(value, time)`: the increase of a cumulative counter.
    pub fn increase() -> Self {
        Self::new("counter_increase", Counter::Increase)
    }

    /// `counter_rate(value, time)`: the increase of a cumulative counter per second.
    pub fn rate() -> Self {
        Self::new("counter_rate", Counter::Rate)
    }

    fn new(name: &'static str, counter: Counter) -> Self {
        Self {
            name,
            counter,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    fn groups(&self) -> CounterGroups {
        CounterGroups {
            counter: self.counter,
            samples: Vec::new(),
            held: 0,
        }
    }
}

impl AggregateUDFImpl for CounterAggregate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        // Any unit becomes nanoseconds; the time zone, if any, is kept (it does not change the
        // instant).
        match arg_types {
            [v, DataType::Timestamp(_, zone)] if is_numeric(v) => Ok(vec![
                DataType::Float64,
                DataType::Timestamp(TimeUnit::Nanosecond, zone.clone()),
            ]),
            [v, DataType::Null] if is_numeric(v) => Ok(vec![
                DataType::Float64,
                DataType::Timestamp(TimeUnit::Nanosecond, None),
            ]),
            _ => plan_err!(
                "{} does not take ({arg_types:?}); use {}(number, timestamp)",
                self.name,
                self.name
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new(
                format!("{}[times]", args.name),
                list_of(DataType::Int64),
                true,
            )),
            Arc::new(Field::new(
                format!("{}[values]", args.name),
                list_of(DataType::Float64),
                true,
            )),
        ])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(CounterAccumulator(self.groups())))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(self.groups()))
    }
}

/// The samples of each group, in arrival order: they are sorted when the group is evaluated.
/// The partial state is the samples as two lists of equal length, times (Unix nanoseconds) and
/// values.
#[derive(Debug)]
struct CounterGroups {
    counter: Counter,
    samples: Vec<Vec<Sample>>,
    /// Samples held over all groups, for `size`.
    held: usize,
}

impl CounterGroups {
    /// Adds the rows of `(value, time)` arrays to their groups.
    fn update(&mut self, values: &[ArrayRef], groups: &[usize], filter: Option<&BooleanArray>) {
        let readings = values[0].as_primitive::<Float64Type>();
        let times = values[1].as_primitive::<TimestampNanosecondType>();
        for (row, &group) in groups.iter().enumerate() {
            if readings.is_null(row) || times.is_null(row) || !selected(filter, row) {
                continue;
            }
            self.samples[group].push((times.value(row), readings.value(row)));
            self.held += 1;
        }
    }

    /// Adds the samples of partial states to their groups.
    fn merge(&mut self, states: &[ArrayRef], groups: &[usize]) -> Result<()> {
        let times = states[0].as_list::<i32>();
        let values = states[1].as_list::<i32>();
        let time_items: &[i64] = times.values().as_primitive::<Int64Type>().values();
        let value_items: &[f64] = values.values().as_primitive::<Float64Type>().values();
        for (row, &group) in groups.iter().enumerate() {
            if times.is_null(row) || values.is_null(row) {
                continue;
            }
            let (time_range, value_range) = (row_range(times, row), row_range(values, row));
            if time_range.len() != value_range.len() {
                return internal_err!(
                    "counter state has {} times but {} values",
                    time_range.len(),
                    value_range.len()
                );
            }
            self.held += time_range.len();
            self.samples[group].extend(
                time_items[time_range]
                    .iter()
                    .copied()
                    .zip(value_items[value_range].iter().copied()),
            );
        }
        Ok(())
    }

    /// Removes the groups `emit_to` asks for and returns them.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Vec<Sample>> {
        let taken = emit_to.take_needed(&mut self.samples);
        let taken_samples: usize = taken.iter().map(Vec::len).sum();
        self.held = self.held.saturating_sub(taken_samples);
        taken
    }

    fn finish(&self, samples: &mut [Vec<Sample>]) -> ArrayRef {
        let out: Float64Array = samples
            .iter_mut()
            .map(|group| self.counter.of(group))
            .collect();
        Arc::new(out)
    }

    fn state_arrays(samples: &[Vec<Sample>]) -> Vec<ArrayRef> {
        let held: usize = samples.iter().map(Vec::len).sum();
        let mut times = ListBuilder::new(Int64Builder::with_capacity(held));
        let mut values = ListBuilder::new(Float64Builder::with_capacity(held));
        for group in samples {
            for &(time, value) in group {
                times.values().append_value(time);
                values.values().append_value(value);
            }
            times.append(true);
            values.append(true);
        }
        let times: ArrayRef = Arc::new(times.finish());
        let values: ArrayRef = Arc::new(values.finish());
        vec![times, values]
    }
}

impl GroupsAccumulator for CounterGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.samples.resize_with(total_num_groups, Vec::new);
        self.update(values, group_indices, opt_filter);
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let mut taken = self.take(emit_to);
        Ok(self.finish(&mut taken))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        Ok(Self::state_arrays(&taken))
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.samples.resize_with(total_num_groups, Vec::new);
        self.merge(values, group_indices)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = values[0].len();
        let groups: Vec<usize> = (0..rows).collect();
        let mut each = CounterGroups {
            counter: self.counter,
            samples: vec![Vec::new(); rows],
            held: 0,
        };
        each.update(values, &groups, opt_filter);
        Ok(Self::state_arrays(&each.samples))
    }

    fn size(&self) -> usize {
        // A Vec holds at most twice its length.
        self.samples.capacity() * std::mem::size_of::<Vec<Sample>>()
            + 2 * self.held * std::mem::size_of::<Sample>()
    }
}

/// The single-group form of [`CounterGroups`].
#[derive(Debug)]
struct CounterAccumulator(CounterGroups);

impl Accumulator for CounterAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; values[0].len()];
        self.0.update_batch(values, &groups, None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.samples.resize_with(1, Vec::new);
        let counter = self.0.counter;
        Ok(ScalarValue::Float64(counter.of(&mut self.0.samples[0])))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.samples.resize_with(1, Vec::new);
        CounterGroups::state_arrays(&self.0.samples)
            .iter()
            .map(|array| ScalarValue::try_from_array(array, 0))
            .collect()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; states[0].len()];
        self.0.merge_batch(states, &groups, 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Histograms

/// Why a histogram cannot be read or merged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum HistogramError {
    /// A quantile outside [0, 1].
    #[error("q must be between 0 and 1, got {0}")]
    Quantile(f64),
    /// Bucket counts that do not match the bounds.
    #[error(
        "bucket_counts has {counts} buckets but explicit_bounds has {bounds} bounds; \
         a histogram has one bucket more than it has bounds"
    )]
    Shape { bounds: usize, counts: usize },
    /// Bounds that do not strictly increase.
    #[error(
        "explicit_bounds must increase, but bound {index} ({bound}) is not above the one \
         before it ({previous})"
    )]
    Unsorted {
        index: usize,
        bound: f64,
        previous: f64,
    },
    /// A negative (or NaN) bucket count.
    #[error("bucket counts must not be negative, got {0}")]
    NegativeCount(f64),
    /// Histograms of different bucket counts in one merge.
    #[error(
        "a row has {row} buckets but earlier rows have {first}; merge only histograms with \
         the same explicit_bounds"
    )]
    MergeShape { first: usize, row: usize },
    /// A merged bucket count above u64::MAX.
    #[error("a merged bucket count exceeds the largest unsigned 64-bit integer")]
    Overflow,
}

fn check_quantile(q: f64) -> std::result::Result<(), HistogramError> {
    if (0.0..=1.0).contains(&q) {
        Ok(())
    } else {
        Err(HistogramError::Quantile(q))
    }
}

/// The `q` quantile of the histogram whose bucket `i` holds `counts[i]` observations in
/// `(bounds[i-1], bounds[i]]` (the last bucket: above the last bound).
///
/// The quantile falls in the first non-empty bucket whose cumulative count reaches `q * total`
/// and is interpolated linearly within it; the first bucket starts at 0 when its bound is
/// positive and is the point of its bound otherwise, and a quantile in the last bucket is the
/// last bound, as Prometheus answers. `Ok(None)` with no observations or no bounds.
fn bucket_quantile(
    q: f64,
    bounds: &[f64],
    counts: &[f64],
) -> std::result::Result<Option<f64>, HistogramError> {
    check_quantile(q)?;
    if counts.len() != bounds.len() + 1 {
        return Err(HistogramError::Shape {
            bounds: bounds.len(),
            counts: counts.len(),
        });
    }
    let increasing = |i: usize| bounds[i].partial_cmp(&bounds[i - 1]) == Some(Ordering::Greater);
    if let Some(index) = (1..bounds.len()).find(|&i| !increasing(i)) {
        return Err(HistogramError::Unsorted {
            index,
            bound: bounds[index],
            previous: bounds[index - 1],
        });
    }
    if let Some(&count) = counts.iter().find(|&&c| c < 0.0 || c.is_nan()) {
        return Err(HistogramError::NegativeCount(count));
    }
    let total: f64 = counts.iter().sum();
    let Some(&last_bound) = bounds.last() else {
        return Ok(None);
    };
    if total == 0.0 {
        return Ok(None);
    }
    let rank = q * total;
    // Observations in the buckets before `i`. Summed in the same order as `total`, so that
    // q = 1 reaches exactly the last non-empty bucket.
    let mut below = 0.0;
    for (i, &count) in counts.iter().enumerate() {
        // Empty buckets are passed over: with q = 0 the answer is the lower edge of the first
        // non-empty bucket rather than 0/0.
        if count > 0.0 && below + count >= rank {
            let Some(&upper) = bounds.get(i) else {
                return Ok(Some(last_bound));
            };
            let lower = match i {
                0 if upper > 0.0 => 0.0,
                0 => return Ok(Some(upper)),
                _ => bounds[i - 1],
            };
            return Ok(Some(lower + (upper - lower) * (rank - below) / count));
        }
        below += count;
    }
    Ok(Some(last_bound))
}

/// The elements of row `row` of `lists`, whose child array is `items`; `None` when the row or
/// one of its elements is NULL.
fn float_row<'a>(lists: &ListArray, items: &'a Float64Array, row: usize) -> Option<&'a [f64]> {
    if lists.is_null(row) {
        return None;
    }
    let range = row_range(lists, row);
    if items.null_count() > 0 && range.clone().any(|i| items.is_null(i)) {
        return None;
    }
    let all: &[f64] = items.values();
    Some(&all[range])
}

/// `histogram_quantile(q, explicit_bounds, bucket_counts)`: a quantile of an explicit-bucket
/// histogram.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HistogramQuantile {
    signature: Signature,
}

impl Default for HistogramQuantile {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HistogramQuantile {
    fn name(&self) -> &str {
        HISTOGRAM_QUANTILE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [q, bounds, counts]
                if is_numeric(q)
                    && is_list_of(bounds, is_numeric)
                    && is_list_of(counts, is_numeric) =>
            {
                Ok(vec![
                    DataType::Float64,
                    list_of(DataType::Float64),
                    list_of(DataType::Float64),
                ])
            }
            _ => plan_err!(
                "{HISTOGRAM_QUANTILE} does not take ({arg_types:?}); use \
                 {HISTOGRAM_QUANTILE}(q, explicit_bounds, bucket_counts) with lists of numbers"
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [qs, bounds, counts] = arrays.as_slice() else {
            return plan_err!("{HISTOGRAM_QUANTILE} takes three arguments");
        };
        let qs = qs.as_primitive::<Float64Type>();
        let bounds = bounds.as_list::<i32>();
        let counts = counts.as_list::<i32>();
        let bound_items = bounds.values().as_primitive::<Float64Type>();
        let count_items = counts.values().as_primitive::<Float64Type>();
        let mut out = Float64Builder::with_capacity(qs.len());
        for row in 0..qs.len() {
            if qs.is_null(row) {
                out.append_null();
                continue;
            }
            let q = qs.value(row);
            // Checked before the lists, so that a bad q is reported even on NULL histograms.
            check_quantile(q).or_else(|e| exec_err!("{HISTOGRAM_QUANTILE}: {e}"))?;
            let histogram = (
                float_row(bounds, bound_items, row),
                float_row(counts, count_items, row),
            );
            let value = match histogram {
                (Some(b), Some(c)) => {
                    bucket_quantile(q, b, c).or_else(|e| exec_err!("{HISTOGRAM_QUANTILE}: {e}"))?
                }
                _ => None,
            };
            out.append_option(value);
        }
        let out: ArrayRef = Arc::new(out.finish());
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// `histogram_merge(bucket_counts)`: the element-wise sum of the bucket counts of a group.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HistogramMerge {
    signature: Signature,
}

impl Default for HistogramMerge {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for HistogramMerge {
    fn name(&self) -> &str {
        HISTOGRAM_MERGE
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match arg_types {
            [counts] if is_list_of(counts, |t| t.is_integer() || t.is_null()) => {
                Ok(vec![list_of(DataType::UInt64)])
            }
            _ => plan_err!(
                "{HISTOGRAM_MERGE} does not take ({arg_types:?}); use \
                 {HISTOGRAM_MERGE}(bucket_counts) with a list of integers"
            ),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(list_of(DataType::UInt64))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[buckets]", args.name),
            list_of(DataType::UInt64),
            true,
        ))])
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(BucketAccumulator(BucketGroups::default())))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(BucketGroups::default()))
    }
}

/// The summed bucket counts of each group; `None` until the group sees a row. The partial state
/// is the sums themselves, so merging is the same sum.
#[derive(Debug, Default)]
struct BucketGroups {
    sums: Vec<Option<Vec<u64>>>,
    /// Buckets held over all groups, for `size`.
    held: usize,
}

impl BucketGroups {
    /// Adds the rows of a column of bucket counts to their groups.
    fn add(
        &mut self,
        lists: &ArrayRef,
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let lists = lists.as_list::<i32>();
        let items = lists.values().as_primitive::<UInt64Type>();
        for (row, &group) in groups.iter().enumerate() {
            if lists.is_null(row) || !selected(filter, row) {
                continue;
            }
            let range = row_range(lists, row);
            let buckets = range.len();
            let counts = range.map(|i| if items.is_valid(i) { items.value(i) } else { 0 });
            match &mut self.sums[group] {
                slot @ None => {
                    *slot = Some(counts.collect());
                    self.held += buckets;
                }
                Some(sum) if sum.len() != buckets => {
                    let e = HistogramError::MergeShape {
                        first: sum.len(),
                        row: buckets,
                    };
                    return exec_err!("{HISTOGRAM_MERGE}: {e}");
                }
                Some(sum) => {
                    for (total, count) in sum.iter_mut().zip(counts) {
                        let Some(added) = total.checked_add(count) else {
                            let e = HistogramError::Overflow;
                            return exec_err!("{HISTOGRAM_MERGE}: {e}");
                        };
                        *total = added;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes the groups `emit_to` asks for and returns them.
    fn take(&mut self, emit_to: EmitTo) -> Vec<Option<Vec<u64>>> {
        let taken = emit_to.take_needed(&mut self.sums);
        let taken_buckets: usize = taken.iter().flatten().map(Vec::len).sum();
        self.held = self.held.saturating_sub(taken_buckets);
        taken
    }

    fn lists(sums: &[Option<Vec<u64>>]) -> ArrayRef {
        let mut out = ListBuilder::new(UInt64Builder::new());
        for sum in sums {
            match sum {
                Some(sum) => {
                    out.values().append_slice(sum);
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        Arc::new(out.finish())
    }
}

impl GroupsAccumulator for BucketGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, None);
        self.add(&values[0], group_indices, opt_filter)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(Self::lists(&self.take(emit_to)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![Self::lists(&self.take(emit_to))])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.sums.resize(total_num_groups, None);
        self.add(&values[0], group_indices, None)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = values[0].len();
        let groups: Vec<usize> = (0..rows).collect();
        let mut each = BucketGroups {
            sums: vec![None; rows],
            held: 0,
        };
        each.add(&values[0], &groups, opt_filter)?;
        Ok(vec![Self::lists(&each.sums)])
    }

    fn size(&self) -> usize {
        self.sums.capacity() * std::mem::size_of::<Option<Vec<u64>>>()
            + self.held * std::mem::size_of::<u64>()
    }
}

/// The single-group form of [`BucketGroups`].
#[derive(Debug)]
struct BucketAccumulator(BucketGroups);

impl Accumulator for BucketAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; values[0].len()];
        self.0.update_batch(values, &groups, None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.sums.resize(1, None);
        ScalarValue::try_from_array(&BucketGroups::lists(&self.0.sums), 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; states[0].len()];
        self.0.merge_batch(states, &groups, 1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        Array, ArrayRef, AsArray, Float64Array, ListBuilder, TimestampNanosecondArray,
        UInt64Builder,
    };
    use arrow::datatypes::{Float64Type, UInt64Type};
    use datafusion::common::{Result, ScalarValue};
    use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};

    use super::{
        BucketAccumulator, BucketGroups, CounterAccumulator, CounterAggregate, HistogramError,
        Sample, bucket_quantile, increase, rate,
    };

    const SECOND: i64 = 1_000_000_000;

    /// A counter that rises 1 → 5 → 9, restarts and reads 2, then rises to 6: it rose by
    /// 4 + 4 + 2 + 4 = 14 in 40 seconds.
    fn restarted() -> Vec<Sample> {
        vec![
            (0, 1.0),
            (10 * SECOND, 5.0),
            (20 * SECOND, 9.0),
            (30 * SECOND, 2.0),
            (40 * SECOND, 6.0),
        ]
    }

    fn counter_rows(samples: &[(i64, Option<f64>)]) -> Vec<ArrayRef> {
        let values: Float64Array = samples.iter().map(|s| s.1).collect();
        let times: TimestampNanosecondArray = samples.iter().map(|s| Some(s.0)).collect();
        let values: ArrayRef = Arc::new(values);
        let times: ArrayRef = Arc::new(times.with_timezone("UTC"));
        vec![values, times]
    }

    fn counter_accumulator(aggregate: &CounterAggregate) -> CounterAccumulator {
        CounterAccumulator(aggregate.groups())
    }

    /// The partial state of `accumulator` as the arrays a final aggregation receives.
    fn state_arrays(accumulator: &mut dyn Accumulator) -> Result<Vec<ArrayRef>> {
        accumulator
            .state()?
            .iter()
            .map(ScalarValue::to_array)
            .collect()
    }

    fn bucket_rows(rows: &[Option<Vec<u64>>]) -> ArrayRef {
        let mut out = ListBuilder::new(UInt64Builder::new());
        for row in rows {
            match row {
                Some(counts) => {
                    out.values().append_slice(counts);
                    out.append(true);
                }
                None => out.append(false),
            }
        }
        Arc::new(out.finish())
    }

    fn buckets(value: &ScalarValue) -> Option<Vec<u64>> {
        match value {
            ScalarValue::List(list) if list.is_valid(0) => {
                Some(list.value(0).as_primitive::<UInt64Type>().values().to_vec())
            }
            _ => None,
        }
    }

    #[test]
    fn increase_adds_rises_and_reads_a_fall_as_a_restart_from_zero() {
        assert_eq!(increase(&mut restarted()), Some(14.0));
    }

    #[test]
    fn increase_orders_samples_by_time() {
        let mut shuffled = restarted();
        shuffled.reverse();
        shuffled.swap(0, 2);
        assert_eq!(increase(&mut shuffled), Some(14.0));
    }

    #[test]
    fn fewer_than_two_samples_have_no_increase_or_rate() {
        assert_eq!(increase(&mut []), None);
        assert_eq!(increase(&mut [(0, 3.0)]), None);
        assert_eq!(rate(&mut [(0, 3.0)]), None);
    }

    #[test]
    fn rate_is_the_increase_per_second_between_first_and_last_sample() {
        assert_eq!(rate(&mut restarted()), Some(14.0 / 40.0));
    }

    #[test]
    fn rate_over_samples_of_one_time_is_null() {
        let mut same_time = [(5 * SECOND, 3.0), (5 * SECOND, 3.0)];
        assert_eq!(increase(&mut same_time), Some(0.0));
        assert_eq!(rate(&mut same_time), None);
    }

    #[test]
    fn counter_accumulator_skips_null_values() -> Result<()> {
        let mut accumulator = counter_accumulator(&CounterAggregate::increase());
        accumulator.update_batch(&counter_rows(&[
            (0, Some(1.0)),
            (10 * SECOND, None),
            (20 * SECOND, Some(4.0)),
        ]))?;
        assert_eq!(accumulator.evaluate()?, ScalarValue::Float64(Some(3.0)));
        Ok(())
    }

    #[test]
    fn merged_partial_counter_states_equal_one_pass() -> Result<()> {
        let rows: Vec<(i64, Option<f64>)> =
            restarted().iter().map(|&(t, v)| (t, Some(v))).collect();
        for aggregate in [CounterAggregate::increase(), CounterAggregate::rate()] {
            let mut one_pass = counter_accumulator(&aggregate);
            one_pass.update_batch(&counter_rows(&rows))?;

            // Two partitions, each with samples from both sides of the restart.
            let parts = [vec![rows[1], rows[3]], vec![rows[0], rows[2], rows[4]]];
            let mut merged = counter_accumulator(&aggregate);
            for part in parts {
                let mut partial = counter_accumulator(&aggregate);
                partial.update_batch(&counter_rows(&part))?;
                merged.merge_batch(&state_arrays(&mut partial)?)?;
            }
            assert_eq!(
                merged.evaluate()?,
                one_pass.evaluate()?,
                "{}",
                aggregate.name
            );
        }
        Ok(())
    }

    #[test]
    fn grouped_counter_states_merge_per_group() -> Result<()> {
        let aggregate = CounterAggregate::increase();
        // Both partials hold the restarted counter as group 0 and a counter rising 10 → 15 as
        // group 1; the final aggregation numbers them the other way round.
        let mut partial = aggregate.groups();
        partial.update_batch(
            &counter_rows(&[
                (0, Some(1.0)),
                (0, Some(10.0)),
                (10 * SECOND, Some(5.0)),
                (20 * SECOND, Some(9.0)),
            ]),
            &[0, 1, 0, 0],
            None,
            2,
        )?;
        let mut other = aggregate.groups();
        other.update_batch(
            &counter_rows(&[
                (30 * SECOND, Some(2.0)),
                (40 * SECOND, Some(6.0)),
                (5 * SECOND, Some(15.0)),
            ]),
            &[0, 0, 1],
            None,
            2,
        )?;
        let mut merged = aggregate.groups();
        merged.merge_batch(&partial.state(EmitTo::All)?, &[1, 0], 2)?;
        merged.merge_batch(&other.state(EmitTo::All)?, &[1, 0], 2)?;
        let out = merged.evaluate(EmitTo::All)?;
        let out = out.as_primitive::<Float64Type>();
        assert_eq!(out.values().to_vec(), vec![5.0, 14.0]);
        Ok(())
    }

    #[test]
    fn quantile_interpolates_within_the_bucket_that_reaches_the_rank() {
        // Bounds [1, 2, 5]: buckets (0, 1], (1, 2], (2, 5], (5, +inf) holding 1, 2, 3, 4
        // observations; cumulative 1, 3, 6, 10.
        let (bounds, counts) = ([1.0, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0]);
        // q = 0.5: rank 0.5 * 10 = 5, first reached in (2, 5], which holds 3 and has 3 below it:
        // 2 + (5 - 2) * (5 - 3) / 3 = 4.
        assert_eq!(bucket_quantile(0.5, &bounds, &counts), Ok(Some(4.0)));
        // q = 0.25: rank 2.5 in (1, 2], 1 below, 2 in it: 1 + (2 - 1) * 1.5 / 2 = 1.75.
        assert_eq!(bucket_quantile(0.25, &bounds, &counts), Ok(Some(1.75)));
        // q = 0.05: rank 0.5 in (0, 1], which starts at 0 as its bound is positive: 0.5.
        assert_eq!(bucket_quantile(0.05, &bounds, &counts), Ok(Some(0.5)));
        // q = 0: the lower edge of the first non-empty bucket.
        assert_eq!(bucket_quantile(0.0, &bounds, &counts), Ok(Some(0.0)));
        assert_eq!(
            bucket_quantile(0.0, &bounds, &[0.0, 2.0, 3.0, 4.0]),
            Ok(Some(1.0))
        );
    }

    #[test]
    fn quantile_in_the_unbounded_bucket_is_the_last_bound() {
        let (bounds, counts) = ([1.0, 2.0, 5.0], [1.0, 2.0, 3.0, 4.0]);
        // q = 0.9: rank 9, above the 6 observations of the bounded buckets.
        assert_eq!(bucket_quantile(0.9, &bounds, &counts), Ok(Some(5.0)));
        assert_eq!(bucket_quantile(1.0, &bounds, &counts), Ok(Some(5.0)));
    }

    #[test]
    fn first_bucket_with_a_bound_not_above_zero_is_its_bound() {
        assert_eq!(
            bucket_quantile(0.5, &[-1.0, 0.0, 1.0], &[2.0, 0.0, 0.0, 0.0]),
            Ok(Some(-1.0))
        );
        // A positive first bound: the bucket is (0, 4], and rank 2 of its 4 is 2.
        assert_eq!(
            bucket_quantile(0.5, &[4.0, 8.0], &[4.0, 0.0, 0.0]),
            Ok(Some(2.0))
        );
    }

    #[test]
    fn empty_histograms_and_histograms_without_bounds_have_no_quantile() {
        assert_eq!(bucket_quantile(0.5, &[1.0, 2.0], &[0.0; 3]), Ok(None));
        assert_eq!(bucket_quantile(0.5, &[], &[7.0]), Ok(None));
    }

    #[test]
    fn quantile_outside_zero_to_one_is_an_error_naming_q() {
        let error = bucket_quantile(1.5, &[1.0], &[1.0, 1.0]).unwrap_err();
        assert_eq!(error, HistogramError::Quantile(1.5));
        assert_eq!(error.to_string(), "q must be between 0 and 1, got 1.5");
    }

    #[test]
    fn counts_not_one_more_than_bounds_are_an_error_naming_both_lengths() {
        let error = bucket_quantile(0.5, &[1.0, 2.0, 5.0], &[1.0, 2.0, 3.0]).unwrap_err();
        assert_eq!(
            error,
            HistogramError::Shape {
                bounds: 3,
                counts: 3
            }
        );
        assert!(
            error
                .to_string()
                .starts_with("bucket_counts has 3 buckets but explicit_bounds has 3 bounds"),
            "{error}"
        );
    }

    #[test]
    fn histogram_merge_sums_bucket_counts_and_skips_null_rows() -> Result<()> {
        let mut accumulator = BucketAccumulator(BucketGroups::default());
        accumulator.update_batch(&[bucket_rows(&[
            Some(vec![1, 0, 2, 1]),
            None,
            Some(vec![0, 3, 1, 0]),
        ])])?;
        assert_eq!(buckets(&accumulator.evaluate()?), Some(vec![1, 3, 3, 1]));
        Ok(())
    }

    #[test]
    fn histogram_merge_of_no_rows_is_null() -> Result<()> {
        let mut accumulator = BucketAccumulator(BucketGroups::default());
        accumulator.update_batch(&[bucket_rows(&[None])])?;
        assert_eq!(buckets(&accumulator.evaluate()?), None);
        assert!(accumulator.evaluate()?.is_null());
        Ok(())
    }

    #[test]
    fn merged_partial_histograms_equal_one_pass() -> Result<()> {
        let rows: Vec<Option<Vec<u64>>> = vec![
            Some(vec![1, 0, 2, 1]),
            Some(vec![0, 3, 1, 0]),
            Some(vec![4, 4, 0, 1]),
        ];
        let mut one_pass = BucketAccumulator(BucketGroups::default());
        one_pass.update_batch(&[bucket_rows(&rows)])?;

        let mut merged = BucketAccumulator(BucketGroups::default());
        for part in [&rows[..1], &rows[1..]] {
            let mut partial = BucketAccumulator(BucketGroups::default());
            partial.update_batch(&[bucket_rows(part)])?;
            merged.merge_batch(&state_arrays(&mut partial)?)?;
        }
        assert_eq!(merged.evaluate()?, one_pass.evaluate()?);
        assert_eq!(buckets(&merged.evaluate()?), Some(vec![5, 7, 3, 2]));
        Ok(())
    }

    #[test]
    fn histogram_merge_of_different_lengths_is_an_error_naming_both() {
        let mut accumulator = BucketAccumulator(BucketGroups::default());
        let error = accumulator
            .update_batch(&[bucket_rows(&[Some(vec![1, 0, 2, 1]), Some(vec![1, 2, 3])])])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("histogram_merge: a row has 3 buckets but earlier rows have 4"),
            "{error}"
        );
    }
}
