//! `id_key(id)` / `key_id(key)`: a 16-byte trace id as one 128-bit integer and back.
//!
//! DataFusion groups, hashes and compares a fixed-size binary key through its row format,
//! one row at a time; a 128-bit integer (arrow's `Decimal128`, whose values DataFusion
//! groups as primitives) goes through its vectorized primitive paths. An aggregate over
//! every trace groups on `id_key(trace_id)` and turns the key back with `key_id` for the
//! few rows it keeps. The integer is the id's bytes read big-endian; it is a key, not a
//! number (it may exceed the decimal's 38 digits), and is never shown.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Decimal128Array, FixedSizeBinaryArray};
use arrow::datatypes::{DataType, Decimal128Type};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// Bytes of a trace id.
const ID_BYTES: i32 = 16;
/// The key type: 128 bits, compared and hashed as an integer.
const KEY_TYPE: DataType = DataType::Decimal128(38, 0);

/// Which way [`IdKey`] converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    /// Id to key.
    ToKey,
    /// Key to id.
    ToId,
}

/// `id_key(id)`: the 16-byte id as a 128-bit key; `key_id(key)`: the id again.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IdKey {
    direction: Direction,
    signature: Signature,
}

impl IdKey {
    /// `id_key`: `FixedSizeBinary(16)` to the key.
    pub fn to_key() -> Self {
        Self::new(Direction::ToKey, DataType::FixedSizeBinary(ID_BYTES))
    }

    /// `key_id`: the key to `FixedSizeBinary(16)`.
    pub fn to_id() -> Self {
        Self::new(Direction::ToId, KEY_TYPE)
    }

    fn new(direction: Direction, input: DataType) -> Self {
        Self {
            direction,
            signature: Signature::new(TypeSignature::Exact(vec![input]), Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for IdKey {
    fn name(&self) -> &str {
        match self.direction {
            Direction::ToKey => "id_key",
            Direction::ToId => "key_id",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match (self.direction, arg_types) {
            (Direction::ToKey, [DataType::FixedSizeBinary(ID_BYTES)]) => Ok(KEY_TYPE),
            (Direction::ToId, [DataType::Decimal128(38, 0)]) => {
                Ok(DataType::FixedSizeBinary(ID_BYTES))
            }
            (_, other) => plan_err!("{} cannot take {other:?}", self.name()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("{} takes one argument", self.name());
        };
        let array = arg.to_array(args.number_rows)?;
        let result: ArrayRef = match self.direction {
            Direction::ToKey => Arc::new(keys_of(array.as_fixed_size_binary())?),
            Direction::ToId => Arc::new(ids_of(array.as_primitive::<Decimal128Type>())?),
        };
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(result),
        })
    }
}

fn keys_of(ids: &FixedSizeBinaryArray) -> Result<Decimal128Array> {
    if ids.value_length() != ID_BYTES {
        return plan_err!("id_key takes 16-byte ids, got {} bytes", ids.value_length());
    }
    let keys: Decimal128Array = ids
        .iter()
        .map(|id| id.map(|bytes| i128::from_be_bytes(bytes.try_into().unwrap_or_default())))
        .collect();
    Ok(keys.with_precision_and_scale(38, 0)?)
}

fn ids_of(keys: &Decimal128Array) -> Result<FixedSizeBinaryArray> {
    Ok(FixedSizeBinaryArray::try_from_sparse_iter_with_size(
        keys.iter().map(|key| key.map(i128::to_be_bytes)),
        ID_BYTES,
    )?)
}

#[cfg(test)]
mod tests {
    use arrow::array::Array;
    use datafusion::logical_expr::ScalarUDF;
    use datafusion::prelude::SessionContext;

    use super::*;

    #[test]
    fn ids_go_to_keys_and_back_unchanged() {
        let ids = [
            Some([0u8; 16]),
            Some([0xff; 16]),
            None,
            Some(*b"\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"),
            Some(*b"0123456789abcdef"),
        ];
        let array =
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(ids.into_iter(), 16).expect("ids");
        let keys = keys_of(&array).expect("keys");
        assert_eq!(keys.null_count(), 1);
        let distinct: std::collections::HashSet<_> = keys.iter().flatten().collect();
        assert_eq!(distinct.len(), 4, "distinct ids give distinct keys");
        assert_eq!(ids_of(&keys).expect("ids again"), array);
    }

    #[tokio::test]
    async fn a_grouping_on_keys_gives_the_ids_it_grouped() {
        let ctx = SessionContext::new();
        ctx.register_udf(ScalarUDF::new_from_impl(IdKey::to_key()));
        ctx.register_udf(ScalarUDF::new_from_impl(IdKey::to_id()));
        let batches = ctx
            .sql(
                "SELECT arrow_cast(key_id(k), 'Binary') AS id, n FROM (\
                   SELECT id_key(id) AS k, count(*) AS n FROM (VALUES \
                     (arrow_cast(X'00000000000000000000000000000001', 'FixedSizeBinary(16)')), \
                     (arrow_cast(X'ffffffffffffffffffffffffffffffff', 'FixedSizeBinary(16)')), \
                     (arrow_cast(X'00000000000000000000000000000001', 'FixedSizeBinary(16)'))\
                   ) AS t(id) GROUP BY id_key(id)) ORDER BY id",
            )
            .await
            .expect("planned")
            .collect()
            .await
            .expect("ran");
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .expect("printed")
            .to_string();
        assert!(
            text.contains("| 00000000000000000000000000000001 | 2 |"),
            "{text}"
        );
        assert!(
            text.contains("| ffffffffffffffffffffffffffffffff | 1 |"),
            "{text}"
        );
    }
}
