//! The statistical tests behind anomaly reports, and the numerics they rest on.
//!
//! A report compares a current window with a baseline window, group by group and measure by
//! measure, so every test here compares two samples and is two-sided:
//!
//! - An error rate is a proportion of spans, so [`error_rate_test`] compares two proportions:
//!   Fisher's exact test when the 2×2 table is too thin for a normal approximation (any
//!   expected cell below 5, which is where quiet groups sit), else the pooled two-proportion
//!   z-test, which is accurate there and cheap at millions of spans.
//! - Traffic is a count of events over windows of different lengths, so [`rate_test`] treats
//!   the counts as Poisson. Given their total, the current count is binomial with a share
//!   fixed by the window lengths when the rates are equal, which tests the rates without
//!   estimating them.
//! - Latencies arrive as sketch bins rather than samples, and are skewed and heavy-tailed, so
//!   [`rank_sum_test`] uses the Mann–Whitney U test: it assumes no shape, takes a bin as a run
//!   of tied values, and costs O(bins) however many spans the bins count.
//! - A report runs many tests at once, so [`benjamini_hochberg`] turns their p-values into
//!   q-values that bound the share of false findings across the report.
//!
//! This module only computes: it makes no I/O and knows nothing of spans, groups or reports.
//! Its functions do not panic, and every p-value they return is a number in `[0, 1]`.
//! Probabilities are handled in log space, so counts in the hundreds of millions neither
//! overflow nor underflow.

use std::f64::consts::TAU;

/// A test's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// Two-sided p-value in [0, 1].
    pub p_value: f64,
    /// The test's name as reports print it.
    pub test: &'static str,
}

/// Below this expected count in any cell of a 2×2 table the z-test is not trusted.
const MIN_EXPECTED_CELL: f64 = 5.0;
/// Up to this many events in both windows together, the rate test sums binomial
/// probabilities exactly.
const EXACT_RATE_LIMIT: u64 = 10_000;
/// Outcomes whose log-probability is within this of the observed one count as equally likely,
/// so that rounding does not split exact ties (the relative margin scipy uses).
const TIE_TOLERANCE: f64 = 1e-7;
/// Outcomes less likely than the observed one by more than this factor, in log space
/// (e^-50 ≈ 2·10^-22), no longer change a p-value.
const NEGLIGIBLE: f64 = -50.0;
/// From this argument on, ln C(n, k) uses Stirling's series, whose truncation error is
/// then below 10^-13.
const STIRLING_FROM: u64 = 16;

/// Error rates of two windows: Fisher's exact test ("fisher_exact") when any expected cell of the
/// 2×2 table is below 5, else the pooled two-proportion z-test ("two_proportion_z").
/// None when either n is 0, when errors exceed their n, or when the two n overflow `u64`.
pub fn error_rate_test(
    errors_current: u64,
    n_current: u64,
    errors_baseline: u64,
    n_baseline: u64,
) -> Option<TestResult> {
    if n_current == 0 || n_baseline == 0 {
        return None;
    }
    if errors_current > n_current || errors_baseline > n_baseline {
        return None;
    }
    let spans = n_current.checked_add(n_baseline)?;
    // Cannot overflow: at most `spans`.
    let errors = errors_current + errors_baseline;
    // The smallest expected cell is the smaller row total times the smaller column total.
    let smallest_row = n_current.min(n_baseline) as f64;
    let smallest_column = errors.min(spans - errors) as f64;
    let smallest_expected = smallest_row * smallest_column / spans as f64;
    if smallest_expected < MIN_EXPECTED_CELL {
        let p_value = fisher_exact(
            errors_current,
            n_current - errors_current,
            errors_baseline,
            n_baseline - errors_baseline,
        );
        Some(outcome("fisher_exact", p_value))
    } else {
        let p_value = two_proportion_z(errors_current, n_current, errors_baseline, n_baseline);
        Some(outcome("two_proportion_z", p_value))
    }
}

/// Event rates of two windows of different lengths ("poisson_rate"): conditional on the total
/// count n, the current count is Binomial(n, s_c / (s_c + s_b)); exact two-sided binomial test
/// (sum of probabilities ≤ the observed one) for n ≤ 10_000, else the normal approximation with
/// continuity correction. None when both counts are 0 or a length is not positive and finite.
pub fn rate_test(
    count_current: u64,
    seconds_current: f64,
    count_baseline: u64,
    seconds_baseline: f64,
) -> Option<TestResult> {
    let usable = |seconds: f64| seconds > 0.0 && seconds.is_finite();
    if !usable(seconds_current) || !usable(seconds_baseline) {
        return None;
    }
    if count_current == 0 && count_baseline == 0 {
        return None;
    }
    // Under equal rates an event falls in the current window with probability
    // p = s_c / (s_c + s_b), and in the baseline with q = 1 − p; both are taken from the ratio
    // of the lengths so that neither is rounded to 0 or 1 while the other is not.
    let ln_p = -(seconds_baseline / seconds_current).ln_1p();
    let ln_q = -(seconds_current / seconds_baseline).ln_1p();
    let p_value = if ln_p == f64::NEG_INFINITY {
        // The current window is too short, next to the baseline, to expect any event in it.
        if count_current == 0 { 1.0 } else { 0.0 }
    } else if ln_q == f64::NEG_INFINITY {
        if count_baseline == 0 { 1.0 } else { 0.0 }
    } else if count_current.saturating_add(count_baseline) <= EXACT_RATE_LIMIT {
        let n = count_current + count_baseline;
        let k = count_current;
        let ln_p_observed = ln_choose(n, k) + k as f64 * ln_p + (n - k) as f64 * ln_q;
        let ln_odds = seconds_current.ln() - seconds_baseline.ln();
        // P(j + 1) / P(j) = (n − j) / (j + 1) · p / q
        exact_two_sided(0, n, k, ln_p_observed, |j| {
            ((n - j) as f64 / (j + 1) as f64).ln() + ln_odds
        })
    } else {
        let n = count_current as f64 + count_baseline as f64;
        let (p, q) = (ln_p.exp(), ln_q.exp());
        let distance = (count_current as f64 - n * p).abs() - 0.5;
        two_sided_normal(distance.max(0.0) / (n * p * q).sqrt())
    };
    Some(outcome("poisson_rate", p_value))
}

/// Whether the current distribution is shifted against the baseline ("rank_sum"):
/// Mann–Whitney U on binned samples `(value, count)` (values need not be sorted or distinct
/// across the two sides), mid-ranks for ties, tie-corrected variance, normal approximation
/// without continuity correction. Returns the result and the probability of superiority
/// P(current > baseline) + 0.5·P(equal) as an effect size. NaN values are ignored. None when
/// either side is empty or the variance is 0 (every value equal).
pub fn rank_sum_test(current: &[(f64, u64)], baseline: &[(f64, u64)]) -> Option<(TestResult, f64)> {
    // (value, count in current, count in baseline). Counts are held as f64, whose sums and
    // products stay exact integers while the pair count n_c · n_b is below 2^52.
    let mut bins: Vec<(f64, f64, f64)> = current
        .iter()
        .map(|&(value, n)| (value, n as f64, 0.0))
        .chain(baseline.iter().map(|&(value, n)| (value, 0.0, n as f64)))
        .filter(|&(value, c, b)| !value.is_nan() && c + b > 0.0)
        .collect();
    bins.sort_by(|x, y| x.0.total_cmp(&y.0));

    // Walking up the values, every current span of a value beats the baseline spans below it
    // and ties those of its own value: that counts 2U without ranking spans one by one.
    let mut twice_u = 0.0;
    let mut n_current = 0.0;
    let mut n_baseline = 0.0;
    // N³ − Σ t³ over the tie groups t, the tie correction of the variance; adding a group of
    // t to the s values seen adds (s + t)³ − s³ − t³ = 3st(s + t), so no difference of large
    // cubes is ever taken.
    let mut untied = 0.0;
    for tied in bins.chunk_by(|x, y| x.0 == y.0) {
        let (c, b) = tied
            .iter()
            .fold((0.0, 0.0), |(c, b), bin| (c + bin.1, b + bin.2));
        let seen = n_current + n_baseline;
        let t = c + b;
        twice_u += c * (2.0 * n_baseline + b);
        untied += 3.0 * seen * t * (seen + t);
        n_current += c;
        n_baseline += b;
    }
    if n_current == 0.0 || n_baseline == 0.0 {
        return None;
    }
    let pairs = n_current * n_baseline;
    let n = n_current + n_baseline;
    // n_c n_b / 12 · ((N + 1) − Σ(t³ − t) / (N(N − 1))), rewritten with N³ − Σ t³.
    let variance = pairs * untied / (12.0 * n * (n - 1.0));
    if !(variance > 0.0 && variance.is_finite()) {
        return None;
    }
    let z = (twice_u - pairs) / 2.0 / variance.sqrt();
    let superiority = twice_u / 2.0 / pairs;
    Some((outcome("rank_sum", two_sided_normal(z)), superiority))
}

/// Benjamini–Hochberg adjusted p-values (q-values), in the input's order; monotone, capped at 1.
/// A NaN p-value is taken as 1.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let clean: Vec<f64> = p_values.iter().map(|&p| probability(p)).collect();
    let m = clean.len() as f64;
    let mut order: Vec<usize> = (0..clean.len()).collect();
    order.sort_by(|&i, &j| clean[i].total_cmp(&clean[j]));
    // q of the i-th smallest p is min over j ≥ i of p_(j) · m / j.
    let mut q_values = vec![1.0; clean.len()];
    let mut smallest_above = 1.0_f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        smallest_above = smallest_above.min(clean[i] * m / (rank + 1) as f64);
        q_values[i] = smallest_above;
    }
    q_values
}

/// A result whose p-value is guaranteed to be in `[0, 1]`.
fn outcome(test: &'static str, p_value: f64) -> TestResult {
    TestResult {
        p_value: probability(p_value),
        test,
    }
}

/// `p` clamped to `[0, 1]`, with NaN (a computation that could not decide) taken as 1.
fn probability(p: f64) -> f64 {
    if p.is_nan() { 1.0 } else { p.clamp(0.0, 1.0) }
}

/// Fisher's exact test of the 2×2 table `[[a, b], [c, d]]`, whose total must fit `u64`.
fn fisher_exact(mut a: u64, mut b: u64, mut c: u64, mut d: u64) -> f64 {
    // The p-value is the same for the table transposed or with its rows or columns swapped.
    // Drawing the smallest margin from the whole keeps every ln C in the probability small, so
    // its rounding stays small too, even beside a margin in the hundreds of millions.
    if (a + c).min(b + d) < (a + b).min(c + d) {
        std::mem::swap(&mut b, &mut c);
    }
    if c + d < a + b {
        (a, b, c, d) = (c, d, a, b);
    }
    if b + d < a + c {
        (a, b, c, d) = (b, a, d, c);
    }
    // Now `a` of the `draws` items of the first row fall in the first column's `marked` items.
    let draws = a + b;
    let marked = a + c;
    let unmarked = b + d;
    let total = marked + unmarked;
    let low = draws.saturating_sub(unmarked);
    let high = draws.min(marked);
    let ln_p_observed =
        ln_choose(marked, a) + ln_choose(unmarked, draws - a) - ln_choose(total, draws);
    // P(k + 1) / P(k) = (marked − k)(draws − k) / ((k + 1)(unmarked − draws + k + 1)); from
    // k ≥ low, unmarked − (draws − k) is not negative.
    exact_two_sided(low, high, a, ln_p_observed, |k| {
        let up = (marked - k) as f64 * (draws - k) as f64;
        let down = (k + 1) as f64 * ((unmarked - (draws - k)) as f64 + 1.0);
        (up / down).ln()
    })
}

/// The pooled two-proportion z-test.
fn two_proportion_z(x_current: u64, n_current: u64, x_baseline: u64, n_baseline: u64) -> f64 {
    let (x1, n1) = (x_current as f64, n_current as f64);
    let (x2, n2) = (x_baseline as f64, n_baseline as f64);
    let pooled = (x1 + x2) / (n1 + n2);
    let standard_error = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    two_sided_normal((x1 / n1 - x2 / n2) / standard_error)
}

/// The two-sided p-value of an exact test on a unimodal distribution over `low..=high`: the
/// probability of the outcomes no more likely than `observed`, whose log-probability is
/// `ln_p_observed`. `ln_ratio(k)` is ln(P(k + 1) / P(k)).
///
/// Walking away from `observed` with the ratios keeps every term relative to the observed
/// one, so no term overflows and none underflows before it stops mattering; a walk stops once
/// its terms are negligible and falling, which unimodality makes final.
fn exact_two_sided(
    low: u64,
    high: u64,
    observed: u64,
    ln_p_observed: f64,
    ln_ratio: impl Fn(u64) -> f64,
) -> f64 {
    let mut relative_sum: f64 = 1.0;
    let mut ln_relative: f64 = 0.0;
    for k in observed..high {
        let step = ln_ratio(k);
        ln_relative += step;
        if ln_relative <= TIE_TOLERANCE {
            relative_sum += ln_relative.exp();
        }
        if ln_relative < NEGLIGIBLE && step < 0.0 {
            break;
        }
    }
    ln_relative = 0.0;
    for k in (low..observed).rev() {
        let step = ln_ratio(k);
        ln_relative -= step;
        if ln_relative <= TIE_TOLERANCE {
            relative_sum += ln_relative.exp();
        }
        if ln_relative < NEGLIGIBLE && step > 0.0 {
            break;
        }
    }
    (ln_p_observed + relative_sum.ln()).exp()
}

/// The two-sided p-value of a standard normal statistic; 1 when `z` is NaN.
fn two_sided_normal(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    (2.0 * normal_sf(z.abs())).min(1.0)
}

/// P(Z > z) for a standard normal Z. The relative error is below 10^-12 wherever the result
/// is a normal `f64` (z below about 37.5); past z = 39 the result underflows to 0.
fn normal_sf(z: f64) -> f64 {
    if z < 0.0 {
        return 1.0 - normal_sf(-z);
    }
    if z > 39.0 {
        return 0.0;
    }
    let density = (-0.5 * z * z).exp() / TAU.sqrt();
    if z < 3.0 {
        // Φ(z) − ½ = φ(z) · Σ z^(2i+1) / (1·3·5···(2i+1)), a series of positive terms; the
        // subtraction from ½ costs at most three digits here, as Q(3) ≈ 1.3·10^-3.
        let mut term = z;
        let mut sum = z;
        let mut odd = 1.0;
        while term > sum * 1e-17 {
            odd += 2.0;
            term *= z * z / odd;
            sum += term;
        }
        0.5 - density * sum
    } else {
        density * mills_ratio(z)
    }
}

/// Q(z) / φ(z) for z ≥ 3, from Laplace's continued fraction
/// 1 / (z + 1 / (z + 2 / (z + 3 / (z + …)))), evaluated forward with Lentz's method. Every
/// partial numerator and denominator is positive, so no denominator vanishes; at z = 3 it
/// converges in about 55 steps, fewer further out.
fn mills_ratio(z: f64) -> f64 {
    const MAX_STEPS: u32 = 500;
    // g = z + 1 / (z + 2 / (z + 3 / …)), and the ratio is 1 / g.
    let mut g = z;
    let mut c = z;
    let mut d = 0.0;
    for j in 1..=MAX_STEPS {
        let a = f64::from(j);
        d = 1.0 / (z + a * d);
        c = z + a / c;
        let delta = c * d;
        g *= delta;
        if (delta - 1.0).abs() < 1e-16 {
            break;
        }
    }
    1.0 / g
}

/// ln C(n, k); −∞ when k > n. Small k multiplies out the coefficient; larger k takes the
/// difference of Stirling's series in a form that never subtracts two large logarithms, so
/// the error stays relative to the result even when n is in the hundreds of millions.
fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let k = k.min(n - k);
    if k < STIRLING_FROM {
        // C(n, k) = Π_{i<k} (n − i) / (k − i)
        return (0..k).map(|i| ((n - i) as f64 / (k - i) as f64).ln()).sum();
    }
    let (n, k) = (n as f64, k as f64);
    let rest = n - k;
    // ln n! = n ln n − n + ½ ln(2πn) + c(n); the linear terms cancel and
    // n ln n − k ln k − (n − k) ln(n − k) = k ln(n / k) − (n − k) ln(1 − k / n).
    k * (n / k).ln() - rest * (-k / n).ln_1p()
        + 0.5 * (n / (TAU * k * rest)).ln()
        + stirling_correction(n)
        - stirling_correction(k)
        - stirling_correction(rest)
}

/// ln m! − (m ln m − m + ½ ln(2πm)) for m ≥ 16, by Stirling's series to the m^-7 term.
fn stirling_correction(m: f64) -> f64 {
    let r = 1.0 / m;
    let r2 = r * r;
    r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 / 1680.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// |actual − expected| within `relative` of `expected`.
    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        (actual - expected).abs() <= relative * expected.abs()
    }

    // Reference values below were computed with Python 3.11: exact rational arithmetic
    // (fractions.Fraction) for the exact tests, mpmath at 60 digits for normal tails. scipy was
    // not available; the exact-test rule is scipy's (probabilities ≤ the observed one × (1 + 1e-7)).

    #[test]
    fn normal_tail_is_accurate_far_out() {
        // mpmath.ncdf(-z)
        let cases = [
            (0.0, 0.5),
            (1.0, 0.15865525393145705),
            (1.96, 0.024997895148220435),
            (3.0, 0.0013498980316300946),
            (5.0, 2.866515718791939e-07),
            (8.0, 6.220960574271784e-16),
            (20.0, 2.7536241186062337e-89),
            (37.0, 5.725571222524577e-300),
            (-1.0, 0.8413447460685429),
        ];
        for (z, expected) in cases {
            let actual = normal_sf(z);
            assert!(
                close(actual, expected, 1e-12),
                "Q({z}) = {actual}, expected {expected}"
            );
        }
        assert_eq!(normal_sf(f64::INFINITY), 0.0);
        assert_eq!(normal_sf(f64::NEG_INFINITY), 1.0);
        assert_eq!(two_sided_normal(f64::NAN), 1.0);
    }

    #[test]
    fn ln_choose_matches_exact_binomial_coefficients() {
        // mpmath.log(mpmath.binomial(n, k)) at 60 digits.
        let cases = [
            (10, 3, 4.787491742782046),
            (33, 16, 20.877533461363956),
            (50, 25, 32.47055650581199),
            (1000, 500, 689.4672615678512),
            (100_000_000, 20, 326.0779965182937),
            (200_000_000, 100_000_000, 138629426.32928374),
        ];
        for (n, k, expected) in cases {
            let actual = ln_choose(n, k);
            assert!(close(actual, expected, 1e-13), "ln C({n}, {k}) = {actual}");
        }
        assert_eq!(ln_choose(7, 0), 0.0);
        assert_eq!(ln_choose(3, 4), f64::NEG_INFINITY);
    }

    #[test]
    fn fisher_matches_a_known_table() {
        // Table [[3, 7], [12, 5]]: errors and successes of each window. Expected error cell of
        // the current window is 10 · 15 / 27 < 5. Fraction-exact; scipy.stats.fisher_exact
        // gives the same two-sided p.
        let result = error_rate_test(3, 10, 12, 17).unwrap();
        assert_eq!(result.test, "fisher_exact");
        assert!((result.p_value - 0.056750572082379866).abs() < 1e-12);

        let result = error_rate_test(1, 20, 2, 1000).unwrap();
        assert_eq!(result.test, "fisher_exact");
        assert!((result.p_value - 0.05773318618500881).abs() < 1e-12);
    }

    #[test]
    fn fisher_handles_hundreds_of_millions_of_spans() {
        // 0 of 10^8 against 3 of 10^8, and 7 of 10^8 against 0 of 10^8: hypergeometric
        // probabilities as exact ratios of falling factorials.
        let result = error_rate_test(0, 100_000_000, 3, 100_000_000).unwrap();
        assert_eq!(result.test, "fisher_exact");
        assert!((result.p_value - 0.24999999625).abs() < 1e-12);
        let result = error_rate_test(7, 100_000_000, 0, 100_000_000).unwrap();
        assert!((result.p_value - 0.015624998359375033).abs() < 1e-12);
    }

    #[test]
    fn fisher_stays_accurate_with_thin_margins_beside_huge_ones() {
        // Table [[10, 19990], [19990, 99960010]]: smallest expected cell 20000² / 10^8 = 4.
        // Summed over the support in mpmath at 40 digits with log-gamma probabilities.
        let result = error_rate_test(10, 20_000, 19_990, 99_980_000).unwrap();
        assert_eq!(result.test, "fisher_exact");
        assert!(close(result.p_value, 0.008119017317474043, 1e-9));
    }

    #[test]
    fn error_rates_use_the_z_test_when_every_cell_is_large() {
        // Pooled z = (p1 − p2) / sqrt(p(1 − p)(1/n1 + 1/n2)), two-sided p = 2·ncdf(−|z|) in mpmath.
        let result = error_rate_test(100, 2000, 60, 2000).unwrap();
        assert_eq!(result.test, "two_proportion_z");
        assert!(close(result.p_value, 0.0012488309880884245, 1e-9));

        let result = error_rate_test(1_010_000, 100_000_000, 1_000_000, 100_000_000).unwrap();
        assert_eq!(result.test, "two_proportion_z");
        assert!(close(result.p_value, 1.3491950042064197e-12, 1e-6));
    }

    #[test]
    fn equal_error_rates_give_p_one() {
        assert_eq!(error_rate_test(0, 500, 0, 800).unwrap().p_value, 1.0);
        assert_eq!(error_rate_test(500, 500, 800, 800).unwrap().p_value, 1.0);
        let same = error_rate_test(50, 1000, 50, 1000).unwrap();
        assert_eq!(same.test, "two_proportion_z");
        assert!((same.p_value - 1.0).abs() < 1e-12);
    }

    #[test]
    fn error_rate_test_is_none_without_spans_or_with_more_errors_than_spans() {
        assert_eq!(error_rate_test(0, 0, 1, 10), None);
        assert_eq!(error_rate_test(1, 10, 0, 0), None);
        assert_eq!(error_rate_test(11, 10, 1, 10), None);
        assert_eq!(error_rate_test(1, u64::MAX, 1, u64::MAX), None);
    }

    #[test]
    fn rate_test_gives_a_large_p_for_equal_rates() {
        let result = rate_test(100, 60.0, 100, 60.0).unwrap();
        assert_eq!(result.test, "poisson_rate");
        assert!((result.p_value - 1.0).abs() < 1e-12);
        // 48 events in 30 s against 100 in 60 s: Binomial(148, 1/3) at 48, Fraction-exact.
        let result = rate_test(48, 30.0, 100, 60.0).unwrap();
        assert!((result.p_value - 0.8618393686217052).abs() < 1e-12);
        // 30 events in 10 s against 300 in 90 s: Binomial(330, 1/10) at 30.
        let result = rate_test(30, 10.0, 300, 90.0).unwrap();
        assert!((result.p_value - 0.6466528724525189).abs() < 1e-12);
    }

    #[test]
    fn rate_test_gives_a_tiny_p_for_a_doubled_rate() {
        // 200 events against 100 in equal windows: Binomial(300, 1/2) at 200, Fraction-exact.
        let result = rate_test(200, 60.0, 100, 60.0).unwrap();
        assert!(close(result.p_value, 8.014875216538918e-09, 1e-9));
        // Every event in the current window: Binomial(3, 1/2) at 3.
        let result = rate_test(3, 10.0, 0, 10.0).unwrap();
        assert!((result.p_value - 0.25).abs() < 1e-12);
    }

    #[test]
    fn rate_test_uses_the_normal_approximation_above_ten_thousand_events() {
        // z = (|k − np| − ½) / sqrt(npq), two-sided p = 2·ncdf(−z) in mpmath.
        let result = rate_test(10_500, 60.0, 10_000, 60.0).unwrap();
        assert!(close(result.p_value, 0.0004918296547921501, 1e-9));
        let result = rate_test(30_000, 120.0, 60_000, 300.0).unwrap();
        assert!(close(result.p_value, 2.018278991137271e-219, 1e-6));
        let result = rate_test(20_000, 60.0, 20_000, 60.0).unwrap();
        assert_eq!(result.p_value, 1.0);
    }

    #[test]
    fn rate_test_is_none_without_events_or_with_a_non_positive_length() {
        assert_eq!(rate_test(0, 60.0, 0, 60.0), None);
        assert_eq!(rate_test(5, 0.0, 5, 60.0), None);
        assert_eq!(rate_test(5, 60.0, 5, -1.0), None);
        assert_eq!(rate_test(5, f64::NAN, 5, 60.0), None);
        assert_eq!(rate_test(5, 60.0, 5, f64::INFINITY), None);
    }

    #[test]
    fn rate_test_stays_a_probability_for_extreme_inputs() {
        let cases = [
            (0, 1e-300, 5, 1e10),
            (3, 1e-300, 5, 1e10),
            (5, 1e10, 0, 1e-300),
            (1, 1e-20, 10_000, 1.0),
            (u64::MAX, 1.0, u64::MAX, 1.0),
            (100_000_000, 3600.0, 0, 60.0),
        ];
        for (count_current, seconds_current, count_baseline, seconds_baseline) in cases {
            let p = rate_test(
                count_current,
                seconds_current,
                count_baseline,
                seconds_baseline,
            )
            .unwrap()
            .p_value;
            assert!(
                (0.0..=1.0).contains(&p),
                "{count_current} {count_baseline}: {p}"
            );
        }
        assert_eq!(rate_test(0, 1e-300, 5, 1e300).unwrap().p_value, 1.0);
        assert_eq!(rate_test(3, 1e-300, 5, 1e300).unwrap().p_value, 0.0);
    }

    #[test]
    fn rank_sum_matches_a_per_sample_computation() {
        // Expanded to one value per span, ranked with mid-ranks, U = R1 − n1(n1 + 1)/2 and the
        // tie-corrected variance in Fractions, p = 2·ncdf(−|z|) in mpmath.
        let current = [(2.0, 2), (1.0, 3), (3.0, 2), (2.0, 3), (4.5, 1)];
        let baseline = [(1.0, 4), (0.5, 4), (2.0, 2), (3.0, 1)];
        let (result, superiority) = rank_sum_test(&current, &baseline).unwrap();
        assert_eq!(result.test, "rank_sum");
        assert!(close(result.p_value, 0.01874297628721187, 1e-12));
        assert!((superiority - 0.7851239669421488).abs() < 1e-12);
    }

    #[test]
    fn rank_sum_finds_a_shifted_distribution() {
        // 20 spans at each of 10..30 against 20 at each of 0..20.
        let current: Vec<(f64, u64)> = (10..30).map(|v| (f64::from(v), 20)).collect();
        let baseline: Vec<(f64, u64)> = (0..20).map(|v| (f64::from(v), 20)).collect();
        let (result, superiority) = rank_sum_test(&current, &baseline).unwrap();
        assert!(close(result.p_value, 2.1199533413948685e-75, 1e-9));
        assert!((superiority - 0.875).abs() < 1e-12);
        let (reversed, inferiority) = rank_sum_test(&baseline, &current).unwrap();
        assert!(close(reversed.p_value, result.p_value, 1e-12));
        assert!((inferiority - 0.125).abs() < 1e-12);
    }

    #[test]
    fn rank_sum_of_identical_distributions_gives_p_one_and_even_odds() {
        let bins = [(3.5, 40), (1.0, 10), (250.0, 7)];
        let (result, superiority) = rank_sum_test(&bins, &bins).unwrap();
        assert_eq!(result.p_value, 1.0);
        assert_eq!(superiority, 0.5);
    }

    #[test]
    fn rank_sum_is_none_for_an_empty_side_or_all_equal_values() {
        let some = [(1.0, 5), (2.0, 5)];
        assert_eq!(rank_sum_test(&[], &some), None);
        assert_eq!(rank_sum_test(&some, &[]), None);
        assert_eq!(rank_sum_test(&[(1.0, 0)], &some), None);
        assert_eq!(rank_sum_test(&[(f64::NAN, 3)], &some), None);
        assert_eq!(rank_sum_test(&[(7.0, 3)], &[(7.0, 9), (7.0, 1)]), None);
        // −0 and +0 are the same value.
        assert_eq!(rank_sum_test(&[(0.0, 3)], &[(-0.0, 4)]), None);
    }

    #[test]
    fn rank_sum_handles_counts_of_a_hundred_million() {
        // Two values only, so U = c₂b₁ + ½(c₁b₁ + c₂b₂) and the textbook tie-corrected
        // variance evaluated in mpmath at 60 digits; z comes out at exactly 1.
        let current = [(1.0, 100_000_000), (2.0, 100_000_000)];
        let baseline = [(2.0, 99_990_000), (1.0, 100_010_000)];
        let (result, superiority) = rank_sum_test(&current, &baseline).unwrap();
        assert!(close(result.p_value, 0.3173105078629141, 1e-9));
        assert!((superiority - 0.500025).abs() < 1e-12);
        let (result, _) = rank_sum_test(&[(1.0, u64::MAX)], &[(2.0, u64::MAX)]).unwrap();
        assert!((0.0..=1.0).contains(&result.p_value));
    }

    #[test]
    fn benjamini_hochberg_matches_the_textbook_example() {
        // Sorted 0.005, 0.01, 0.03, 0.04 → p · 4 / rank = 0.02, 0.02, 0.04, 0.04, already
        // monotone (statsmodels multipletests(method="fdr_bh") gives the same).
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.005]);
        let expected: [f64; 4] = [0.02, 0.04, 0.04, 0.02];
        assert_eq!(q.len(), expected.len());
        for (actual, expected) in q.iter().zip(expected) {
            assert!((actual - expected).abs() < 1e-15, "{q:?}");
        }
    }

    #[test]
    fn benjamini_hochberg_is_monotone_and_capped_at_one() {
        // Sorted 0.02, 0.03, 0.9, 1 → 0.08, 0.06, 1.2, 1 → running minimum from the top.
        let q = benjamini_hochberg(&[0.9, 0.02, f64::NAN, 0.03]);
        let expected: [f64; 4] = [1.0, 0.06, 1.0, 0.06];
        for (actual, expected) in q.iter().zip(expected) {
            assert!((actual - expected).abs() < 1e-15, "{q:?}");
        }
        assert!(benjamini_hochberg(&[]).is_empty());
        assert_eq!(benjamini_hochberg(&[0.3]), vec![0.3]);
    }
}
