//! From the numbers of [`crate::query::report`] to findings: one test per group and measure,
//! Benjamini–Hochberg across all of them, then the effect-size thresholds, severities,
//! evidence and chart data. `docs/reports.md` states the method.

use std::collections::BTreeMap;

use spanlake_udfs::Sketch;

use super::model::{
    Direction, Distribution, Exemplar, Finding, FindingKind, Series, Severity, Thresholds, Window,
};
use super::stats::{self, TestResult};
use crate::query::report::{BucketStats, GroupKey, ReportData, Side, WindowStats};

/// What the analysis needs besides the data.
pub struct Context<'a> {
    pub current: Window,
    pub baseline: Window,
    pub group_by: &'a [String],
    pub thresholds: &'a Thresholds,
    /// A URL with `{trace_id}` to open an exemplar in, e.g. Grafana's Explore.
    pub link_template: Option<&'a str>,
}

/// A finding before the multiple-testing correction.
struct Candidate {
    key: GroupKey,
    finding: Finding,
    /// Whether the effect is large enough to report, and twice as large.
    large: bool,
    very_large: bool,
}

/// The findings in `data`, most severe first, and the number of tests run.
pub fn findings(data: &ReportData, cx: &Context<'_>) -> (Vec<Finding>, usize) {
    let th = cx.thresholds;
    let mut tested: Vec<Candidate> = Vec::new();
    let mut facts: Vec<(GroupKey, Finding)> = Vec::new();
    for (key, sides) in &data.stats {
        let current = sides.get(&Side::Current);
        let baseline = sides.get(&Side::Baseline);
        match (current, baseline) {
            (Some(c), Some(b)) if c.spans >= th.min_requests && b.spans >= th.min_requests => {
                tested.extend(traffic(key, c.spans, b.spans, cx));
                tested.extend(errors(key, c, b, cx));
                tested.extend(latency(key, c, b, cx));
            }
            (None, Some(b)) if b.spans >= th.min_requests => {
                tested.extend(traffic(key, 0, b.spans, cx));
            }
            _ => {}
        }
    }
    for (key, values) in &data.new_values {
        for value in values.iter().filter(|v| v.spans >= th.min_new_value_spans) {
            let error = value.key == "status_message";
            let (kind, measure, severity) = if error {
                (FindingKind::NewError, "error_count", Severity::Warning)
            } else {
                (FindingKind::NewAttributeValue, "span_count", Severity::Info)
            };
            let what = if error {
                format!("new error status message {:?}", value.value)
            } else {
                format!("new value {}={}", value.key, value.value)
            };
            let finding = Finding {
                kind,
                group: group_map(key, cx.group_by),
                measure: measure.into(),
                direction: Direction::New,
                current: value.spans as f64,
                baseline: 0.0,
                effect: None,
                p_value: None,
                q_value: None,
                test: None,
                severity,
                summary: format!(
                    "{}: {what} in {} spans, never seen in the baseline",
                    group_label(key),
                    value.spans
                ),
                detail: Some(format!("{}={}", value.key, value.value)),
                exemplars: Vec::new(),
                series: None,
                distribution: None,
            };
            facts.push((key.clone(), finding));
        }
    }

    let p_values: Vec<f64> = tested
        .iter()
        .map(|c| c.finding.p_value.unwrap_or(1.0))
        .collect();
    let q_values = stats::benjamini_hochberg(&p_values);
    let tests_run = tested.len();
    let mut out: Vec<(GroupKey, Finding)> = Vec::new();
    for (mut candidate, q) in tested.into_iter().zip(q_values) {
        candidate.finding.q_value = Some(q);
        if q > th.max_q || !candidate.large {
            continue;
        }
        candidate.finding.severity = if candidate.very_large && q <= th.max_q / 10.0 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        // Below the smallest normal double a q-value has underflowed: say so, not "0".
        let q_text = if q < f64::MIN_POSITIVE {
            "q < 1e-300".to_string()
        } else {
            format!("q = {q:.1e}")
        };
        candidate.finding.summary = format!("{}, {q_text}", candidate.finding.summary);
        out.push((candidate.key, candidate.finding));
    }
    out.extend(facts);
    let mut out: Vec<Finding> = out
        .into_iter()
        .map(|(key, mut finding)| {
            finding.exemplars = exemplars(data, &key, finding.kind, cx.link_template);
            finding.series = series(data, &key, &finding);
            finding
        })
        .collect();
    out.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| {
            a.q_value
                .unwrap_or(0.0)
                .total_cmp(&b.q_value.unwrap_or(0.0))
        })
    });
    (out, tests_run)
}

/// Spans per second, tested as Poisson rates over windows of different lengths.
fn traffic(key: &GroupKey, current: u64, baseline: u64, cx: &Context<'_>) -> Option<Candidate> {
    let (cs, bs) = (cx.current.seconds(), cx.baseline.seconds());
    let TestResult { p_value, test } = stats::rate_test(current, cs, baseline, bs)?;
    let (now, before) = (current as f64 / cs, baseline as f64 / bs);
    let gone = current == 0;
    let ratio = now / before;
    let large = gone || ratio_is_large(ratio, cx.thresholds.min_ratio);
    let very_large = gone || ratio_is_large(ratio, cx.thresholds.min_ratio.powi(2));
    let (kind, direction, summary) = if gone {
        (
            FindingKind::Disappeared,
            Direction::Gone,
            format!(
                "{}: no spans in the current window, {before:.2}/s in the baseline",
                group_label(key)
            ),
        )
    } else {
        (
            FindingKind::Traffic,
            up_or_down(ratio),
            format!(
                "{}: traffic {} {} ({now:.2}/s vs {before:.2}/s)",
                group_label(key),
                went(ratio),
                times(ratio)
            ),
        )
    };
    Some(Candidate {
        key: key.clone(),
        finding: tested_finding(
            key,
            cx,
            kind,
            "rate_per_s",
            direction,
            (now, before),
            (!gone).then_some(ratio),
            p_value,
            test,
            summary,
        ),
        large,
        very_large,
    })
}

/// The share of failed spans.
fn errors(key: &GroupKey, c: &WindowStats, b: &WindowStats, cx: &Context<'_>) -> Option<Candidate> {
    let TestResult { p_value, test } =
        stats::error_rate_test(c.errors, c.spans, b.errors, b.spans)?;
    let (now, before) = (
        c.errors as f64 / c.spans as f64,
        b.errors as f64 / b.spans as f64,
    );
    let delta = now - before;
    let threshold = cx.thresholds.min_error_rate_delta;
    Some(Candidate {
        key: key.clone(),
        finding: tested_finding(
            key,
            cx,
            FindingKind::Errors,
            "error_rate",
            if delta >= 0.0 {
                Direction::Up
            } else {
                Direction::Down
            },
            (now, before),
            Some(delta),
            p_value,
            test,
            format!(
                "{}: error rate {} from {:.2} % to {:.2} %",
                group_label(key),
                if delta >= 0.0 { "rose" } else { "fell" },
                before * 100.0,
                now * 100.0
            ),
        ),
        large: delta.abs() >= threshold,
        very_large: delta.abs() >= 2.0 * threshold,
    })
}

/// Latency: one rank-sum test of the two distributions; the effect is the quantile (p50, p90
/// or p99) that moved most.
fn latency(
    key: &GroupKey,
    c: &WindowStats,
    b: &WindowStats,
    cx: &Context<'_>,
) -> Option<Candidate> {
    let (result, _superiority) = stats::rank_sum_test(&c.latency.bins(), &b.latency.bins())?;
    let mut moved: Option<(&str, f64, f64)> = None;
    for (name, q) in [("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)] {
        let (Some(now), Some(before)) = (quantile_ms(&c.latency, q), quantile_ms(&b.latency, q))
        else {
            continue;
        };
        if before <= 0.0 || now <= 0.0 {
            continue;
        }
        let change = (now / before).ln().abs();
        if moved.is_none_or(|(_, n, b)| change > (n / b).ln().abs()) {
            moved = Some((name, now, before));
        }
    }
    let (measure, now, before) = moved?;
    let ratio = now / before;
    let label = measure.trim_end_matches("_ms");
    Some(Candidate {
        key: key.clone(),
        finding: Finding {
            distribution: distribution(&c.latency, &b.latency),
            ..tested_finding(
                key,
                cx,
                FindingKind::Latency,
                measure,
                up_or_down(ratio),
                (now, before),
                Some(ratio),
                result.p_value,
                result.test,
                format!(
                    "{}: {label} latency {} {} ({} vs {})",
                    group_label(key),
                    went(ratio),
                    times(ratio),
                    ms(now),
                    ms(before)
                ),
            )
        },
        large: ratio_is_large(ratio, cx.thresholds.min_ratio),
        very_large: ratio_is_large(ratio, cx.thresholds.min_ratio.powi(2)),
    })
}

#[allow(clippy::too_many_arguments)]
fn tested_finding(
    key: &GroupKey,
    cx: &Context<'_>,
    kind: FindingKind,
    measure: &str,
    direction: Direction,
    (current, baseline): (f64, f64),
    effect: Option<f64>,
    p_value: f64,
    test: &str,
    summary: String,
) -> Finding {
    Finding {
        kind,
        group: group_map(key, cx.group_by),
        measure: measure.into(),
        direction,
        current,
        baseline,
        effect,
        p_value: Some(p_value),
        q_value: None,
        test: Some(test.into()),
        severity: Severity::Warning,
        summary,
        detail: None,
        exemplars: Vec::new(),
        series: None,
        distribution: None,
    }
}

/// Whether `ratio` is at least `threshold` away from 1, up or down.
fn ratio_is_large(ratio: f64, threshold: f64) -> bool {
    ratio >= threshold || ratio <= 1.0 / threshold
}

fn up_or_down(ratio: f64) -> Direction {
    if ratio >= 1.0 {
        Direction::Up
    } else {
        Direction::Down
    }
}

fn went(ratio: f64) -> &'static str {
    if ratio >= 1.0 { "rose" } else { "fell" }
}

/// `3.1×` up or `÷2.0` down.
fn times(ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{ratio:.1}×")
    } else {
        format!("÷{:.1}", 1.0 / ratio)
    }
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0} ms")
    } else {
        format!("{value:.2} ms")
    }
}

fn quantile_ms(sketch: &Sketch, q: f64) -> Option<f64> {
    sketch.quantile(q).ok().flatten().map(|ns| ns / 1e6)
}

fn group_map(key: &GroupKey, names: &[String]) -> BTreeMap<String, String> {
    names.iter().cloned().zip(key.iter().cloned()).collect()
}

fn group_label(key: &GroupKey) -> String {
    key.join(" · ")
}

/// The group's exemplar traces for a finding: failed ones first for error findings, the
/// slowest first otherwise.
fn exemplars(
    data: &ReportData,
    key: &GroupKey,
    kind: FindingKind,
    link_template: Option<&str>,
) -> Vec<Exemplar> {
    let Some(traces) = data.exemplars.get(key) else {
        return Vec::new();
    };
    let wants_errors = matches!(kind, FindingKind::Errors | FindingKind::NewError);
    let mut chosen: Vec<_> = traces.iter().filter(|t| !wants_errors || t.error).collect();
    if chosen.is_empty() {
        chosen = traces.iter().collect();
    }
    chosen.sort_by_key(|t| std::cmp::Reverse(t.duration_ns));
    chosen
        .into_iter()
        .take(3)
        .map(|t| Exemplar {
            trace_id: t.trace_id.clone(),
            why: if t.error { "errored" } else { "slowest" }.into(),
            duration_ms: t.duration_ns as f64 / 1e6,
            link: link_template.map(|l| l.replace("{trace_id}", &t.trace_id)),
        })
        .collect()
}

/// The finding's measure per time bucket in both windows.
fn series(data: &ReportData, key: &GroupKey, finding: &Finding) -> Option<Series> {
    let sides = data.series.get(key)?;
    let seconds = data.bucket_ns as f64 / 1e9;
    let value = |b: &BucketStats| -> Option<f64> {
        match finding.kind {
            FindingKind::Latency => b.p99_ns.map(|ns| ns / 1e6),
            FindingKind::Errors => Some(b.errors as f64 / b.spans.max(1) as f64),
            FindingKind::NewError => Some(b.errors as f64),
            FindingKind::Traffic | FindingKind::Disappeared | FindingKind::NewAttributeValue => {
                Some(b.spans as f64 / seconds)
            }
        }
    };
    let points = |side: Side| -> Vec<(i64, f64)> {
        sides
            .get(&side)
            .map(|buckets| {
                buckets
                    .iter()
                    .filter_map(|b| value(b).map(|v| (b.start_ns, v)))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(Series {
        bucket_ns: data.bucket_ns,
        current: points(Side::Current),
        baseline: points(Side::Baseline),
    })
}

/// Both latency distributions over the same log-spaced millisecond buckets.
fn distribution(current: &Sketch, baseline: &Sketch) -> Option<Distribution> {
    const BUCKETS: usize = 24;
    let low = current.min()?.min(baseline.min()?).max(1_000.0) / 1e6;
    let high = current.max()?.max(baseline.max()?) / 1e6;
    if high <= low {
        return None;
    }
    let step = (high / low).ln() / BUCKETS as f64;
    let upper_ms: Vec<f64> = (1..=BUCKETS)
        .map(|i| low * (step * i as f64).exp())
        .collect();
    let shares = |sketch: &Sketch| -> Vec<f64> {
        let mut counts = [0u64; BUCKETS];
        for (value, count) in sketch.bins() {
            let at = upper_ms
                .iter()
                .position(|&u| value / 1e6 <= u)
                .unwrap_or(BUCKETS - 1);
            counts[at] += count;
        }
        let total = counts.iter().sum::<u64>().max(1) as f64;
        counts.iter().map(|&c| c as f64 / total).collect()
    };
    Some(Distribution {
        current: shares(current),
        baseline: shares(baseline),
        upper_ms,
    })
}
