//! Hex ⇄ binary id conversion.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryBuilder, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// `to_trace_id(text)` / `to_span_id(text)`: parses a hex id into fixed-size binary.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ToId {
    name: &'static str,
    bytes: i32,
    signature: Signature,
}

impl ToId {
    /// `to_trace_id`: 32 hex digits to 16 bytes. Shorter input is left-padded with zeroes, as
    /// Tempo accepts ids with their leading zeroes stripped.
    pub fn trace_id() -> Self {
        Self::new("to_trace_id", 16)
    }

    /// `to_span_id`: 16 hex digits to 8 bytes, left-padded likewise.
    pub fn span_id() -> Self {
        Self::new("to_span_id", 8)
    }

    fn new(name: &'static str, bytes: i32) -> Self {
        Self {
            name,
            bytes,
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8View]),
                    TypeSignature::Exact(vec![DataType::LargeUtf8]),
                ],
                Volatility::Immutable,
            ),
        }
    }

    fn parse(&self, text: &str) -> Result<Vec<u8>> {
        let width = self.bytes as usize * 2;
        if text.is_empty() || text.len() > width {
            return exec_err!(
                "{}: {text:?} is not an id: expected 1 to {width} hex digits",
                self.name
            );
        }
        let padded = format!("{text:0>width$}");
        hex::decode(&padded).or_else(|_| {
            exec_err!(
                "{}: {text:?} is not an id: expected hex digits 0-9, a-f",
                self.name
            )
        })
    }
}

impl ScalarUDFImpl for ToId {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeBinary(self.bytes))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("{} takes one argument", self.name);
        };
        match arg {
            ColumnarValue::Scalar(scalar) => {
                let value = match scalar.try_as_str() {
                    Some(Some(text)) => Some(self.parse(text)?),
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::FixedSizeBinary(
                    self.bytes, value,
                )))
            }
            ColumnarValue::Array(array) => {
                let strings = arrow::compute::cast(array, &DataType::Utf8)?;
                let strings = strings.as_string::<i32>();
                let mut out = FixedSizeBinaryBuilder::with_capacity(strings.len(), self.bytes);
                for value in strings.iter() {
                    match value {
                        Some(text) => out.append_value(self.parse(text)?)?,
                        None => out.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
        }
    }
}

/// `id_hex(binary)`: lowercase hex of a binary id.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IdHex {
    signature: Signature,
}

impl Default for IdHex {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for IdHex {
    fn name(&self) -> &str {
        "id_hex"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [
                DataType::FixedSizeBinary(_)
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView,
            ] => Ok(DataType::Utf8),
            other => plan_err!("id_hex takes a binary id, got {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("id_hex takes one argument");
        };
        let array: ArrayRef = arg.to_array(args.number_rows)?;
        let binary = arrow::compute::cast(&array, &DataType::Binary)?;
        let binary = binary.as_binary::<i32>();
        let mut out = StringBuilder::with_capacity(binary.len(), binary.len() * 32);
        for value in binary.iter() {
            out.append_option(value.map(hex::encode));
        }
        let result: ArrayRef = Arc::new(out.finish());
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(result),
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    async fn one(sql: &str) -> String {
        let ctx = SessionContext::new();
        crate::register(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn hex_round_trips_through_binary_with_leading_zeroes_restored() {
        let out = one("SELECT id_hex(to_trace_id('abc')) AS id").await;
        assert!(out.contains("00000000000000000000000000000abc"), "{out}");
    }

    #[tokio::test]
    async fn a_malformed_id_is_an_error_naming_it() {
        let ctx = SessionContext::new();
        crate::register(&ctx);
        let err = ctx
            .sql("SELECT to_span_id('xyz')")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("\"xyz\" is not an id"), "{err}");
    }
}
