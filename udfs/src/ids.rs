//! Hex ⇄ binary id conversion: the one parser of hex trace and span ids ([`parse_hex_id`]),
//! shared by the SQL functions here and by every spanlake endpoint that reads an id.

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
        parse_hex_id(text, self.bytes as usize)
            .or_else(|e| exec_err!("{}: {text:?} is not an id: {e}", self.name))
    }
}

/// Why a text is not a hex id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// No digits at all.
    #[error("the id is empty")]
    Empty,
    /// A character that is not a hex digit, at a 1-based position.
    #[error("invalid character '{character}' at position {position}")]
    NotHex { character: char, position: usize },
    /// More digits than the id has room for.
    #[error("more than {digits} hex digits")]
    TooLong { digits: usize },
}

/// Parses an id of `bytes` bytes from 1 to `2 * bytes` hex digits, either case. Shorter ids are
/// left-padded with zeroes (an odd count gets a leading zero), as Tempo and OTLP JSON clients
/// strip leading zeroes.
pub fn parse_hex_id(text: &str, bytes: usize) -> std::result::Result<Vec<u8>, IdError> {
    if let Some((i, character)) = text.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(IdError::NotHex {
            character,
            position: text[..i].chars().count() + 1,
        });
    }
    let digits = bytes * 2;
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if text.len() > digits {
        return Err(IdError::TooLong { digits });
    }
    let padded = format!("{text:0>digits$}");
    let mut id = vec![0u8; bytes];
    for (i, pair) in padded.as_bytes().chunks(2).enumerate() {
        let high = (pair[0] as char).to_digit(16).unwrap_or(0);
        let low = (pair[1] as char).to_digit(16).unwrap_or(0);
        id[i] = (high * 16 + low) as u8;
    }
    Ok(id)
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
        crate::register_all(&ctx);
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

    #[test]
    fn ids_parse_left_padded_in_either_case() {
        use super::{IdError, parse_hex_id};
        assert_eq!(parse_hex_id("1", 2), Ok(vec![0, 1]));
        assert_eq!(parse_hex_id("AbCd", 2), Ok(vec![0xab, 0xcd]));
        assert_eq!(parse_hex_id("abc", 2), Ok(vec![0x0a, 0xbc]));
        assert_eq!(parse_hex_id("", 2), Err(IdError::Empty));
        assert_eq!(
            parse_hex_id("abcde", 2),
            Err(IdError::TooLong { digits: 4 })
        );
        assert_eq!(
            parse_hex_id("1é2", 2),
            Err(IdError::NotHex {
                character: 'é',
                position: 2
            })
        );
    }

    #[tokio::test]
    async fn a_malformed_id_is_an_error_naming_it() {
        let ctx = SessionContext::new();
        crate::register_all(&ctx);
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
