//! SQL functions over [`Sketch`]es.
//!
//! Aggregates (each with a `GroupsAccumulator`; their partial state is the sketch's encoding,
//! so DataFusion's partial/final aggregation and repartitioning merge sketches):
//! - `sketch(value [, alpha])`: the sketch of a numeric column, as Binary;
//! - `sketch_merge(sketch)`: the merge of a column of sketches;
//! - `approx_quantile_dd(value, q)`: one quantile of a numeric column, in one step.
//!
//! Scalars reading a sketch: `sketch_quantile(sketch, q)`, `sketch_quantiles(sketch, [q, …])`,
//! `sketch_count`, `sketch_sum`, `sketch_min`, `sketch_max`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, Float64Array, Float64Builder,
    Int64Array, ListBuilder,
};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;

use crate::sketch::{DEFAULT_ALPHA, Sketch, SketchError};

/// What a sketch aggregate reads and returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    /// Numbers in, a sketch out.
    Build,
    /// Sketches in, a sketch out.
    Merge,
    /// Numbers in, one quantile out.
    Quantile,
}

/// `sketch`, `sketch_merge` and `approx_quantile_dd`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchAggregate {
    name: &'static str,
    mode: Mode,
    signature: Signature,
}

impl SketchAggregate {
    /// `sketch(value [, alpha])`.
    pub fn build() -> Self {
        Self::new("sketch", Mode::Build)
    }

    /// `sketch_merge(sketch)`.
    pub fn merge() -> Self {
        Self::new("sketch_merge", Mode::Merge)
    }

    /// `approx_quantile_dd(value, q)`.
    pub fn quantile() -> Self {
        Self::new("approx_quantile_dd", Mode::Quantile)
    }

    fn new(name: &'static str, mode: Mode) -> Self {
        Self {
            name,
            mode,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    /// The parameters fixed at planning: α for `sketch`, q for `approx_quantile_dd`.
    fn parameters(&self, args: &AccumulatorArgs) -> Result<Parameters> {
        let mut parameters = Parameters {
            alpha: DEFAULT_ALPHA,
            q: 0.0,
        };
        match self.mode {
            Mode::Build => {
                if let Some(expr) = args.exprs.get(1) {
                    parameters.alpha = constant_f64(expr, self.name, "alpha")?;
                    Sketch::new(parameters.alpha).or_else(|e| plan_err!("{}: {e}", self.name))?;
                }
            }
            Mode::Quantile => {
                parameters.q = constant_f64(&args.exprs[1], self.name, "q")?;
                if !(0.0..=1.0).contains(&parameters.q) {
                    return plan_err!("{}: {}", self.name, SketchError::Quantile(parameters.q));
                }
            }
            Mode::Merge => {}
        }
        Ok(parameters)
    }

    fn groups(&self, args: &AccumulatorArgs) -> Result<SketchGroups> {
        Ok(SketchGroups {
            name: self.name,
            mode: self.mode,
            parameters: self.parameters(args)?,
            sketches: Vec::new(),
            bytes: 0,
        })
    }
}

#[derive(Debug, Clone, Copy)]
struct Parameters {
    alpha: f64,
    q: f64,
}

/// The value of a constant argument, which must fold to a number during planning.
fn constant_f64(expr: &Arc<dyn PhysicalExpr>, function: &str, what: &str) -> Result<f64> {
    let batch = arrow::array::RecordBatch::new_empty(Arc::new(arrow::datatypes::Schema::empty()));
    let value = match expr.evaluate(&batch) {
        Ok(ColumnarValue::Scalar(value)) => value,
        _ => return plan_err!("{function}: {what} must be a constant"),
    };
    match value.cast_to(&DataType::Float64) {
        Ok(ScalarValue::Float64(Some(v))) => Ok(v),
        _ => plan_err!("{function}: {what} must be a number, got {value}"),
    }
}

/// A number, or NULL: what the numeric arguments of this crate's functions accept.
pub(crate) fn is_numeric(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Null)
}

fn is_binary(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::Null
    )
}

impl AggregateUDFImpl for SketchAggregate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match (self.mode, arg_types) {
            (Mode::Build, [v]) if is_numeric(v) => Ok(vec![DataType::Float64]),
            (Mode::Build | Mode::Quantile, [v, p]) if is_numeric(v) && is_numeric(p) => {
                Ok(vec![DataType::Float64, DataType::Float64])
            }
            (Mode::Merge, [s]) if is_binary(s) => Ok(vec![DataType::Binary]),
            _ => {
                let usage = match self.mode {
                    Mode::Build => "sketch(number [, alpha])",
                    Mode::Merge => "sketch_merge(sketch)",
                    Mode::Quantile => "approx_quantile_dd(number, q)",
                };
                plan_err!("{} does not take ({arg_types:?}); use {usage}", self.name)
            }
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.mode {
            Mode::Build | Mode::Merge => DataType::Binary,
            Mode::Quantile => DataType::Float64,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[sketch]", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAccumulator(self.groups(&args)?)))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(self.groups(&args)?))
    }
}

/// One sketch per group; `None` until the group sees a value.
#[derive(Debug)]
struct SketchGroups {
    name: &'static str,
    mode: Mode,
    parameters: Parameters,
    sketches: Vec<Option<Sketch>>,
    /// Bytes of the encoded sketches merged so far, a bound on the heap the sketches hold.
    bytes: usize,
}

impl SketchGroups {
    fn new_sketch(&self) -> Result<Sketch> {
        Sketch::new(self.parameters.alpha).or_else(|e| exec_err!("{}: {e}", self.name))
    }

    fn update(
        &mut self,
        values: &ArrayRef,
        groups: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let selected = |row: usize| filter.is_none_or(|f| f.is_valid(row) && f.value(row));
        match self.mode {
            Mode::Build | Mode::Quantile => {
                let values = values.as_primitive::<Float64Type>();
                for (row, &group) in groups.iter().enumerate() {
                    if values.is_null(row) || !selected(row) {
                        continue;
                    }
                    if self.sketches[group].is_none() {
                        self.sketches[group] = Some(self.new_sketch()?);
                    }
                    if let Some(sketch) = &mut self.sketches[group] {
                        sketch.add(values.value(row));
                    }
                }
            }
            Mode::Merge => self.merge_encoded(values, groups, Some(&selected))?,
        }
        Ok(())
    }

    fn merge_encoded(
        &mut self,
        encoded: &ArrayRef,
        groups: &[usize],
        selected: Option<&dyn Fn(usize) -> bool>,
    ) -> Result<()> {
        let encoded = encoded.as_binary::<i32>();
        for (row, &group) in groups.iter().enumerate() {
            if encoded.is_null(row) || selected.is_some_and(|s| !s(row)) {
                continue;
            }
            let bytes = encoded.value(row);
            let other = Sketch::decode(bytes).or_else(|e| exec_err!("{}: {e}", self.name))?;
            self.bytes += bytes.len();
            match &mut self.sketches[group] {
                Some(sketch) => sketch
                    .merge(&other)
                    .or_else(|e| exec_err!("{}: {e}", self.name))?,
                slot @ None => *slot = Some(other),
            }
        }
        Ok(())
    }

    fn encoded(sketches: &[Option<Sketch>]) -> ArrayRef {
        let mut out = BinaryBuilder::with_capacity(sketches.len(), sketches.len() * 64);
        for sketch in sketches {
            match sketch {
                Some(s) => out.append_value(s.encode()),
                None => out.append_null(),
            }
        }
        Arc::new(out.finish())
    }

    fn finish(&self, sketches: &[Option<Sketch>]) -> Result<ArrayRef> {
        match self.mode {
            Mode::Build | Mode::Merge => Ok(Self::encoded(sketches)),
            Mode::Quantile => {
                let values = sketches
                    .iter()
                    .map(|s| match s {
                        Some(s) => s.quantile(self.parameters.q),
                        None => Ok(None),
                    })
                    .collect::<std::result::Result<Float64Array, _>>()
                    .or_else(|e| exec_err!("{}: {e}", self.name))?;
                Ok(Arc::new(values))
            }
        }
    }
}

impl GroupsAccumulator for SketchGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sketches.resize(total_num_groups, None);
        self.update(&values[0], group_indices, opt_filter)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = emit_to.take_needed(&mut self.sketches);
        self.finish(&taken)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = emit_to.take_needed(&mut self.sketches);
        Ok(vec![Self::encoded(&taken)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.sketches.resize(total_num_groups, None);
        self.merge_encoded(&values[0], group_indices, None)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let rows = values[0].len();
        let groups: Vec<usize> = (0..rows).collect();
        let mut each = SketchGroups {
            name: self.name,
            mode: self.mode,
            parameters: self.parameters,
            sketches: vec![None; rows],
            bytes: 0,
        };
        each.update(&values[0], &groups, opt_filter)?;
        Ok(vec![Self::encoded(&each.sketches)])
    }

    fn size(&self) -> usize {
        self.sketches.capacity() * std::mem::size_of::<Option<Sketch>>() + self.bytes * 8
    }
}

/// The single-group form of [`SketchGroups`].
#[derive(Debug)]
struct SketchAccumulator(SketchGroups);

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; values[0].len()];
        self.0.update_batch(values, &groups, None, 1)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        self.0.sketches.resize(1, None);
        let array = self.0.finish(&self.0.sketches)?;
        ScalarValue::try_from_array(&array, 0)
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.0.sketches.resize(1, None);
        let array = SketchGroups::encoded(&self.0.sketches);
        Ok(vec![ScalarValue::try_from_array(&array, 0)?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; states[0].len()];
        self.0.merge_batch(states, &groups, 1)
    }
}

/// What a scalar function reads from a sketch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Read {
    Quantile,
    Quantiles,
    Count,
    Sum,
    Min,
    Max,
}

/// `sketch_quantile`, `sketch_quantiles`, `sketch_count`, `sketch_sum`, `sketch_min`,
/// `sketch_max`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchRead {
    name: &'static str,
    read: Read,
    signature: Signature,
}

impl SketchRead {
    /// Every reading function.
    pub fn all() -> Vec<Self> {
        [
            ("sketch_quantile", Read::Quantile),
            ("sketch_quantiles", Read::Quantiles),
            ("sketch_count", Read::Count),
            ("sketch_sum", Read::Sum),
            ("sketch_min", Read::Min),
            ("sketch_max", Read::Max),
        ]
        .into_iter()
        .map(|(name, read)| Self {
            name,
            read,
            signature: Signature::user_defined(Volatility::Immutable),
        })
        .collect()
    }

    fn decode(&self, bytes: &[u8]) -> Result<Sketch> {
        Sketch::decode(bytes).or_else(|e| exec_err!("{}: {e}", self.name))
    }

    fn quantile(&self, sketch: &Sketch, q: f64) -> Result<Option<f64>> {
        sketch
            .quantile(q)
            .or_else(|e| exec_err!("{}: {e}", self.name))
    }
}

impl ScalarUDFImpl for SketchRead {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)));
        match (self.read, arg_types) {
            (Read::Quantile, [s, q]) if is_binary(s) && is_numeric(q) => {
                Ok(vec![DataType::Binary, DataType::Float64])
            }
            (
                Read::Quantiles,
                [
                    s,
                    DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _),
                ],
            ) if is_binary(s) && is_numeric(f.data_type()) => Ok(vec![DataType::Binary, list]),
            (Read::Count | Read::Sum | Read::Min | Read::Max, [s]) if is_binary(s) => {
                Ok(vec![DataType::Binary])
            }
            _ => {
                let usage = match self.read {
                    Read::Quantile => "sketch_quantile(sketch, q)",
                    Read::Quantiles => "sketch_quantiles(sketch, [q, ...])",
                    _ => "a single sketch argument",
                };
                plan_err!("{} does not take ({arg_types:?}); use {usage}", self.name)
            }
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.read {
            Read::Count => DataType::Int64,
            Read::Quantiles => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
            }
            _ => DataType::Float64,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let sketches = arrays[0].as_binary::<i32>();
        let out: ArrayRef = match self.read {
            Read::Count => {
                let mut counts = Vec::with_capacity(rows);
                for bytes in sketches.iter() {
                    counts.push(match bytes {
                        Some(b) => Some(i64::try_from(self.decode(b)?.count()).unwrap_or(i64::MAX)),
                        None => None,
                    });
                }
                Arc::new(Int64Array::from(counts))
            }
            Read::Sum | Read::Min | Read::Max => {
                let mut out = Float64Builder::with_capacity(rows);
                for bytes in sketches.iter() {
                    let value = match bytes {
                        Some(b) => {
                            let sketch = self.decode(b)?;
                            match self.read {
                                Read::Sum => (!sketch.is_empty()).then(|| sketch.sum()),
                                Read::Min => sketch.min(),
                                _ => sketch.max(),
                            }
                        }
                        None => None,
                    };
                    out.append_option(value);
                }
                Arc::new(out.finish())
            }
            Read::Quantile => {
                let qs = arrays[1].as_primitive::<Float64Type>();
                let mut out = Float64Builder::with_capacity(rows);
                for (row, bytes) in sketches.iter().enumerate() {
                    let value = match bytes {
                        Some(b) if qs.is_valid(row) => {
                            self.quantile(&self.decode(b)?, qs.value(row))?
                        }
                        _ => None,
                    };
                    out.append_option(value);
                }
                Arc::new(out.finish())
            }
            Read::Quantiles => {
                let lists = arrays[1].as_list::<i32>();
                let mut out = ListBuilder::new(Float64Builder::new());
                for (row, bytes) in sketches.iter().enumerate() {
                    match bytes {
                        Some(b) if lists.is_valid(row) => {
                            let sketch = self.decode(b)?;
                            let qs = lists.value(row);
                            for q in qs.as_primitive::<Float64Type>().iter() {
                                let value = match q {
                                    Some(q) => self.quantile(&sketch, q)?,
                                    None => None,
                                };
                                out.values().append_option(value);
                            }
                            out.append(true);
                        }
                        _ => out.append(false),
                    }
                }
                Arc::new(out.finish())
            }
        };
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// 20,000 rows in 8 partitions: `g` in 0..1000 groups, `v` a skewed positive value.
    fn context(target_partitions: usize) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("v", DataType::Float64, true),
        ]));
        let partitions = (0..8)
            .map(|p| {
                let rows = (p * 2500..(p + 1) * 2500).map(|i: i64| {
                    let v = ((i * 7919) % 10007) as f64;
                    (i % 1000, (i % 97 != 0).then_some(v * v / 4.0 + 1.0))
                });
                let (g, v): (Vec<i64>, Vec<Option<f64>>) = rows.unzip();
                vec![
                    RecordBatch::try_new(
                        schema.clone(),
                        vec![
                            Arc::new(Int64Array::from(g)),
                            Arc::new(Float64Array::from(v)),
                        ],
                    )
                    .unwrap(),
                ]
            })
            .collect();
        let config = SessionConfig::new().with_target_partitions(target_partitions);
        let ctx = SessionContext::new_with_config(config);
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema, partitions).unwrap()),
        )
        .unwrap();
        crate::register_all(&ctx);
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn sketches_are_identical_for_any_partitioning() {
        let sql = "SELECT g, sketch(v) AS s, approx_quantile_dd(v, 0.9) AS p90 \
                   FROM t GROUP BY g ORDER BY g";
        let one = rows(&context(1), sql).await;
        assert_eq!(one.lines().count(), 1000 + 4);
        for partitions in [2, 8] {
            assert_eq!(
                rows(&context(partitions), sql).await,
                one,
                "{partitions} partitions"
            );
        }
        // Merging per-group sketches gives the sketch of the whole column.
        let merged = "SELECT sketch_merge(s) = (SELECT sketch(v) FROM t) AS same \
                      FROM (SELECT g, sketch(v) AS s FROM t GROUP BY g)";
        assert!(rows(&context(8), merged).await.contains("true"));
    }

    #[tokio::test]
    async fn readers_agree_with_exact_aggregates() {
        let ctx = context(4);
        let sql = "SELECT sketch_count(s) = (SELECT count(v) FROM t) AS count_ok, \
                   sketch_min(s) = (SELECT min(v) FROM t) AS min_ok, \
                   sketch_max(s) = (SELECT max(v) FROM t) AS max_ok, \
                   sketch_sum(s) = (SELECT sum(CAST(v AS DECIMAL(38, 6)))::double FROM t) AS sum_ok, \
                   abs(sketch_quantile(s, 0.5) / (SELECT percentile_cont(v, 0.5) FROM t) - 1) < 0.011 AS median_ok, \
                   cardinality(sketch_quantiles(s, [0.5, 0.9, 0.99])) AS n \
                   FROM (SELECT sketch(v, 0.005) AS s FROM t)";
        let out = rows(&ctx, sql).await;
        assert!(!out.contains("false"), "{out}");
        assert!(
            out.contains("| true     | true   | true   | true   | true      | 3 |"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn bad_arguments_are_plan_errors() {
        let ctx = context(1);
        for (sql, message) in [
            ("SELECT sketch('x') FROM t", "does not take"),
            ("SELECT sketch(v, 2.0) FROM t", "relative accuracy"),
            ("SELECT sketch(v, v) FROM t", "alpha must be a constant"),
            (
                "SELECT approx_quantile_dd(v, 1.5) FROM t",
                "quantile must be between 0 and 1",
            ),
            ("SELECT sketch_merge(v) FROM t", "does not take"),
            (
                "SELECT sketch_quantile(CAST('xyz' AS BYTEA), 0.5)",
                "invalid sketch encoding",
            ),
            (
                "SELECT sketch_quantile(s, 2) FROM (SELECT sketch(v) AS s FROM t)",
                "quantile",
            ),
        ] {
            let result = match ctx.sql(sql).await {
                Ok(frame) => frame.collect().await.map(|_| ()),
                Err(e) => Err(e),
            };
            let error = result.expect_err(sql).to_string();
            assert!(error.contains(message), "{sql}: {error}");
        }
    }
}
