//! The `metrics` table: one row per OTLP metric data point, of any metric type, flattened with
//! its metric, resource and scope.
//!
//! Every type shares one table so that a query need not know a metric's type to find it;
//! columns a type does not use are null. `value` is Float64 for every number point, so that
//! gauges and sums of either OTLP number type aggregate alike, and `value_int` keeps integer
//! points exact (an `i64` above 2^53 does not survive a trip through `f64`). Histograms fill
//! `count`, `sum`, `min`, `max`, `explicit_bounds` and `bucket_counts`; exponential histograms
//! the `exp_*` columns; summaries `count`, `sum` and `quantiles`.
//!
//! Blocks sort the rows by `metric_name`, `series_id`, then `time`, so that one series' points
//! sit together in time order. Exemplars keep their time, value and trace and span ids, but not
//! their filtered attributes.
//!
//! This module only names the columns and builds batches from [`PointRow`]s; the conversion
//! from OTLP is in [`super::otlp`].

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, FixedSizeBinaryBuilder, Float64Array, Float64Builder, Int32Builder,
    Int64Array, Int64Builder, ListArray, RecordBatch, StringBuilder, StructArray,
    TimestampNanosecondArray, TimestampNanosecondBuilder, UInt32Builder, UInt64Array,
    UInt64Builder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow::error::ArrowError;

use super::attrs::{self, TypedAttrsBuilder};
use super::signals::{MetricType, PointRow};
use super::spans::timestamp_type;

pub const METRIC_NAME: &str = "metric_name";
pub const METRIC_TYPE: &str = "metric_type";
pub const DESCRIPTION: &str = "description";
pub const UNIT: &str = "unit";
pub const SERIES_ID: &str = "series_id";
pub const START_TIME: &str = "start_time";
pub const TIME: &str = "time";
pub const VALUE: &str = "value";
pub const VALUE_INT: &str = "value_int";
pub const TEMPORALITY: &str = "aggregation_temporality";
pub const IS_MONOTONIC: &str = "is_monotonic";
pub const COUNT: &str = "count";
pub const SUM: &str = "sum";
pub const MIN: &str = "min";
pub const MAX: &str = "max";
pub const EXPLICIT_BOUNDS: &str = "explicit_bounds";
pub const BUCKET_COUNTS: &str = "bucket_counts";
pub const EXP_SCALE: &str = "exp_scale";
pub const EXP_ZERO_COUNT: &str = "exp_zero_count";
pub const EXP_ZERO_THRESHOLD: &str = "exp_zero_threshold";
pub const EXP_POSITIVE_OFFSET: &str = "exp_positive_offset";
pub const EXP_POSITIVE_COUNTS: &str = "exp_positive_counts";
pub const EXP_NEGATIVE_OFFSET: &str = "exp_negative_offset";
pub const EXP_NEGATIVE_COUNTS: &str = "exp_negative_counts";
pub const QUANTILES: &str = "quantiles";
pub const FLAGS: &str = "flags";
pub const SERVICE_NAME: &str = "service_name";
pub const SCOPE_NAME: &str = "scope_name";
pub const SCOPE_VERSION: &str = "scope_version";
/// Prefix of the point's typed attribute maps (`attrs_str`, `attrs_int`, …).
pub const ATTRS: &str = "attrs";
/// Prefix of the resource's typed attribute maps.
pub const RESOURCE_ATTRS: &str = "resource_attrs";
pub const EXEMPLARS: &str = "exemplars";

/// Field names inside an `exemplars` element.
pub mod exemplar {
    pub const TIME: &str = "time";
    pub const VALUE: &str = "value";
    pub const VALUE_INT: &str = "value_int";
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
}

/// Field names inside a `quantiles` element.
pub mod quantile {
    pub const QUANTILE: &str = "quantile";
    pub const VALUE: &str = "value";
}

/// The `aggregation_temporality` column value of an OTLP `AggregationTemporality` number.
/// Numbers OTLP does not define read as unspecified.
pub fn temporality_name(temporality: i32) -> &'static str {
    match temporality {
        1 => "delta",
        2 => "cumulative",
        _ => "unspecified",
    }
}

fn exemplar_fields() -> Fields {
    vec![
        Field::new(exemplar::TIME, timestamp_type(), false),
        Field::new(exemplar::VALUE, DataType::Float64, false),
        Field::new(exemplar::VALUE_INT, DataType::Int64, true),
        Field::new(exemplar::TRACE_ID, DataType::FixedSizeBinary(16), true),
        Field::new(exemplar::SPAN_ID, DataType::FixedSizeBinary(8), true),
    ]
    .into()
}

fn quantile_fields() -> Fields {
    vec![
        Field::new(quantile::QUANTILE, DataType::Float64, false),
        Field::new(quantile::VALUE, DataType::Float64, false),
    ]
    .into()
}

/// The element field of a list column: named `item` and never null, as in `spans`.
fn item(data_type: DataType) -> FieldRef {
    Arc::new(Field::new("item", data_type, false))
}

fn list_of(data_type: DataType) -> DataType {
    DataType::List(item(data_type))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new(METRIC_NAME, DataType::Utf8, false),
        Field::new(METRIC_TYPE, DataType::Utf8, false),
        Field::new(DESCRIPTION, DataType::Utf8, false),
        Field::new(UNIT, DataType::Utf8, false),
        Field::new(SERIES_ID, DataType::UInt64, false),
        Field::new(START_TIME, timestamp_type(), true),
        Field::new(TIME, timestamp_type(), false),
        Field::new(VALUE, DataType::Float64, true),
        Field::new(VALUE_INT, DataType::Int64, true),
        Field::new(TEMPORALITY, DataType::Utf8, true),
        Field::new(IS_MONOTONIC, DataType::Boolean, true),
        Field::new(COUNT, DataType::UInt64, true),
        Field::new(SUM, DataType::Float64, true),
        Field::new(MIN, DataType::Float64, true),
        Field::new(MAX, DataType::Float64, true),
        Field::new(EXPLICIT_BOUNDS, list_of(DataType::Float64), true),
        Field::new(BUCKET_COUNTS, list_of(DataType::UInt64), true),
        Field::new(EXP_SCALE, DataType::Int32, true),
        Field::new(EXP_ZERO_COUNT, DataType::UInt64, true),
        Field::new(EXP_ZERO_THRESHOLD, DataType::Float64, true),
        Field::new(EXP_POSITIVE_OFFSET, DataType::Int32, true),
        Field::new(EXP_POSITIVE_COUNTS, list_of(DataType::UInt64), true),
        Field::new(EXP_NEGATIVE_OFFSET, DataType::Int32, true),
        Field::new(EXP_NEGATIVE_COUNTS, list_of(DataType::UInt64), true),
        Field::new(
            QUANTILES,
            list_of(DataType::Struct(quantile_fields())),
            true,
        ),
        Field::new(FLAGS, DataType::UInt32, false),
        Field::new(SERVICE_NAME, DataType::Utf8, false),
        Field::new(SCOPE_NAME, DataType::Utf8, false),
        Field::new(SCOPE_VERSION, DataType::Utf8, false),
    ];
    fields.extend(attrs::fields(ATTRS, false));
    fields.extend(attrs::fields(RESOURCE_ATTRS, false));
    fields.extend([
        attrs::bytes_field(ATTRS),
        attrs::bytes_field(RESOURCE_ATTRS),
        Field::new(
            EXEMPLARS,
            list_of(DataType::Struct(exemplar_fields())),
            false,
        ),
    ]);
    Arc::new(Schema::new(fields))
});

/// The schema of the `metrics` table.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Builds a `metrics` batch; the rows come out in the order given.
pub fn to_batch(rows: &[&PointRow]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut metric_name = StringBuilder::new();
    let mut metric_type = StringBuilder::new();
    let mut description = StringBuilder::new();
    let mut unit = StringBuilder::new();
    let mut series_id = UInt64Builder::with_capacity(n);
    let mut start_time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut time = TimestampNanosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut value = Float64Builder::with_capacity(n);
    let mut value_int = Int64Builder::with_capacity(n);
    let mut temporality = StringBuilder::new();
    let mut monotonic = BooleanBuilder::with_capacity(n);
    let mut count = UInt64Builder::with_capacity(n);
    let mut sum = Float64Builder::with_capacity(n);
    let mut min = Float64Builder::with_capacity(n);
    let mut max = Float64Builder::with_capacity(n);
    let mut explicit_bounds = ListColumn::<f64>::default();
    let mut bucket_counts = ListColumn::<u64>::default();
    let mut exp_scale = Int32Builder::with_capacity(n);
    let mut exp_zero_count = UInt64Builder::with_capacity(n);
    let mut exp_zero_threshold = Float64Builder::with_capacity(n);
    let mut exp_positive_offset = Int32Builder::with_capacity(n);
    let mut exp_positive_counts = ListColumn::<u64>::default();
    let mut exp_negative_offset = Int32Builder::with_capacity(n);
    let mut exp_negative_counts = ListColumn::<u64>::default();
    let mut quantiles = ListColumn::<(f64, f64)>::default();
    let mut flags = UInt32Builder::with_capacity(n);
    let mut service_name = StringBuilder::new();
    let mut scope_name = StringBuilder::new();
    let mut scope_version = StringBuilder::new();
    let mut point_attrs = TypedAttrsBuilder::default();
    let mut resource_attrs = TypedAttrsBuilder::default();
    let mut exemplars = ExemplarsBuilder::default();

    for row in rows {
        let is_histogram = row.metric_type == MetricType::Histogram;
        let is_summary = row.metric_type == MetricType::Summary;
        metric_name.append_value(&row.metric_name);
        metric_type.append_value(row.metric_type.name());
        description.append_value(&row.description);
        unit.append_value(&row.unit);
        series_id.append_value(row.series_id());
        start_time.append_option(Some(row.start_time_unix_nano).filter(|t| *t != 0));
        time.append_value(row.time_unix_nano);
        value.append_option(row.value);
        value_int.append_option(row.value_int);
        temporality.append_option(row.temporality.map(temporality_name));
        monotonic.append_option(row.monotonic);
        count.append_option(row.count);
        sum.append_option(row.sum);
        min.append_option(row.min);
        max.append_option(row.max);
        explicit_bounds.append(is_histogram.then_some(&row.explicit_bounds[..]));
        bucket_counts.append(is_histogram.then_some(&row.bucket_counts[..]));
        let exp = row.exp.as_ref();
        exp_scale.append_option(exp.map(|e| e.scale));
        exp_zero_count.append_option(exp.map(|e| e.zero_count));
        exp_zero_threshold.append_option(exp.map(|e| e.zero_threshold));
        exp_positive_offset.append_option(exp.map(|e| e.positive_offset));
        exp_positive_counts.append(exp.map(|e| &e.positive_counts[..]));
        exp_negative_offset.append_option(exp.map(|e| e.negative_offset));
        exp_negative_counts.append(exp.map(|e| &e.negative_counts[..]));
        quantiles.append(is_summary.then_some(&row.quantiles[..]));
        flags.append_value(row.flags);
        service_name.append_value(&row.service_name);
        scope_name.append_value(&row.scope_name);
        scope_version.append_value(&row.scope_version);
        point_attrs.append(&row.attrs);
        resource_attrs.append(&row.resource_attrs);
        exemplars.append(row)?;
    }

    let point_attrs = point_attrs.finish();
    let resource_attrs = resource_attrs.finish();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(metric_name.finish()),
        Arc::new(metric_type.finish()),
        Arc::new(description.finish()),
        Arc::new(unit.finish()),
        Arc::new(series_id.finish()),
        Arc::new(start_time.finish()),
        Arc::new(time.finish()),
        Arc::new(value.finish()),
        Arc::new(value_int.finish()),
        Arc::new(temporality.finish()),
        Arc::new(monotonic.finish()),
        Arc::new(count.finish()),
        Arc::new(sum.finish()),
        Arc::new(min.finish()),
        Arc::new(max.finish()),
        explicit_bounds.finish_f64()?,
        bucket_counts.finish_u64()?,
        Arc::new(exp_scale.finish()),
        Arc::new(exp_zero_count.finish()),
        Arc::new(exp_zero_threshold.finish()),
        Arc::new(exp_positive_offset.finish()),
        exp_positive_counts.finish_u64()?,
        Arc::new(exp_negative_offset.finish()),
        exp_negative_counts.finish_u64()?,
        quantiles.finish_quantiles()?,
        Arc::new(flags.finish()),
        Arc::new(service_name.finish()),
        Arc::new(scope_name.finish()),
        Arc::new(scope_version.finish()),
    ];
    columns.extend(point_attrs.maps);
    columns.extend(resource_attrs.maps);
    columns.extend([point_attrs.bytes, resource_attrs.bytes, exemplars.finish()?]);
    RecordBatch::try_new(schema(), columns)
}

/// Collects one nullable list column: every row's items, back to back, and each row's length
/// and validity.
struct ListColumn<T> {
    items: Vec<T>,
    lengths: Vec<usize>,
    valid: Vec<bool>,
}

impl<T> Default for ListColumn<T> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            lengths: Vec::new(),
            valid: Vec::new(),
        }
    }
}

impl<T: Copy> ListColumn<T> {
    /// Appends one row: a list of the items, or null.
    fn append(&mut self, items: Option<&[T]>) {
        self.items.extend_from_slice(items.unwrap_or_default());
        self.lengths.push(items.map_or(0, <[T]>::len));
        self.valid.push(items.is_some());
    }

    /// The list array over `values`, which must hold the collected items in order.
    fn finish_with(self, values: ArrayRef) -> Result<ArrayRef, ArrowError> {
        let nulls = if self.valid.contains(&false) {
            Some(NullBuffer::from(self.valid))
        } else {
            None
        };
        let field = item(values.data_type().clone());
        let offsets = OffsetBuffer::<i32>::from_lengths(self.lengths);
        Ok(Arc::new(ListArray::try_new(field, offsets, values, nulls)?))
    }
}

impl ListColumn<f64> {
    fn finish_f64(mut self) -> Result<ArrayRef, ArrowError> {
        let values = Float64Array::from(std::mem::take(&mut self.items));
        self.finish_with(Arc::new(values))
    }
}

impl ListColumn<u64> {
    fn finish_u64(mut self) -> Result<ArrayRef, ArrowError> {
        let values = UInt64Array::from(std::mem::take(&mut self.items));
        self.finish_with(Arc::new(values))
    }
}

impl ListColumn<(f64, f64)> {
    fn finish_quantiles(mut self) -> Result<ArrayRef, ArrowError> {
        let (quantiles, values): (Vec<f64>, Vec<f64>) =
            std::mem::take(&mut self.items).into_iter().unzip();
        let children: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from(quantiles)),
            Arc::new(Float64Array::from(values)),
        ];
        let values = StructArray::try_new(quantile_fields(), children, None)?;
        self.finish_with(Arc::new(values))
    }
}

/// Builds the `exemplars` column: a list per point, empty when the point has none.
struct ExemplarsBuilder {
    lengths: Vec<usize>,
    time: Vec<i64>,
    value: Vec<f64>,
    value_int: Vec<Option<i64>>,
    trace_id: FixedSizeBinaryBuilder,
    span_id: FixedSizeBinaryBuilder,
}

impl Default for ExemplarsBuilder {
    fn default() -> Self {
        Self {
            lengths: Vec::new(),
            time: Vec::new(),
            value: Vec::new(),
            value_int: Vec::new(),
            trace_id: FixedSizeBinaryBuilder::new(16),
            span_id: FixedSizeBinaryBuilder::new(8),
        }
    }
}

impl ExemplarsBuilder {
    fn append(&mut self, point: &PointRow) -> Result<(), ArrowError> {
        for exemplar in &point.exemplars {
            self.time.push(exemplar.time_unix_nano);
            self.value.push(exemplar.value);
            self.value_int.push(exemplar.value_int);
            match &exemplar.trace_id {
                Some(id) => self.trace_id.append_value(id)?,
                None => self.trace_id.append_null(),
            }
            match &exemplar.span_id {
                Some(id) => self.span_id.append_value(id)?,
                None => self.span_id.append_null(),
            }
        }
        self.lengths.push(point.exemplars.len());
        Ok(())
    }

    fn finish(mut self) -> Result<ArrayRef, ArrowError> {
        let children: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(self.time).with_timezone("UTC")),
            Arc::new(Float64Array::from(self.value)),
            Arc::new(Int64Array::from(self.value_int)),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
        ];
        let fields = exemplar_fields();
        let values = StructArray::try_new(fields.clone(), children, None)?;
        let offsets = OffsetBuffer::<i32>::from_lengths(self.lengths);
        Ok(Arc::new(ListArray::try_new(
            item(DataType::Struct(fields)),
            offsets,
            Arc::new(values),
            None,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::signals::{ExemplarRow, ExpBuckets};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, UInt64Type};

    fn histogram() -> PointRow {
        PointRow {
            metric_name: "latency".into(),
            metric_type: MetricType::Histogram,
            time_unix_nano: 10,
            temporality: Some(2),
            count: Some(3),
            explicit_bounds: vec![1.0, 5.0],
            bucket_counts: vec![1, 0, 2],
            exemplars: vec![ExemplarRow {
                time_unix_nano: 9,
                value: 4.0,
                trace_id: Some([1; 16]),
                ..ExemplarRow::default()
            }],
            ..PointRow::default()
        }
    }

    fn gauge() -> PointRow {
        PointRow {
            metric_name: "queue".into(),
            time_unix_nano: 10,
            value: Some(7.0),
            value_int: Some(7),
            ..PointRow::default()
        }
    }

    fn exponential() -> PointRow {
        PointRow {
            metric_name: "size".into(),
            metric_type: MetricType::ExponentialHistogram,
            time_unix_nano: 10,
            exp: Some(ExpBuckets {
                scale: 2,
                positive_counts: vec![1, 2],
                ..ExpBuckets::default()
            }),
            ..PointRow::default()
        }
    }

    fn summary() -> PointRow {
        PointRow {
            metric_name: "rtt".into(),
            metric_type: MetricType::Summary,
            time_unix_nano: 10,
            quantiles: vec![(0.5, 1.0), (0.99, 3.0)],
            ..PointRow::default()
        }
    }

    #[test]
    fn batch_of_every_type_matches_the_schema() {
        let rows = [histogram(), gauge(), exponential(), summary()];
        let batch = to_batch(&rows.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.schema(), schema());
    }

    #[test]
    fn histogram_columns_are_null_for_other_types() {
        let rows = [histogram(), gauge()];
        let batch = to_batch(&rows.iter().collect::<Vec<_>>()).unwrap();
        let bounds = batch
            .column_by_name(EXPLICIT_BOUNDS)
            .unwrap()
            .as_list::<i32>();
        assert!(bounds.is_valid(0) && bounds.is_null(1));
        let first = bounds.value(0);
        assert_eq!(
            first.as_primitive::<Float64Type>().values().to_vec(),
            vec![1.0, 5.0]
        );
        let counts = batch
            .column_by_name(BUCKET_COUNTS)
            .unwrap()
            .as_list::<i32>();
        let first = counts.value(0);
        assert_eq!(
            first.as_primitive::<UInt64Type>().values().to_vec(),
            vec![1, 0, 2]
        );
        assert!(batch.column_by_name(QUANTILES).unwrap().is_null(0));
        assert!(batch.column_by_name(EXP_SCALE).unwrap().is_null(0));
    }
}
