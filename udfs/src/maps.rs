//! `map_value(map, key)`: the value of one key in a map column.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBufferBuilder, UInt32Array};
use arrow::buffer::NullBuffer;
use arrow::compute::kernels::cmp::eq;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ExpressionPlacement, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// `map_value(map, key)`: the value stored under `key` (a constant) in each row's map, NULL
/// where the map is NULL or has no such key; with duplicate keys, the first entry's value.
///
/// DataFusion's `map[key]` answers the same, but copies each row's value on its own; this
/// compares every key of the batch at once and gathers the values in one `take`, which is
/// what a filter over attribute maps spends most of its time on.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MapValue {
    signature: Signature,
}

impl Default for MapValue {
    fn default() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for MapValue {
    fn name(&self) -> &str {
        "map_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::Map(entries, _), _] => match entries.data_type() {
                DataType::Struct(fields) if fields.len() == 2 => Ok(fields[1].data_type().clone()),
                other => plan_err!("map_value: map entries must be key-value structs, got {other}"),
            },
            [other, _] => plan_err!("map_value takes a map and a key, got {other}"),
            _ => plan_err!("map_value takes two arguments: a map and a key"),
        }
    }

    /// Like `map[key]`, a lookup of a constant key in a column moves down to the scan, where
    /// the optimizer computes it once per row however often the plan above reads it.
    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        match args {
            [
                ExpressionPlacement::Column | ExpressionPlacement::MoveTowardsLeafNodes,
                ExpressionPlacement::Literal,
            ] => ExpressionPlacement::MoveTowardsLeafNodes,
            _ => ExpressionPlacement::KeepInPlace,
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [map, key] = args.args.as_slice() else {
            return plan_err!("map_value takes two arguments: a map and a key");
        };
        let ColumnarValue::Scalar(key) = key else {
            return exec_err!("map_value: the key must be a constant");
        };
        let Some(Some(key)) = key.try_as_str() else {
            if key.is_null() {
                return Ok(ColumnarValue::Scalar(ScalarValue::try_from(
                    self.return_type(&[map.data_type(), key.data_type()])?,
                )?));
            }
            return exec_err!("map_value: the key must be a string, got {key}");
        };
        let values = lookup(&map.to_array(args.number_rows)?, key)?;
        Ok(match map {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&values, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(values),
        })
    }
}

/// The value of `key` in each map of `maps`.
fn lookup(maps: &ArrayRef, key: &str) -> Result<ArrayRef> {
    let maps = maps.as_map();
    // The offsets of a sliced map index its whole entries; only the slice's are compared.
    let offsets = maps.value_offsets();
    let first = offsets[0] as usize;
    let keys = maps
        .keys()
        .slice(first, offsets[maps.len()] as usize - first);
    let key = ScalarValue::from(key).cast_to(keys.data_type())?;
    let matches = eq(&keys, &key.to_scalar()?)?;
    // Entry index of each row's first matching key, found by walking the set bits and the
    // rows together: both ascend. Rows without the key stay 0 and invalid; attribute maps
    // are sparse, so only the rows found are touched.
    let mut indices = vec![0u32; maps.len()];
    let mut found = BooleanBufferBuilder::new(maps.len());
    found.append_n(maps.len(), false);
    let mut row = 0;
    for entry in matches.values().set_indices() {
        if matches.is_null(entry) {
            continue;
        }
        let entry = entry + first;
        while offsets[row + 1] as usize <= entry {
            row += 1;
        }
        if !found.get_bit(row) && maps.is_valid(row) {
            found.set_bit(row, true);
            indices[row] = entry as u32;
        }
    }
    let indices = UInt32Array::new(indices.into(), Some(NullBuffer::new(found.finish())));
    Ok(Arc::new(arrow::compute::take(maps.values(), &indices, None)?) as ArrayRef)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, Int64Builder, MapBuilder, StringBuilder};

    use super::*;

    fn maps() -> ArrayRef {
        let mut builder = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        // {a: 1, b: 2}, {}, NULL, {b: 3, a: 4, a: 5}, {c: 6}
        for (k, v) in [("a", 1), ("b", 2)] {
            builder.keys().append_value(k);
            builder.values().append_value(v);
        }
        builder.append(true).unwrap();
        builder.append(true).unwrap();
        builder.append(false).unwrap();
        for (k, v) in [("b", 3), ("a", 4), ("a", 5)] {
            builder.keys().append_value(k);
            builder.values().append_value(v);
        }
        builder.append(true).unwrap();
        builder.keys().append_value("c");
        builder.values().append_value(6);
        builder.append(true).unwrap();
        Arc::new(builder.finish())
    }

    fn values(maps: &ArrayRef, key: &str) -> Vec<Option<i64>> {
        let out = lookup(maps, key).unwrap();
        out.as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .collect()
    }

    #[test]
    fn the_first_value_of_the_key_or_null() {
        let maps = maps();
        assert_eq!(values(&maps, "a"), [Some(1), None, None, Some(4), None]);
        assert_eq!(values(&maps, "b"), [Some(2), None, None, Some(3), None]);
        assert_eq!(values(&maps, "c"), [None, None, None, None, Some(6)]);
        assert_eq!(values(&maps, "z"), [None; 5]);
    }

    #[test]
    fn a_slice_of_maps_reads_its_own_rows() {
        let maps = maps().slice(3, 2);
        assert_eq!(values(&maps, "a"), [Some(4), None]);
        assert_eq!(values(&maps, "c"), [None, Some(6)]);
    }

    #[tokio::test]
    async fn answers_as_map_indexing_does() {
        let ctx = datafusion::prelude::SessionContext::new();
        crate::register_all(&ctx);
        let sql = "SELECT map_value(m, 'a') AS v, m['a'] AS w FROM (VALUES \
                   (MAP {'a': 1, 'b': 2}), (MAP {'b': 3}), (MAP {'a': 7})) AS t(m)";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let out = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        for line in out.lines().skip(3).filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            assert_eq!(cells[1], cells[2], "{out}");
        }
        assert!(out.contains("| 7 "), "{out}");
    }
}
