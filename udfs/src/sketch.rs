//! A DDSketch: a quantile sketch with a relative-error guarantee whose merge is exact.
//!
//! A value `v > 0` is counted in bucket `k = ceil(ln v / ln γ)` with `γ = (1 + α) / (1 - α)`,
//! so that bucket `k` holds `(γ^(k-1), γ^k]`; the bucket is reported as `2γ^k / (γ + 1)`, which
//! is within `α` of every value in it. Negative values are counted by magnitude in a second
//! store, and values whose magnitude is below [`MIN_INDEXABLE`] (zero and subnormals) in a zero
//! count. Non-finite values are not counted.
//!
//! Each store is dense and holds at most `max_bins` buckets; when a store would span more, the
//! buckets of the smallest magnitudes are collapsed into the lowest bucket kept. Because the
//! lowest bucket kept depends only on the largest key seen, collapsing is the same whatever
//! order the values arrive in.
//!
//! The sketch also keeps the exact count, minimum, maximum and sum. The sum is held as an exact
//! fixed-point integer over the whole `f64` range ([`ExactSum`]) and rounded once when read, so
//! that merging any partition of the input, in any order, gives a bit-identical sketch to one
//! sketch over all of it. This is the reason the sketch is written here rather than taken from
//! `sketches-ddsketch`: that crate sums in `f64`, whose result depends on the order of the
//! additions, and serialises only through serde's view of its structs, which is not a stable,
//! versioned encoding.
//!
//! # Encoding (version 1)
//!
//! All integers are LEB128 varints; signed ones are zigzag-encoded first.
//!
//! | field | encoding |
//! |---|---|
//! | version | one byte, `1` |
//! | α | `f64`, 8 bytes little-endian |
//! | max_bins | varint |
//! | zero count | varint |
//! | minimum, maximum | two `f64`, present only when the count is not zero |
//! | positive store, negative store | each: offset (signed), bucket count, then one count per bucket |
//! | sum | lowest limb index (signed), limb count, then each limb (signed) |
//!
//! A store's first and last counts are never zero and the sum's limbs are normalised (see
//! [`ExactSum`]), so equal sketches have equal bytes.

/// Default relative accuracy.
pub const DEFAULT_ALPHA: f64 = 0.01;
/// Default bound on the buckets of each store: with α = 0.01 it spans a ratio of about 10^17
/// between the largest and smallest values before collapsing.
pub const DEFAULT_MAX_BINS: u32 = 2048;
/// The smallest magnitude given its own bucket; smaller ones are counted as zero.
pub const MIN_INDEXABLE: f64 = f64::MIN_POSITIVE;
const VERSION: u8 = 1;

/// Why a sketch could not be built, merged or decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SketchError {
    /// α outside `(0, 1)`.
    #[error("relative accuracy must be between 0 and 1 (exclusive), got {0}")]
    Alpha(f64),
    /// Two sketches with different parameters.
    #[error(
        "cannot merge sketches with different parameters (alpha {0} and {1}, max bins {2} and {3})"
    )]
    Mismatch(f64, f64, u32, u32),
    /// Bytes that are not a sketch.
    #[error("invalid sketch encoding: {0}")]
    Encoding(&'static str),
    /// A quantile outside `[0, 1]`.
    #[error("quantile must be between 0 and 1, got {0}")]
    Quantile(f64),
}

/// A DDSketch; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch {
    alpha: f64,
    ln_gamma: f64,
    max_bins: u32,
    positive: Store,
    negative: Store,
    zero: u64,
    min: f64,
    max: f64,
    sum: ExactSum,
}

impl Sketch {
    /// An empty sketch with relative accuracy `alpha` and [`DEFAULT_MAX_BINS`].
    pub fn new(alpha: f64) -> Result<Self, SketchError> {
        Self::with_max_bins(alpha, DEFAULT_MAX_BINS)
    }

    /// An empty sketch with relative accuracy `alpha` and at most `max_bins` buckets per store
    /// (at least 1).
    pub fn with_max_bins(alpha: f64, max_bins: u32) -> Result<Self, SketchError> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(SketchError::Alpha(alpha));
        }
        Ok(Self {
            alpha,
            ln_gamma: ((1.0 + alpha) / (1.0 - alpha)).ln(),
            max_bins: max_bins.max(1),
            positive: Store::default(),
            negative: Store::default(),
            zero: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: ExactSum::default(),
        })
    }

    /// The relative accuracy.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Counts `value`; non-finite values are ignored.
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let magnitude = value.abs();
        if magnitude < MIN_INDEXABLE {
            self.zero = self.zero.saturating_add(1);
        } else {
            let key = self.key(magnitude);
            let store = if value > 0.0 {
                &mut self.positive
            } else {
                &mut self.negative
            };
            store.add(key, self.max_bins);
        }
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum.add(value);
    }

    fn key(&self, magnitude: f64) -> i32 {
        (magnitude.ln() / self.ln_gamma).ceil() as i32
    }

    fn bucket_value(&self, key: i32) -> f64 {
        let gamma = self.ln_gamma.exp();
        (f64::from(key) * self.ln_gamma).exp() * 2.0 / (gamma + 1.0)
    }

    /// Adds everything `other` counted. Both must have the same α and bucket bound.
    pub fn merge(&mut self, other: &Sketch) -> Result<(), SketchError> {
        if self.alpha.to_bits() != other.alpha.to_bits() || self.max_bins != other.max_bins {
            return Err(SketchError::Mismatch(
                self.alpha,
                other.alpha,
                self.max_bins,
                other.max_bins,
            ));
        }
        self.positive.merge(&other.positive, self.max_bins);
        self.negative.merge(&other.negative, self.max_bins);
        self.zero = self.zero.saturating_add(other.zero);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum.merge(&other.sum);
        Ok(())
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.positive
            .total()
            .saturating_add(self.negative.total())
            .saturating_add(self.zero)
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// The exact sum of the values counted, rounded once to `f64` (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum.to_f64()
    }

    /// The smallest value counted.
    pub fn min(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.min)
    }

    /// The largest value counted.
    pub fn max(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.max)
    }

    /// The value at quantile `q` (the lower quantile: the value of rank `floor(q · (n - 1))`
    /// among the `n` sorted values), within α of the exact one unless its bucket was collapsed;
    /// `None` when empty. The minimum and maximum are exact.
    pub fn quantile(&self, q: f64) -> Result<Option<f64>, SketchError> {
        if !(0.0..=1.0).contains(&q) {
            return Err(SketchError::Quantile(q));
        }
        let count = self.count();
        if count == 0 {
            return Ok(None);
        }
        let rank = (q * (count - 1) as f64).floor() as u64;
        if rank == 0 {
            return Ok(Some(self.min));
        }
        if rank == count - 1 {
            return Ok(Some(self.max));
        }
        let mut seen = 0u64;
        for (key, n) in self.negative.buckets().rev() {
            seen += n;
            if seen > rank {
                return Ok(Some(self.clamp(-self.bucket_value(key))));
            }
        }
        seen += self.zero;
        if seen > rank {
            return Ok(Some(self.clamp(0.0)));
        }
        for (key, n) in self.positive.buckets() {
            seen += n;
            if seen > rank {
                return Ok(Some(self.clamp(self.bucket_value(key))));
            }
        }
        Ok(Some(self.max))
    }

    fn clamp(&self, value: f64) -> f64 {
        value.max(self.min).min(self.max)
    }

    /// The counted buckets as `(value, count)` in increasing value order (negative buckets, the
    /// zero count, positive buckets), each valued as [`quantile`](Self::quantile) reports it;
    /// the counts sum to [`count`](Self::count). This is the sketch as a binned sample, e.g.
    /// for a rank test.
    pub fn bins(&self) -> Vec<(f64, u64)> {
        // The negative store is keyed by magnitude, so its largest key is the smallest value.
        let negative = self
            .negative
            .buckets()
            .rev()
            .map(|(key, n)| (-self.bucket_value(key), n));
        let zero = (self.zero > 0).then_some((0.0, self.zero));
        let positive = self
            .positive
            .buckets()
            .map(|(key, n)| (self.bucket_value(key), n));
        negative
            .chain(zero)
            .chain(positive)
            .map(|(value, n)| (self.clamp(value), n))
            .collect()
    }

    /// The version 1 encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.positive.counts.len() * 2);
        out.push(VERSION);
        out.extend_from_slice(&self.alpha.to_le_bytes());
        put_varint(&mut out, u64::from(self.max_bins));
        for store in [&self.positive, &self.negative] {
            put_signed(&mut out, i64::from(store.offset));
            put_varint(&mut out, store.counts.len() as u64);
            for &n in &store.counts {
                put_varint(&mut out, n);
            }
        }
        put_varint(&mut out, self.zero);
        if !self.is_empty() {
            out.extend_from_slice(&self.min.to_le_bytes());
            out.extend_from_slice(&self.max.to_le_bytes());
        }
        let (base, limbs) = self.sum.normalized();
        put_signed(&mut out, i64::from(base));
        put_varint(&mut out, limbs.len() as u64);
        for limb in limbs {
            put_signed(&mut out, limb);
        }
        out
    }

    /// Decodes [`encode`](Self::encode)'s bytes, checking every field.
    pub fn decode(bytes: &[u8]) -> Result<Self, SketchError> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.byte()? != VERSION {
            return Err(SketchError::Encoding("unknown version"));
        }
        let alpha = reader.f64()?;
        let max_bins = u32::try_from(reader.varint()?)
            .map_err(|_| SketchError::Encoding("max bins out of range"))?;
        if max_bins == 0 {
            return Err(SketchError::Encoding("max bins is zero"));
        }
        let mut sketch = Sketch::with_max_bins(alpha, max_bins)
            .map_err(|_| SketchError::Encoding("relative accuracy out of range"))?;
        sketch.positive = reader.store(max_bins)?;
        sketch.negative = reader.store(max_bins)?;
        sketch.zero = reader.varint()?;
        let (min, max) = if sketch.is_empty() {
            (f64::INFINITY, f64::NEG_INFINITY)
        } else {
            (reader.f64()?, reader.f64()?)
        };
        let base = i32::try_from(reader.signed()?)
            .map_err(|_| SketchError::Encoding("sum position out of range"))?;
        let len = reader.varint()?;
        if len > LIMBS as u64 {
            return Err(SketchError::Encoding("sum too long"));
        }
        let limbs = (0..len)
            .map(|_| reader.signed())
            .collect::<Result<Vec<_>, _>>()?;
        sketch.sum = ExactSum::from_normalized(base, limbs)?;
        if reader.at != bytes.len() {
            return Err(SketchError::Encoding("trailing bytes"));
        }
        let ordered = min.is_finite() && max.is_finite() && min <= max;
        if !(sketch.is_empty() || ordered) {
            return Err(SketchError::Encoding("invalid minimum or maximum"));
        }
        sketch.min = min;
        sketch.max = max;
        Ok(sketch)
    }
}

/// Dense bucket counts for keys `offset .. offset + counts.len()`; the first and last counts
/// are never zero, and the span is at most the bucket bound.
#[derive(Debug, Clone, Default, PartialEq)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
}

impl Store {
    fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &n| a.saturating_add(n))
    }

    fn buckets(&self) -> impl DoubleEndedIterator<Item = (i32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, &n)| (self.offset + i as i32, n))
    }

    fn max_key(&self) -> i32 {
        self.offset + self.counts.len() as i32 - 1
    }

    fn add(&mut self, key: i32, max_bins: u32) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(1);
            return;
        }
        if key > self.max_key() && i64::from(key) - i64::from(self.offset) < i64::from(max_bins) {
            self.counts.resize((key - self.offset + 1) as usize, 0);
        } else if key < self.offset || key > self.max_key() {
            self.reshape(self.offset.min(key), self.max_key().max(key), max_bins);
        }
        let slot = (key.max(self.offset) - self.offset) as usize;
        self.counts[slot] = self.counts[slot].saturating_add(1);
    }

    fn merge(&mut self, other: &Store, max_bins: u32) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.offset = other.offset;
            self.counts = other.counts.clone();
            self.reshape(other.offset, other.max_key(), max_bins);
            return;
        }
        let low = self.offset.min(other.offset);
        let high = self.max_key().max(other.max_key());
        self.reshape(low, high, max_bins);
        for (key, n) in other.buckets() {
            let slot = (key.max(self.offset) - self.offset) as usize;
            self.counts[slot] = self.counts[slot].saturating_add(n);
        }
    }

    /// Makes the store cover keys `low..=high`, except that keys below `high - max_bins + 1`
    /// are collapsed into that key.
    fn reshape(&mut self, low: i32, high: i32, max_bins: u32) {
        let floor = high.saturating_sub(max_bins as i32 - 1);
        let low = low.max(floor);
        let mut counts = vec![0u64; (high - low + 1) as usize];
        for (key, n) in self.buckets() {
            let slot = (key.max(low) - low) as usize;
            counts[slot] = counts[slot].saturating_add(n);
        }
        self.offset = low;
        self.counts = counts;
    }
}

/// Limbs covering the `f64` range: bit 0 of limb 0 weighs 2^-1074, the smallest subnormal,
/// and the largest finite value ends below bit 2098; two limbs more give room for carries.
const LIMBS: usize = 68;
const LIMB_BITS: u32 = 32;
const LIMB_MASK: i64 = (1 << LIMB_BITS) - 1;
/// Additions between carry propagations (each adds less than 2^32 to a limb).
const ADDS_BEFORE_CARRY: u32 = 1 << 30;

/// An exact sum of `f64` values: an integer in units of 2^-1074, held as 32-bit limbs in `i64`
/// words (limbs `base .. base + limbs.len()`), with carries propagated lazily.
///
/// Normalised, every limb but the most significant is in `[0, 2^32)`, the most significant is
/// the signed rest, and no limb at either end is redundant; equal sums then have equal limbs.
#[derive(Debug, Clone, Default)]
struct ExactSum {
    base: i32,
    limbs: Vec<i64>,
    pending: u32,
}

impl PartialEq for ExactSum {
    fn eq(&self, other: &Self) -> bool {
        self.normalized() == other.normalized()
    }
}

impl ExactSum {
    fn add(&mut self, value: f64) {
        if value == 0.0 {
            return;
        }
        let bits = value.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i32;
        let fraction = bits & ((1 << 52) - 1);
        let (mantissa, position) = if exponent == 0 {
            (fraction, 0)
        } else {
            (fraction | (1 << 52), exponent - 1)
        };
        let limb = position / LIMB_BITS as i32;
        let shifted = u128::from(mantissa) << (position % LIMB_BITS as i32);
        let sign = if value < 0.0 { -1 } else { 1 };
        self.cover(limb, limb + 2);
        for i in 0..3 {
            let part = ((shifted >> (LIMB_BITS * i as u32)) as i64) & LIMB_MASK;
            let slot = (limb + i - self.base) as usize;
            self.limbs[slot] += sign * part;
        }
        self.pending += 1;
        if self.pending >= ADDS_BEFORE_CARRY {
            self.carry();
        }
    }

    fn merge(&mut self, other: &ExactSum) {
        let (base, limbs) = other.normalized();
        if limbs.is_empty() {
            return;
        }
        self.carry();
        self.cover(base, base + limbs.len() as i32 - 1);
        for (i, limb) in limbs.iter().enumerate() {
            let slot = (base + i as i32 - self.base) as usize;
            self.limbs[slot] += limb;
        }
        self.carry();
    }

    /// Makes limbs `low..=high` addressable.
    fn cover(&mut self, low: i32, high: i32) {
        if self.limbs.is_empty() {
            self.base = low;
            self.limbs = vec![0; (high - low + 1) as usize];
            return;
        }
        if low < self.base {
            let extra = (self.base - low) as usize;
            self.limbs.splice(0..0, std::iter::repeat_n(0, extra));
            self.base = low;
        }
        let top = self.base + self.limbs.len() as i32 - 1;
        if high > top {
            self.limbs
                .resize(self.limbs.len() + (high - top) as usize, 0);
        }
    }

    /// Propagates carries so that every limb but the last is in `[0, 2^32)`.
    fn carry(&mut self) {
        self.pending = 0;
        let last = self.limbs.len().saturating_sub(1);
        for i in 0..last {
            let carry = self.limbs[i] >> LIMB_BITS;
            self.limbs[i] &= LIMB_MASK;
            self.limbs[i + 1] += carry;
        }
        // The top limb may exceed 32 bits; give it room while the carry is not done.
        while let Some(&top) = self.limbs.last() {
            let carry = top >> LIMB_BITS;
            if carry == 0 || carry == -1 || self.base + self.limbs.len() as i32 >= LIMBS as i32 {
                break;
            }
            let n = self.limbs.len();
            self.limbs[n - 1] = top & LIMB_MASK;
            self.limbs.push(carry);
        }
    }

    /// The canonical `(base, limbs)` form.
    fn normalized(&self) -> (i32, Vec<i64>) {
        let mut copy = self.clone();
        copy.carry();
        let (mut base, mut limbs) = (copy.base, copy.limbs);
        // A zero top limb is redundant; so is a top limb of -1 above another limb x, since
        // -1 · 2^32 + x == x - 2^32 fits the limb below as the new signed top.
        loop {
            match limbs.last() {
                Some(0) => {
                    limbs.pop();
                }
                Some(-1) if limbs.len() >= 2 => {
                    limbs.pop();
                    if let Some(top) = limbs.last_mut() {
                        *top -= 1 << LIMB_BITS;
                    }
                }
                _ => break,
            }
        }
        let zeros = limbs.iter().take_while(|&&l| l == 0).count();
        limbs.drain(..zeros);
        base += zeros as i32;
        if limbs.is_empty() {
            base = 0;
        }
        (base, limbs)
    }

    fn from_normalized(base: i32, limbs: Vec<i64>) -> Result<Self, SketchError> {
        let sum = ExactSum {
            base,
            limbs,
            pending: 0,
        };
        let in_range =
            sum.limbs.is_empty() || (base >= 0 && base as usize + sum.limbs.len() <= LIMBS);
        let limbs_ok = sum.limbs.split_last().is_none_or(|(top, rest)| {
            rest.iter().all(|l| (0..=LIMB_MASK).contains(l))
                && (-(1 << LIMB_BITS)..(1 << LIMB_BITS)).contains(top)
        });
        if !in_range || !limbs_ok || sum.normalized() != (sum.base, sum.limbs.clone()) {
            return Err(SketchError::Encoding("sum is not normalised"));
        }
        Ok(sum)
    }

    /// The sum rounded to the nearest `f64`.
    fn to_f64(&self) -> f64 {
        let (base, limbs) = self.normalized();
        let Some(&top) = limbs.last() else {
            return 0.0;
        };
        // The three most significant limbs, with the rest folded into a sticky bit: 96 bits
        // and a sticky bit round to the same f64 as the exact value.
        let n = limbs.len();
        let take = n.min(3);
        let mut wide: i128 = i128::from(top);
        for i in (n - take..n - 1).rev() {
            wide = (wide << LIMB_BITS) | i128::from(limbs[i]);
        }
        let sticky = limbs[..n - take].iter().any(|&l| l != 0);
        let lowest = base + (n - take) as i32;
        wide = (wide << 1) | i128::from(sticky);
        scale(wide as f64, lowest * LIMB_BITS as i32 - 1074 - 1)
    }
}

/// `value · 2^exp` without intermediate overflow or underflow.
fn scale(mut value: f64, mut exp: i32) -> f64 {
    while exp > 1000 {
        value *= 2f64.powi(1000);
        exp -= 1000;
    }
    while exp < -1000 {
        value *= 2f64.powi(-1000);
        exp += 1000;
    }
    value * 2f64.powi(exp)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, SketchError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or(SketchError::Encoding("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn f64(&mut self) -> Result<f64, SketchError> {
        let end = self.at + 8;
        let raw = self
            .bytes
            .get(self.at..end)
            .ok_or(SketchError::Encoding("truncated"))?;
        self.at = end;
        Ok(f64::from_le_bytes(raw.try_into().expect("eight bytes")))
    }

    fn varint(&mut self) -> Result<u64, SketchError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(value);
            }
        }
        Err(SketchError::Encoding("varint too long"))
    }

    fn signed(&mut self) -> Result<i64, SketchError> {
        let raw = self.varint()?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    fn store(&mut self, max_bins: u32) -> Result<Store, SketchError> {
        let offset = i32::try_from(self.signed()?)
            .map_err(|_| SketchError::Encoding("bucket offset out of range"))?;
        let len = self.varint()?;
        if len > u64::from(max_bins) {
            return Err(SketchError::Encoding("more buckets than the bound"));
        }
        if offset.checked_add(len as i32).is_none() {
            return Err(SketchError::Encoding("bucket offset out of range"));
        }
        let counts = (0..len)
            .map(|_| self.varint())
            .collect::<Result<Vec<_>, _>>()?;
        if counts.first().is_some_and(|&n| n == 0) || counts.last().is_some_and(|&n| n == 0) {
            return Err(SketchError::Encoding("store has empty end buckets"));
        }
        Ok(Store { offset, counts })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A small deterministic generator, so that each case is reproducible from its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in (0, 1].
        fn unit(&mut self) -> f64 {
            ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Shape {
        LogNormal,
        Pareto,
        Bimodal,
        Constant,
        Tiny,
        Huge,
        Mixed,
    }

    fn values(shape: Shape, seed: u64, n: usize) -> Vec<f64> {
        let mut rng = Rng(seed);
        (0..n)
            .map(|_| match shape {
                Shape::LogNormal => (1.0 + 2.0 * rng.normal()).exp() * 1e6,
                Shape::Pareto => 1000.0 / rng.unit().powf(1.0 / 1.5),
                Shape::Bimodal => {
                    let centre = if rng.next().is_multiple_of(3) {
                        2e8
                    } else {
                        5e6
                    };
                    centre * (0.2 * rng.normal()).exp()
                }
                Shape::Constant => 42.5,
                Shape::Tiny => 1e-300 * (3.0 * rng.normal()).exp(),
                Shape::Huge => 1e300 * (3.0 * rng.normal()).exp(),
                Shape::Mixed => match rng.next() % 4 {
                    0 => 0.0,
                    1 => -(rng.normal().exp() * 100.0),
                    _ => rng.normal().exp() * 100.0,
                },
            })
            .collect()
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::LogNormal),
            Just(Shape::Pareto),
            Just(Shape::Bimodal),
            Just(Shape::Constant),
            Just(Shape::Tiny),
            Just(Shape::Huge),
            Just(Shape::Mixed),
        ]
    }

    fn sketch_of(values: &[f64], max_bins: u32) -> Sketch {
        let mut sketch = Sketch::with_max_bins(DEFAULT_ALPHA, max_bins).unwrap();
        for &v in values {
            sketch.add(v);
        }
        sketch
    }

    const QUANTILES: [f64; 11] = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn quantiles_are_within_alpha(shape in shape(), seed: u64, n in 1usize..3000) {
            let values = values(shape, seed, n);
            let sketch = sketch_of(&values, DEFAULT_MAX_BINS);
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            for q in QUANTILES {
                let exact = sorted[(q * (n - 1) as f64).floor() as usize];
                let estimate = sketch.quantile(q).unwrap().unwrap();
                let error = (estimate - exact).abs();
                prop_assert!(
                    error <= DEFAULT_ALPHA * exact.abs() * (1.0 + 1e-9),
                    "q {q}: estimate {estimate}, exact {exact}"
                );
            }
            prop_assert_eq!(sketch.count(), n as u64);
        }

        #[test]
        fn any_partition_merges_to_the_same_bytes(
            shape in shape(),
            seed: u64,
            n in 0usize..2000,
            parts in 1usize..8,
            max_bins in prop_oneof![Just(DEFAULT_MAX_BINS), Just(64u32), Just(3u32)],
        ) {
            let values = values(shape, seed, n);
            let whole = sketch_of(&values, max_bins);
            // Deal the values to parts at random, then merge the parts in a shuffled order.
            let mut rng = Rng(seed ^ 0x5eed);
            let mut dealt = vec![Vec::new(); parts];
            for v in values {
                dealt[(rng.next() % parts as u64) as usize].push(v);
            }
            let mut sketches: Vec<Sketch> = dealt.iter().map(|p| sketch_of(p, max_bins)).collect();
            for i in (1..sketches.len()).rev() {
                sketches.swap(i, (rng.next() % (i as u64 + 1)) as usize);
            }
            // Merge as a tree of encoded partial states, as partial aggregation does.
            while sketches.len() > 1 {
                let b = sketches.pop().unwrap();
                let mut a = Sketch::decode(&sketches.pop().unwrap().encode()).unwrap();
                a.merge(&b).unwrap();
                sketches.insert(0, a);
            }
            prop_assert_eq!(sketches[0].encode(), whole.encode());
        }

        #[test]
        fn encoding_round_trips(shape in shape(), seed: u64, n in 0usize..500) {
            let sketch = sketch_of(&values(shape, seed, n), DEFAULT_MAX_BINS);
            let bytes = sketch.encode();
            let decoded = Sketch::decode(&bytes).unwrap();
            prop_assert_eq!(decoded.encode(), bytes);
            prop_assert_eq!(decoded.count(), sketch.count());
            prop_assert_eq!(decoded.sum().to_bits(), sketch.sum().to_bits());
        }

        #[test]
        fn damaged_bytes_are_errors_not_panics(
            seed: u64,
            n in 0usize..200,
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            xor in 1u8..,
        ) {
            let bytes = sketch_of(&values(Shape::Mixed, seed, n), DEFAULT_MAX_BINS).encode();
            let _ = Sketch::decode(&bytes[..cut.index(bytes.len())]);
            let mut flipped = bytes.clone();
            let at = flip.index(flipped.len());
            flipped[at] ^= xor;
            if let Ok(sketch) = Sketch::decode(&flipped) {
                // What decodes is a valid sketch: it answers and re-encodes the same.
                let _ = sketch.quantile(0.5);
                prop_assert_eq!(sketch.encode(), flipped);
            }
        }

        #[test]
        fn random_bytes_are_errors_not_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Sketch::decode(&bytes);
            let mut with_version = vec![1u8];
            with_version.extend(&bytes);
            let _ = Sketch::decode(&with_version);
        }

        #[test]
        fn integer_sums_are_exact(values in prop::collection::vec(-1_000_000_000i64..1_000_000_000, 0..200)) {
            let mut sketch = Sketch::new(DEFAULT_ALPHA).unwrap();
            for &v in &values {
                sketch.add(v as f64);
            }
            prop_assert_eq!(sketch.sum(), values.iter().sum::<i64>() as f64);
        }
    }

    #[test]
    fn sums_do_not_lose_small_terms() {
        let mut sketch = Sketch::new(DEFAULT_ALPHA).unwrap();
        for v in [1e300, 1.0, -1e300, 0.5, f64::MIN_POSITIVE / 4.0] {
            sketch.add(v);
        }
        assert_eq!(sketch.sum(), 1.5);
        let mut negative = Sketch::new(DEFAULT_ALPHA).unwrap();
        for v in [-3.25, -1e-310, 1e-310] {
            negative.add(v);
        }
        assert_eq!(negative.sum(), -3.25);
        assert_eq!(negative.count(), 3);
    }

    #[test]
    fn empty_and_parameters() {
        let sketch = Sketch::new(0.02).unwrap();
        assert_eq!(sketch.quantile(0.5), Ok(None));
        assert_eq!(sketch.min(), None);
        assert_eq!(sketch.sum(), 0.0);
        assert_eq!(Sketch::decode(&sketch.encode()).unwrap(), sketch);
        assert_eq!(sketch.quantile(1.5), Err(SketchError::Quantile(1.5)));
        assert!(matches!(Sketch::new(0.0), Err(SketchError::Alpha(_))));
        assert!(matches!(Sketch::new(f64::NAN), Err(SketchError::Alpha(_))));
        let mut other = Sketch::new(0.01).unwrap();
        assert!(matches!(
            other.merge(&sketch),
            Err(SketchError::Mismatch(..))
        ));
    }

    #[test]
    fn bins_ascend_and_count_every_value() {
        let mut sketch = Sketch::new(DEFAULT_ALPHA).unwrap();
        for v in [100.0, -2.0, 0.0, 1.0, 0.0, 1.0, 1.0, -2.0, 5e-324] {
            sketch.add(v);
        }
        let bins = sketch.bins();
        let expected: [(f64, u64); 4] = [(-2.0, 2), (0.0, 3), (1.0, 3), (100.0, 1)];
        assert_eq!(bins.len(), expected.len(), "{bins:?}");
        for ((value, n), (expected_value, expected_n)) in bins.iter().zip(expected) {
            let error = (value - expected_value).abs();
            assert!(
                error <= DEFAULT_ALPHA * expected_value.abs() * (1.0 + 1e-9),
                "{bins:?}"
            );
            assert_eq!(*n, expected_n);
        }
        assert!(bins.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert_eq!(bins.iter().map(|(_, n)| n).sum::<u64>(), sketch.count());
        assert!(Sketch::new(DEFAULT_ALPHA).unwrap().bins().is_empty());
    }

    #[test]
    fn bins_of_any_input_ascend_and_sum_to_the_count() {
        for (seed, shape) in [Shape::Mixed, Shape::LogNormal, Shape::Tiny]
            .into_iter()
            .enumerate()
        {
            for max_bins in [DEFAULT_MAX_BINS, 3] {
                let sketch = sketch_of(&values(shape, seed as u64, 1000), max_bins);
                let bins = sketch.bins();
                assert!(bins.windows(2).all(|pair| pair[0].0 < pair[1].0));
                assert_eq!(bins.iter().map(|(_, n)| n).sum::<u64>(), sketch.count());
            }
        }
    }

    #[test]
    fn non_finite_values_are_not_counted() {
        let mut sketch = Sketch::new(DEFAULT_ALPHA).unwrap();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 7.0] {
            sketch.add(v);
        }
        assert_eq!(sketch.count(), 1);
        assert_eq!(sketch.quantile(0.5).unwrap(), Some(7.0));
    }
}
