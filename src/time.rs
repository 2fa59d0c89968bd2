//! Time: the one duration parser and the one rule for a request's time window.
//!
//! Durations are spelled three ways at spanlake's edges, all read by [`parse_duration`]:
//! Prometheus' (`1d12h`, integers, units down to `ms`: the `since` parameter), Go's (`1.5s`,
//! `250us`, no days: `minDuration`, `maxDuration`) and either (TraceQL literals, the
//! configuration and command-line flags). [`go_duration`] prints one as Go does, for messages
//! that quote Tempo's.
//!
//! A window is a [`TimeRange`] in Unix nanoseconds, both ends inclusive. [`WindowRule`] turns a
//! request's `start`/`end` (Unix seconds) and `since` into one: `since` wins, both or neither
//! of `start` and `end`, neither meaning the most recent `default_window`, never longer than
//! `max_duration`, and the whole last second belongs to the window. This module owns these
//! rules and nothing else; it knows no transport and no query.

use std::time::Duration;

/// Nanoseconds in a second.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Which spelling of a duration is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationSyntax {
    /// Prometheus: integer counts of `ms`, `s`, `m`, `h`, `d`, `w`, `y`, largest unit first.
    Prometheus,
    /// Go's `time.ParseDuration`: decimal counts of `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, or `0`.
    Go,
    /// Prometheus' spelling when it applies, else Go's.
    Either,
}

/// Nanoseconds per duration unit.
const UNITS: &[(&str, i64)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", NANOS_PER_SECOND),
    ("m", 60 * NANOS_PER_SECOND),
    ("h", 3_600 * NANOS_PER_SECOND),
    ("d", 86_400 * NANOS_PER_SECOND),
    ("w", 604_800 * NANOS_PER_SECOND),
    ("y", 31_536_000 * NANOS_PER_SECOND),
];

/// Parses a duration into nanoseconds; `None` when `text` is not one in `syntax`.
pub fn parse_duration_ns(text: &str, syntax: DurationSyntax) -> Option<i64> {
    if text == "0" && syntax != DurationSyntax::Prometheus {
        return Some(0);
    }
    let segments = segments(text)?;
    match syntax {
        DurationSyntax::Prometheus => prometheus(&segments),
        DurationSyntax::Go => go(&segments),
        DurationSyntax::Either => prometheus(&segments).or_else(|| go(&segments)),
    }
}

/// [`parse_duration_ns`] as a [`Duration`]; negative durations do not exist.
pub fn parse_duration(text: &str, syntax: DurationSyntax) -> Option<Duration> {
    let nanos = parse_duration_ns(text.trim(), syntax)?;
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// Reads a command-line duration flag (`5s`, `1m30s`, `2h`).
pub fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text, DurationSyntax::Either)
        .ok_or_else(|| format!("{text:?} is not a duration: write e.g. 500ms, 5s, 2m or 1h30m"))
}

/// Serde for durations in the configuration: written as Go prints them, read with
/// [`DurationSyntax::Either`].
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `value` as Go prints it.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::go_duration(*value))
    }

    /// Reads a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::duration_arg(&text).map_err(serde::de::Error::custom)
    }
}

/// `serde(with = …)` for an optional [`Duration`] written as a Go or Prometheus duration.
pub mod serde_duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `value` as Go prints it, or nothing.
    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&super::go_duration(*d)),
            None => serializer.serialize_none(),
        }
    }

    /// Reads a duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::duration_arg(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

struct Segment<'a> {
    whole: &'a str,
    fraction: Option<&'a str>,
    unit: &'static str,
    nanos: i64,
}

fn segments(text: &str) -> Option<Vec<Segment<'_>>> {
    let mut rest = text;
    let mut segments = Vec::new();
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let whole = rest.get(..whole_len)?;
        rest = rest.get(whole_len..)?;
        let fraction = match rest.strip_prefix('.') {
            Some(after) => {
                let len = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                rest = after.get(len..)?;
                Some(after.get(..len)?)
            }
            None => None,
        };
        if whole.is_empty() && fraction.is_none_or(str::is_empty) {
            return None;
        }
        // Two-rune units first, so that "ms" is not read as "m".
        let (unit, nanos) = UNITS
            .iter()
            .filter(|(u, _)| u.chars().count() == 2)
            .chain(UNITS.iter().filter(|(u, _)| u.chars().count() == 1))
            .find(|(u, _)| rest.starts_with(u))?;
        rest = rest.get(unit.len()..)?;
        segments.push(Segment {
            whole,
            fraction,
            unit,
            nanos: *nanos,
        });
    }
    (!segments.is_empty()).then_some(segments)
}

fn prometheus(segments: &[Segment<'_>]) -> Option<i64> {
    let mut total: i64 = 0;
    let mut last_unit = i64::MAX;
    for s in segments {
        if s.fraction.is_some() || matches!(s.unit, "ns" | "us" | "µs") || s.nanos >= last_unit {
            return None;
        }
        last_unit = s.nanos;
        let whole: i64 = s.whole.parse().ok()?;
        total = total.checked_add(whole.checked_mul(s.nanos)?)?;
    }
    Some(total)
}

fn go(segments: &[Segment<'_>]) -> Option<i64> {
    let mut total: i64 = 0;
    for s in segments {
        if matches!(s.unit, "d" | "w" | "y") {
            return None;
        }
        let whole: i64 = if s.whole.is_empty() {
            0
        } else {
            s.whole.parse().ok()?
        };
        let mut value = whole.checked_mul(s.nanos)?;
        if let Some(fraction) = s.fraction.filter(|f| !f.is_empty()) {
            let digits: f64 = format!("0.{fraction}").parse().ok()?;
            value = value.checked_add((digits * s.nanos as f64) as i64)?;
        }
        total = total.checked_add(value)?;
    }
    Some(total)
}

/// A duration the way Go prints one (`168h0m0s`, `15m0s`, `30s`), for messages that quote
/// Tempo's.
pub fn go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let millis = d.subsec_millis();
    let seconds = if millis > 0 {
        format!("{s}.{millis:03}").trim_end_matches('0').to_string()
    } else {
        s.to_string()
    };
    if h > 0 {
        format!("{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{m}m{seconds}s")
    } else if total == 0 && millis > 0 {
        format!("{millis}ms")
    } else {
        format!("{seconds}s")
    }
}

/// `d` in nanoseconds, saturating.
pub fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Unix seconds in nanoseconds, saturating.
pub fn seconds_to_ns(seconds: u64) -> i64 {
    i64::try_from(seconds)
        .unwrap_or(i64::MAX)
        .saturating_mul(NANOS_PER_SECOND)
}

/// `ns` as RFC 3339 UTC, to the second.
pub fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now, in Unix nanoseconds.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// A time window in Unix nanoseconds, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First nanosecond inside the window.
    pub start_ns: i64,
    /// Last nanosecond inside the window.
    pub end_ns: i64,
}

impl TimeRange {
    /// All of time.
    pub const ALL: TimeRange = TimeRange {
        start_ns: i64::MIN,
        end_ns: i64::MAX,
    };

    /// The window from `start` to `end` in Unix seconds, either open; the whole last second
    /// belongs to it.
    pub fn from_seconds(start: Option<u64>, end: Option<u64>) -> Self {
        Self {
            start_ns: start.map_or(i64::MIN, seconds_to_ns),
            end_ns: end.map_or(i64::MAX, |e| {
                seconds_to_ns(e).saturating_add(NANOS_PER_SECOND - 1)
            }),
        }
    }

    /// The `length` up to `end_ns`.
    pub fn last(length: Duration, end_ns: i64) -> Self {
        Self {
            start_ns: end_ns.saturating_sub(duration_ns(length)),
            end_ns,
        }
    }

    /// True when `[start_ns, end_ns]` and this window share a nanosecond.
    pub fn overlaps(&self, start_ns: i64, end_ns: i64) -> bool {
        start_ns <= self.end_ns && end_ns >= self.start_ns
    }

    /// The bounds as optional values: `None` for an open end.
    pub fn bounds(&self) -> (Option<i64>, Option<i64>) {
        (
            (self.start_ns != i64::MIN).then_some(self.start_ns),
            (self.end_ns != i64::MAX).then_some(self.end_ns),
        )
    }

    /// Slices of at most `slice_ns` (fewer and longer when that would make more than
    /// `max_slices`), newest first, together covering the window exactly.
    pub fn slices_newest_first(&self, slice_ns: i64, max_slices: i64) -> Vec<TimeRange> {
        let span = self.end_ns.saturating_sub(self.start_ns).max(1);
        let count = (span / slice_ns.max(1))
            .saturating_add(1)
            .clamp(1, max_slices.max(1));
        let step = (span / count).saturating_add(1);
        let mut out = Vec::new();
        let mut end = self.end_ns;
        while end >= self.start_ns && (out.len() as i64) < count {
            let start = end.saturating_sub(step - 1).max(self.start_ns);
            out.push(TimeRange {
                start_ns: start,
                end_ns: end,
            });
            if start == self.start_ns {
                break;
            }
            end = start - 1;
        }
        out
    }
}

/// Why a request's window was refused; the messages are Tempo's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `end` is not after `start`.
    #[error("http parameter start must be before end. received start={start} end={end}")]
    EndNotAfterStart { start: u64, end: u64 },
    /// Only one of `start` and `end`.
    #[error(
        "error parsing date range: only one of start and end provided: must provide both or neither"
    )]
    OneBound,
    /// The window is longer than allowed.
    #[error("range specified by start and end exceeds {}. received start={start} end={end}", go_duration(*.max))]
    TooLong { start: u64, end: u64, max: Duration },
}

/// The rule that turns a request's `start`, `end` and `since` into its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRule {
    /// The window of a request that names none: the most recent this long.
    pub default_window: Duration,
    /// The longest window a request may name with `start` and `end`.
    pub max_duration: Duration,
}

impl WindowRule {
    /// The window of a search or tag request: the last `since` when given (it wins over
    /// `start`/`end`, as in Tempo); else both of `start` and `end` (Unix seconds), or neither
    /// for the most recent `default_window`.
    pub fn window(
        &self,
        start: Option<u64>,
        end: Option<u64>,
        since: Option<Duration>,
    ) -> Result<TimeRange, WindowError> {
        if let Some(since) = since {
            return Ok(TimeRange::last(since, now_ns()));
        }
        match (start, end) {
            (None, None) => Ok(TimeRange::last(self.default_window, now_ns())),
            (Some(start), Some(end)) => {
                if end <= start {
                    return Err(WindowError::EndNotAfterStart { start, end });
                }
                if Duration::from_secs(end - start) > self.max_duration {
                    return Err(WindowError::TooLong {
                        start,
                        end,
                        max: self.max_duration,
                    });
                }
                Ok(TimeRange::from_seconds(Some(start), Some(end)))
            }
            _ => Err(WindowError::OneBound),
        }
    }

    /// The optional window of a trace-by-id request: either bound may be given alone;
    /// `None` when neither is.
    pub fn optional_window(
        start: Option<u64>,
        end: Option<u64>,
    ) -> Result<Option<TimeRange>, WindowError> {
        if let (Some(start), Some(end)) = (start, end)
            && end <= start
        {
            return Err(WindowError::EndNotAfterStart { start, end });
        }
        if start.is_none() && end.is_none() {
            return Ok(None);
        }
        Ok(Some(TimeRange::from_seconds(start, end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = NANOS_PER_SECOND;

    #[test]
    fn either_syntax_reads_prometheus_and_go_forms() {
        let either = |t| parse_duration_ns(t, DurationSyntax::Either);
        assert_eq!(either("1d12h"), Some(36 * 3_600 * SECOND));
        assert_eq!(either("1.5m"), Some(90 * SECOND));
        assert_eq!(either(".24h"), Some(864 * SECOND));
        assert_eq!(either("1ms500us"), Some(1_500_000));
        assert_eq!(
            either("1h15m30.918273645s"),
            Some(4_530 * SECOND + 918_273_645)
        );
    }

    #[test]
    fn go_syntax_takes_decimals_and_zero_but_no_days() {
        let go = |t| parse_duration(t, DurationSyntax::Go);
        assert_eq!(go("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(go("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(go("0"), Some(Duration::ZERO));
        assert_eq!(go("1d"), None);
        assert_eq!(go("10"), None);
        assert_eq!(go("x"), None);
    }

    #[test]
    fn prometheus_syntax_takes_integers_largest_unit_first() {
        let prom = |t| parse_duration(t, DurationSyntax::Prometheus);
        assert_eq!(prom("15m"), Some(Duration::from_secs(900)));
        assert_eq!(prom("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(prom("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(prom("1.5h"), None);
        assert_eq!(prom("30m1h"), None);
        assert_eq!(prom("0"), None);
    }

    #[test]
    fn go_durations_read_like_tempos_messages() {
        assert_eq!(go_duration(Duration::from_secs(168 * 3600)), "168h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(5)), "5s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn config_durations_round_trip_through_go_printing() {
        for d in [
            Duration::from_secs(5),
            Duration::from_millis(250),
            Duration::from_secs(168 * 3600),
            Duration::from_millis(90_500),
        ] {
            assert_eq!(duration_arg(&go_duration(d)), Ok(d));
        }
        assert!(duration_arg("soon").unwrap_err().contains("\"soon\""));
    }

    #[test]
    fn search_windows_follow_tempos_rules() {
        let rule = WindowRule {
            default_window: Duration::from_secs(900),
            max_duration: Duration::from_secs(3600),
        };
        let w = rule.window(Some(10), Some(20), None).unwrap();
        assert_eq!(w.start_ns, 10 * SECOND);
        assert_eq!(w.end_ns, 21 * SECOND - 1);
        assert_eq!(
            rule.window(Some(20), Some(10), None),
            Err(WindowError::EndNotAfterStart { start: 20, end: 10 })
        );
        assert_eq!(
            rule.window(Some(20), None, None),
            Err(WindowError::OneBound)
        );
        assert_eq!(
            rule.window(Some(0), Some(7200), None)
                .unwrap_err()
                .to_string(),
            "range specified by start and end exceeds 1h0m0s. received start=0 end=7200"
        );
        let recent = rule.window(None, None, None).unwrap();
        assert_eq!(recent.end_ns - recent.start_ns, 900 * SECOND);
        let since = rule
            .window(Some(0), Some(7200), Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(since.end_ns - since.start_ns, 60 * SECOND);
    }

    #[test]
    fn trace_windows_may_have_one_bound() {
        assert_eq!(WindowRule::optional_window(None, None), Ok(None));
        let open = WindowRule::optional_window(Some(5), None).unwrap().unwrap();
        assert_eq!((open.start_ns, open.end_ns), (5 * SECOND, i64::MAX));
        assert!(WindowRule::optional_window(Some(5), Some(5)).is_err());
    }

    #[test]
    fn slices_cover_the_window_newest_first() {
        const SLICE: i64 = 6 * 3_600 * SECOND;
        let w = TimeRange {
            start_ns: 0,
            end_ns: 3 * SLICE,
        };
        let slices = w.slices_newest_first(SLICE, 8);
        assert_eq!(slices.len(), 4);
        assert_eq!(slices[0].end_ns, w.end_ns);
        assert_eq!(slices.last().unwrap().start_ns, 0);
        for pair in slices.windows(2) {
            assert_eq!(pair[1].end_ns + 1, pair[0].start_ns);
        }
        let small = TimeRange {
            start_ns: 10,
            end_ns: 20,
        };
        assert_eq!(small.slices_newest_first(SLICE, 8), vec![small]);
    }
}
