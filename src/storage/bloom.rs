//! A bloom filter of a block's trace ids, kept in the block's meta: the catalog rules a block
//! out of a trace-by-id lookup before any of its objects is opened, so a lookup across
//! thousands of blocks opens only the few that may hold the trace.
//!
//! About 10 bits and 7 probes per trace id: about 1% false positives. Encoded in `meta.json`
//! as base64 of `[u8 probes][u64 little-endian words…]`.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::schema::TraceId;

const BITS_PER_ID: usize = 10;
const PROBES: u8 = 7;

/// The trace ids of one block, approximately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceIdBloom {
    words: Vec<u64>,
    probes: u8,
}

/// SplitMix64's finaliser: ids that are not random (tests, hand-made traces) still spread.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

impl TraceIdBloom {
    /// A filter holding `ids`.
    pub fn new<'a>(ids: impl ExactSizeIterator<Item = &'a TraceId>) -> Self {
        let bits = (ids.len() * BITS_PER_ID).max(64);
        let mut bloom = Self {
            words: vec![0; bits.div_ceil(64)],
            probes: PROBES,
        };
        for id in ids {
            for bit in bloom.bits(id) {
                bloom.words[bit / 64] |= 1 << (bit % 64);
            }
        }
        bloom
    }

    fn bits(&self, id: &TraceId) -> impl Iterator<Item = usize> + use<> {
        let (a, b) = id.split_at(8);
        let (x, y) = (
            u64::from_le_bytes(a.try_into().unwrap_or_default()),
            u64::from_le_bytes(b.try_into().unwrap_or_default()),
        );
        // Both halves feed both hashes: ids that differ in one half only still spread.
        let h1 = mix(x ^ mix(y));
        let h2 = mix(y ^ h1.rotate_left(32)) | 1;
        let len = (self.words.len() * 64) as u64;
        (0..u64::from(self.probes))
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % len) as usize)
    }

    /// False when the block surely holds no row of `id`.
    pub fn may_contain(&self, id: &TraceId) -> bool {
        if self.words.is_empty() {
            return true;
        }
        self.bits(id)
            .all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.words.len() * 8);
        out.push(self.probes);
        for word in &self.words {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (probes, words) = bytes
            .split_first()
            .ok_or_else(|| "an empty trace-id bloom filter".to_string())?;
        if words.len() % 8 != 0 || *probes == 0 {
            return Err(format!(
                "a trace-id bloom filter of {} bytes and {probes} probes",
                bytes.len()
            ));
        }
        Ok(Self {
            words: words
                .chunks_exact(8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
                .collect(),
            probes: *probes,
        })
    }
}

impl Serialize for TraceIdBloom {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.encode()))
    }
}

impl<'de> Deserialize<'de> for TraceIdBloom {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        Self::decode(&bytes).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> TraceId {
        let mut id = [0u8; 16];
        id[8..].copy_from_slice(&n.to_be_bytes());
        id
    }

    #[test]
    fn every_member_is_found_and_few_strangers_are() {
        let members: Vec<TraceId> = (0..10_000).map(id).collect();
        let bloom = TraceIdBloom::new(members.iter());
        assert!(members.iter().all(|m| bloom.may_contain(m)));
        let false_positives = (10_000..20_000)
            .filter(|n| bloom.may_contain(&id(*n)))
            .count();
        assert!(false_positives < 300, "{false_positives} of 10000");
    }

    #[test]
    fn the_encoding_round_trips() {
        let members: Vec<TraceId> = (0..100).map(id).collect();
        let bloom = TraceIdBloom::new(members.iter());
        let json = serde_json::to_string(&bloom).unwrap();
        let back: TraceIdBloom = serde_json::from_str(&json).unwrap();
        assert_eq!(back, bloom);
        assert!(serde_json::from_str::<TraceIdBloom>("\"AA==\"").is_err());
    }
}
