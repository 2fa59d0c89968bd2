//! When scheduled reports run: the cron schedule of a `[[reports]]` entry in the configuration.
//!
//! A [`Schedule`] is cron's five fields — minute, hour, day-of-month, month, day-of-week — read
//! in UTC, or one of the shorthands `@hourly` (`0 * * * *`), `@daily` (`0 0 * * *`) and
//! `@weekly` (`0 0 * * 0`). Each field is `*`, a number, a range `a-b`, a step `*/n`, `a-b/n` or
//! `a/n` (from `a` to the field's end), or a comma-separated list of those. In day-of-week both
//! 0 and 7 are Sunday. As in classic cron, when day-of-month and day-of-week are both
//! restricted (neither is `*`) a day matches if either field does; otherwise it must match both.
//!
//! ```
//! use spanlake::report::schedule::Schedule;
//!
//! let hourly: Schedule = "0 * * * *".parse()?;
//! // 2024-05-04T10:20:00Z fires next at 2024-05-04T11:00:00Z.
//! assert_eq!(
//!     hourly.next_after(1_714_818_000_000_000_000),
//!     Some(1_714_820_400_000_000_000)
//! );
//! # Ok::<(), spanlake::report::schedule::ScheduleError>(())
//! ```
//!
//! This module only does calendar arithmetic: it reads no clock (callers pass the instant to
//! start from), runs no report and does no I/O.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, NaiveDate, Timelike};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::NANOS_PER_SECOND;

/// Nanoseconds in a minute, the resolution a schedule fires at.
const NANOS_PER_MINUTE: i64 = 60 * NANOS_PER_SECOND;

/// How far ahead [`Schedule::next_after`] looks before giving up: five years, counted generously.
const HORIZON_DAYS: u64 = 5 * 366;

/// One of the five fields: its name in messages and the values it accepts.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
};
/// 0 to 7, with 0 and 7 both Sunday; 7 is folded into 0 after parsing.
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
};

/// The shorthands and the five fields each stands for.
const SHORTHANDS: &[(&str, &str)] = &[
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
];

/// A schedule in cron's five fields (minute hour day-of-month month day-of-week), UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The text it was parsed from, trimmed; what [`fmt::Display`] prints.
    text: String,
    /// Bit `v` is set when value `v` of the field fires.
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// Bit 0 is Sunday, bit 6 Saturday.
    days_of_week: u64,
    /// Both day fields are restricted, so a day matches if either does (cron's rule).
    either_day: bool,
}

/// Why text is not a schedule.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    /// The text does not have exactly five fields.
    #[error(
        "a schedule has 5 fields (minute hour day-of-month month day-of-week), got {got} in `{text}`"
    )]
    FieldCount { got: usize, text: String },
    /// A number outside the range of its field.
    #[error("{field} field `{value}` is out of range {min}-{max}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: u32,
        max: u32,
    },
    /// A step that is not a whole number of at least 1.
    #[error(
        "{field} field `{item}` has step `{step}`: a step is a whole number of at least 1, as in */15"
    )]
    BadStep {
        field: &'static str,
        item: String,
        step: String,
    },
    /// A range whose start is after its end.
    #[error("{field} field `{item}` runs backwards: write the lower bound first, as in 1-5")]
    BackwardsRange { field: &'static str, item: String },
    /// Text that is neither `*`, a number, a range, a step nor a list of those.
    #[error(
        "{field} field `{item}` is not understood: use *, a number (5), a range (1-5), a step (*/15 or 0-30/10) or a list of those (0,30)"
    )]
    Syntax { field: &'static str, item: String },
    /// An `@` shorthand that does not exist.
    #[error(
        "unknown shorthand `{text}`: use @hourly, @daily or @weekly, or five fields such as `0 * * * *`"
    )]
    UnknownShorthand { text: String },
}

impl Schedule {
    /// Parses `"0 * * * *"`-style text or one of the shorthands `@hourly`, `@daily`, `@weekly`.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let text = text.trim();
        let expanded = if text.starts_with('@') {
            SHORTHANDS
                .iter()
                .find(|(name, _)| *name == text)
                .map(|(_, fields)| *fields)
                .ok_or_else(|| ScheduleError::UnknownShorthand {
                    text: text.to_string(),
                })?
        } else {
            text
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day_of_month, month, day_of_week] = fields.as_slice() else {
            return Err(ScheduleError::FieldCount {
                got: fields.len(),
                text: text.to_string(),
            });
        };
        let minutes = parse_field(&MINUTE, minute)?;
        let hours = parse_field(&HOUR, hour)?;
        let days_of_month = parse_field(&DAY_OF_MONTH, day_of_month)?;
        let months = parse_field(&MONTH, month)?;
        let mut days_of_week = parse_field(&DAY_OF_WEEK, day_of_week)?;
        if has(days_of_week.bits, 7) {
            days_of_week.bits = (days_of_week.bits & !(1u64 << 7)) | 1;
        }
        Ok(Schedule {
            text: text.to_string(),
            minutes: minutes.bits,
            hours: hours.bits,
            days_of_month: days_of_month.bits,
            months: months.bits,
            days_of_week: days_of_week.bits,
            either_day: !days_of_month.unrestricted && !days_of_week.unrestricted,
        })
    }

    /// The first instant strictly after `after_ns` (Unix nanoseconds) that the schedule fires
    /// at, in Unix nanoseconds (whole minutes); `None` if it fires at none within five years
    /// (e.g. `0 0 31 2 *`) or the instant cannot be represented.
    pub fn next_after(&self, after_ns: i64) -> Option<i64> {
        // The first whole minute strictly after `after_ns`.
        let first_minute = after_ns.div_euclid(NANOS_PER_MINUTE).checked_add(1)?;
        let first = DateTime::from_timestamp(first_minute.checked_mul(60)?, 0)?;
        let horizon = first
            .date_naive()
            .checked_add_days(Days::new(HORIZON_DAYS))
            .unwrap_or(NaiveDate::MAX);

        // Walk whole months, then whole days; only within a matching day look at hours and
        // minutes, by bit arithmetic. On the first day the search starts at `first`'s time.
        let mut date = first.date_naive();
        let (mut hour, mut minute) = (first.hour(), first.minute());
        while date <= horizon {
            if !has(self.months, date.month()) {
                date = first_of_next_month(date)?;
                (hour, minute) = (0, 0);
                continue;
            }
            if self.day_matches(date)
                && let Some((h, m)) = self.first_time_from(hour, minute)
            {
                let fires = date.and_hms_opt(h, m, 0)?.and_utc();
                return fires.timestamp().checked_mul(NANOS_PER_SECOND);
            }
            date = date.succ_opt()?;
            (hour, minute) = (0, 0);
        }
        None
    }

    /// Whether `date` passes the day-of-month and day-of-week fields.
    fn day_matches(&self, date: NaiveDate) -> bool {
        let by_month = has(self.days_of_month, date.day());
        let by_week = has(self.days_of_week, date.weekday().num_days_from_sunday());
        if self.either_day {
            by_month || by_week
        } else {
            by_month && by_week
        }
    }

    /// The first (hour, minute) of a matching day at or after `hour:minute`, if any.
    fn first_time_from(&self, hour: u32, minute: u32) -> Option<(u32, u32)> {
        let h = lowest_from(self.hours, hour)?;
        if h == hour
            && let Some(m) = lowest_from(self.minutes, minute)
        {
            return Some((h, m));
        }
        // Later hours start at their first matching minute.
        let h = lowest_from(self.hours, hour + 1)?;
        Some((h, lowest_from(self.minutes, 0)?))
    }
}

/// Whether bit `value` of `bits` is set.
fn has(bits: u64, value: u32) -> bool {
    value < 64 && bits & (1u64 << value) != 0
}

/// The lowest set bit of `bits` at or above `from`.
fn lowest_from(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let remaining = bits & (u64::MAX << from);
    if remaining == 0 {
        None
    } else {
        Some(remaining.trailing_zeros())
    }
}

/// The first day of the month after `date`'s.
fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

/// One parsed field.
struct Parsed {
    /// Bit `v` is set when value `v` fires.
    bits: u64,
    /// Written as `*` (every value, step 1): the field does not restrict, which matters for
    /// cron's day-of-month/day-of-week rule.
    unrestricted: bool,
}

/// Reads one field: a comma-separated list of `*`, `n`, `a-b`, each optionally `/step`.
fn parse_field(field: &Field, text: &str) -> Result<Parsed, ScheduleError> {
    let mut bits = 0u64;
    let mut unrestricted = true;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let step_by = match step {
            None => 1,
            Some(step) => match digits(step) {
                Some(Some(n)) if n >= 1 => n,
                _ => {
                    return Err(ScheduleError::BadStep {
                        field: field.name,
                        item: item.to_string(),
                        step: step.to_string(),
                    });
                }
            },
        };
        let (low, high) = if range == "*" {
            (field.min, field.max)
        } else if let Some((low, high)) = range.split_once('-') {
            let (low, high) = (number(field, item, low)?, number(field, item, high)?);
            if low > high {
                return Err(ScheduleError::BackwardsRange {
                    field: field.name,
                    item: item.to_string(),
                });
            }
            (low, high)
        } else {
            let value = number(field, item, range)?;
            // `a/n` runs from `a` to the end of the field.
            (value, if step.is_some() { field.max } else { value })
        };
        unrestricted &= range == "*" && step_by == 1;
        for value in (low..=high).step_by(step_by as usize) {
            bits |= 1u64 << value;
        }
    }
    Ok(Parsed { bits, unrestricted })
}

/// Reads a value of `field` written inside `item`.
fn number(field: &Field, item: &str, text: &str) -> Result<u32, ScheduleError> {
    let value = digits(text).ok_or_else(|| ScheduleError::Syntax {
        field: field.name,
        item: item.to_string(),
    })?;
    value
        .filter(|v| (field.min..=field.max).contains(v))
        .ok_or_else(|| ScheduleError::OutOfRange {
            field: field.name,
            value: text.to_string(),
            min: field.min,
            max: field.max,
        })
}

/// `None` unless `text` is ASCII digits; then `Some(None)` if the number does not fit a `u32`.
fn digits(text: &str) -> Option<Option<u32>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().ok())
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Schedule::parse(text)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix nanoseconds of an RFC 3339 instant written in a test.
    fn at(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .expect("a valid instant in the test")
    }

    /// When `schedule` fires next after `after`, as RFC 3339, or `None`.
    fn next(schedule: &str, after: &str) -> Option<String> {
        let schedule = Schedule::parse(schedule).expect("a valid schedule in the test");
        schedule.next_after(at(after)).map(|ns| {
            DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    #[test]
    fn hourly_fires_at_the_next_whole_hour() {
        assert_eq!(
            next("0 * * * *", "2024-05-04T10:20:30Z"),
            some("2024-05-04T11:00:00Z")
        );
        assert_eq!(
            next("@hourly", "2024-05-04T23:59:59.999Z"),
            some("2024-05-05T00:00:00Z")
        );
    }

    #[test]
    fn next_after_is_strictly_after_a_firing_instant() {
        assert_eq!(
            next("0 * * * *", "2024-05-04T11:00:00Z"),
            some("2024-05-04T12:00:00Z")
        );
    }

    #[test]
    fn every_minute_fires_at_the_next_whole_minute() {
        assert_eq!(
            next("* * * * *", "2024-05-04T10:20:00.5Z"),
            some("2024-05-04T10:21:00Z")
        );
    }

    #[test]
    fn every_fifteen_minutes_fires_every_quarter_hour() {
        assert_eq!(
            next("*/15 * * * *", "2024-05-04T10:07:00Z"),
            some("2024-05-04T10:15:00Z")
        );
        assert_eq!(
            next("*/15 * * * *", "2024-05-04T10:15:00Z"),
            some("2024-05-04T10:30:00Z")
        );
        assert_eq!(
            next("*/15 * * * *", "2024-05-04T10:50:00Z"),
            some("2024-05-04T11:00:00Z")
        );
    }

    #[test]
    fn lists_ranges_and_stepped_ranges_combine() {
        let schedule = Schedule::parse("0-30/10,45 * * * *").expect("valid");
        let expected = [0, 10, 20, 30, 45]
            .iter()
            .fold(0u64, |bits, minute| bits | 1u64 << minute);
        assert_eq!(schedule.minutes, expected);
        assert_eq!(
            next("0-30/10,45 * * * *", "2024-05-04T10:31:00Z"),
            some("2024-05-04T10:45:00Z")
        );
    }

    #[test]
    fn weekdays_at_nine_skip_the_weekend() {
        // 2024-05-03 is a Friday, 2024-05-04 a Saturday, 2024-05-06 a Monday.
        assert_eq!(
            next("0 9 * * 1-5", "2024-05-03T09:00:00Z"),
            some("2024-05-06T09:00:00Z")
        );
        assert_eq!(
            next("0 9 * * 1-5", "2024-05-04T08:00:00Z"),
            some("2024-05-06T09:00:00Z")
        );
    }

    #[test]
    fn seven_and_zero_are_both_sunday() {
        // 2024-05-05 is a Sunday.
        for schedule in ["0 0 * * 0", "0 0 * * 7", "@weekly"] {
            assert_eq!(
                next(schedule, "2024-05-04T12:00:00Z"),
                some("2024-05-05T00:00:00Z"),
                "{schedule}"
            );
        }
    }

    #[test]
    fn restricted_day_of_month_and_day_of_week_match_either() {
        // The 13th or any Friday: Friday 2024-05-10 comes first, then Monday 2024-05-13.
        assert_eq!(
            next("0 0 13 * 5", "2024-05-04T00:00:00Z"),
            some("2024-05-10T00:00:00Z")
        );
        assert_eq!(
            next("0 0 13 * 5", "2024-05-10T00:00:00Z"),
            some("2024-05-13T00:00:00Z")
        );
    }

    #[test]
    fn an_unrestricted_day_field_leaves_the_other_in_charge() {
        assert_eq!(
            next("0 0 13 * *", "2024-05-04T00:00:00Z"),
            some("2024-05-13T00:00:00Z")
        );
        assert_eq!(
            next("0 0 * * 5", "2024-05-04T00:00:00Z"),
            some("2024-05-10T00:00:00Z")
        );
    }

    #[test]
    fn daily_fires_at_midnight_and_prints_as_written() {
        let daily = Schedule::parse("@daily").expect("valid");
        assert_eq!(daily.to_string(), "@daily");
        assert_eq!(
            next("@daily", "2024-05-04T12:00:00Z"),
            some("2024-05-05T00:00:00Z")
        );
        assert_eq!(
            daily.next_after(at("2024-05-04T12:00:00Z")),
            Schedule::parse("0 0 * * *")
                .expect("valid")
                .next_after(at("2024-05-04T12:00:00Z"))
        );
    }

    #[test]
    fn months_that_do_not_match_are_skipped() {
        assert_eq!(
            next("0 0 1 1 *", "2024-05-04T00:00:00Z"),
            some("2025-01-01T00:00:00Z")
        );
    }

    #[test]
    fn leap_day_fires_in_the_next_leap_year() {
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00Z"),
            some("2028-02-29T00:00:00Z")
        );
    }

    #[test]
    fn days_february_never_has_never_fire() {
        assert_eq!(next("0 0 30 2 *", "2024-05-04T00:00:00Z"), None);
        assert_eq!(next("0 0 31 2 *", "2024-05-04T00:00:00Z"), None);
    }

    #[test]
    fn wrong_field_count_is_an_error_naming_the_fields() {
        let error = Schedule::parse("0 * *").expect_err("three fields");
        assert_eq!(
            error.to_string(),
            "a schedule has 5 fields (minute hour day-of-month month day-of-week), got 3 in `0 * *`"
        );
        assert!(matches!(
            Schedule::parse("0 * * * * *"),
            Err(ScheduleError::FieldCount { got: 6, .. })
        ));
        assert!(matches!(
            Schedule::parse(""),
            Err(ScheduleError::FieldCount { got: 0, .. })
        ));
    }

    #[test]
    fn out_of_range_values_are_errors_naming_the_range() {
        let error = Schedule::parse("61 * * * *").expect_err("minute 61");
        assert_eq!(error.to_string(), "minute field `61` is out of range 0-59");
        assert_eq!(
            Schedule::parse("0 0 * * 1-8"),
            Err(ScheduleError::OutOfRange {
                field: "day-of-week",
                value: "8".to_string(),
                min: 0,
                max: 7,
            })
        );
        assert!(matches!(
            Schedule::parse("0 0 0 * *"),
            Err(ScheduleError::OutOfRange {
                field: "day-of-month",
                ..
            })
        ));
        assert!(matches!(
            Schedule::parse("0 0 * 99999999999 *"),
            Err(ScheduleError::OutOfRange { field: "month", .. })
        ));
    }

    #[test]
    fn zero_and_non_numeric_steps_are_errors() {
        assert_eq!(
            Schedule::parse("*/0 * * * *"),
            Err(ScheduleError::BadStep {
                field: "minute",
                item: "*/0".to_string(),
                step: "0".to_string(),
            })
        );
        for text in ["*/x * * * *", "*/ * * * *", "0 1-5/2/3 * * *"] {
            assert!(
                matches!(Schedule::parse(text), Err(ScheduleError::BadStep { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn backwards_ranges_are_errors() {
        assert_eq!(
            Schedule::parse("0 5-1 * * *"),
            Err(ScheduleError::BackwardsRange {
                field: "hour",
                item: "5-1".to_string(),
            })
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for text in ["x * * * *", "0 * * * MON", "1,,2 * * * *", "-1 * * * *"] {
            assert!(
                matches!(Schedule::parse(text), Err(ScheduleError::Syntax { .. })),
                "{text}"
            );
        }
        assert!(matches!(
            Schedule::parse("every hour"),
            Err(ScheduleError::FieldCount { got: 2, .. })
        ));
        assert_eq!(
            Schedule::parse("@yearly"),
            Err(ScheduleError::UnknownShorthand {
                text: "@yearly".to_string()
            })
        );
    }

    #[test]
    fn serde_round_trips_as_the_written_string() {
        let schedule = Schedule::parse("0 9 * * 1-5").expect("valid");
        let json = serde_json::to_string(&schedule).expect("serializes");
        assert_eq!(json, r#""0 9 * * 1-5""#);
        let back: Schedule = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, schedule);
        assert!(serde_json::from_str::<Schedule>(r#""61 * * * *""#).is_err());
    }
}
