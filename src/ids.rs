//! Trace and span ids as text: the one place they are parsed and formatted.
//!
//! Stored ids are bytes ([`TraceId`], [`SpanId`]). At the edges they are hex: parsed from 1 to
//! 32 (trace) or 16 (span) digits of either case, left-padded with zeroes
//! ([`spanlake_udfs::parse_hex_id`], the parser SQL's `to_trace_id` uses too); printed as
//! lowercase hex in full ([`hex`]) or, where TraceQL search results print them, with leading
//! zeroes stripped ([`trace_id_short_hex`]); and as base64 where protobuf JSON carries bytes
//! ([`base64`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// A 16-byte trace id.
pub type TraceId = [u8; 16];
/// An 8-byte span id.
pub type SpanId = [u8; 8];

/// Why a text is not a trace id; the message is Tempo's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceIdError {
    /// Something other than hex digits.
    #[error("trace IDs can only contain hex characters: {0}")]
    NotHex(spanlake_udfs::IdError),
    /// More than 32 digits.
    #[error("trace IDs can't be larger than 128 bits")]
    TooLong,
}

/// Parses a trace id as Tempo does: 1 to 32 hex digits, either case, left-padded with zeroes.
pub fn parse_trace_id(text: &str) -> Result<TraceId, TraceIdError> {
    let bytes = spanlake_udfs::parse_hex_id(text, 16).map_err(|e| match e {
        spanlake_udfs::IdError::TooLong { .. } => TraceIdError::TooLong,
        e => TraceIdError::NotHex(e),
    })?;
    let mut id: TraceId = [0; 16];
    id.copy_from_slice(&bytes);
    Ok(id)
}

/// Parses a span id: 1 to 16 hex digits, left-padded with zeroes.
pub fn parse_span_id(text: &str) -> Result<SpanId, spanlake_udfs::IdError> {
    let bytes = spanlake_udfs::parse_hex_id(text, 8)?;
    let mut id: SpanId = [0; 8];
    id.copy_from_slice(&bytes);
    Ok(id)
}

/// Lowercase hex of an id, every digit, as OTLP JSON spells trace and span ids.
pub fn hex(id: &[u8]) -> String {
    ::hex::encode(id)
}

/// A trace id as TraceQL search results print it: lowercase hex without leading zeroes.
pub fn trace_id_short_hex(id: &[u8]) -> String {
    let full = hex(id);
    match full.trim_start_matches('0') {
        "" => "0".to_string(),
        stripped => stripped.to_string(),
    }
}

/// Standard base64 of an id, as protobuf JSON writes bytes fields.
pub fn base64(id: &[u8]) -> String {
    BASE64.encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_parse_like_tempo() {
        let mut one = [0; 16];
        one[15] = 1;
        assert_eq!(parse_trace_id("1").unwrap(), one);
        assert_eq!(parse_trace_id("01").unwrap(), one);
        assert_eq!(
            parse_trace_id("000000000000000000000000000000001").ok(),
            None
        );
        let mut mixed = [0; 16];
        mixed[14] = 0xab;
        mixed[15] = 0xcd;
        assert_eq!(parse_trace_id("AbCd").unwrap(), mixed);
        assert_eq!(
            parse_trace_id("12x4").unwrap_err().to_string(),
            "trace IDs can only contain hex characters: invalid character 'x' at position 3"
        );
        assert_eq!(
            parse_trace_id("").unwrap_err().to_string(),
            "trace IDs can only contain hex characters: the id is empty"
        );
        assert_eq!(
            parse_trace_id(&"f".repeat(34)).unwrap_err().to_string(),
            "trace IDs can't be larger than 128 bits"
        );
    }

    #[test]
    fn short_hex_strips_leading_zeroes() {
        let id = parse_trace_id("00ab").unwrap();
        assert_eq!(trace_id_short_hex(&id), "ab");
        assert_eq!(trace_id_short_hex(&[0; 16]), "0");
        assert_eq!(hex(&id).len(), 32);
        assert_eq!(parse_span_id("ff").unwrap(), [0, 0, 0, 0, 0, 0, 0, 0xff]);
    }
}
