//! Timestamps as Go's `time.Time` marshals them into containers/storage JSON: RFC 3339 with
//! nanoseconds, trailing zeros trimmed, `Z` for a zero offset, `±hh:mm` otherwise.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// An instant plus the UTC offset it was written with, formatted exactly like Go's
/// `time.RFC3339Nano`. The default value is Go's zero time, `0001-01-01T00:00:00Z`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoTime {
    /// Seconds since the Unix epoch (UTC); may be negative.
    unix_seconds: i64,
    /// Nanoseconds within the second, `0..1_000_000_000`.
    nanos: u32,
    /// Offset from UTC in seconds, as written.
    offset_seconds: i32,
}

/// Seconds from 0001-01-01T00:00:00Z to the Unix epoch.
const ZERO_TIME_UNIX: i64 = -62_135_596_800;

impl Default for GoTime {
    fn default() -> Self {
        GoTime {
            unix_seconds: ZERO_TIME_UNIX,
            nanos: 0,
            offset_seconds: 0,
        }
    }
}

impl GoTime {
    /// The current time in UTC, as containers/storage stamps new records.
    pub fn now_utc() -> GoTime {
        GoTime::from_system_time(SystemTime::now())
    }

    /// Converts a `SystemTime` (UTC).
    pub fn from_system_time(t: SystemTime) -> GoTime {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => GoTime {
                unix_seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
                offset_seconds: 0,
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let mut nanos = d.subsec_nanos();
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                GoTime {
                    unix_seconds: secs,
                    nanos,
                    offset_seconds: 0,
                }
            }
        }
    }

    /// Builds a UTC time from Unix seconds and nanoseconds (nanos above 999,999,999 are clamped).
    pub fn from_unix(unix_seconds: i64, nanos: u32) -> GoTime {
        GoTime {
            unix_seconds,
            nanos: nanos.min(999_999_999),
            offset_seconds: 0,
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(&self) -> i64 {
        self.unix_seconds
    }

    /// Nanoseconds within the second.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// The UTC offset the time was written with, in seconds.
    pub fn offset_seconds(&self) -> i32 {
        self.offset_seconds
    }

    /// Whether this is Go's zero time.
    pub fn is_zero(&self) -> bool {
        self.unix_seconds == ZERO_TIME_UNIX && self.nanos == 0
    }

    /// Parses RFC 3339 (with optional fractional seconds) as Go's `time.Time.UnmarshalJSON`
    /// accepts it. Returns `None` when the text is not such a timestamp.
    pub fn parse(text: &str) -> Option<GoTime> {
        let b = text.as_bytes();
        if b.len() < 20 {
            return None;
        }
        let num = |s: &[u8]| -> Option<i64> {
            if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(s).ok()?.parse().ok()
        };
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let year = num(&b[0..4])?;
        let month = num(&b[5..7])?;
        let day = num(&b[8..10])?;
        let hour = num(&b[11..13])?;
        let minute = num(&b[14..16])?;
        let second = num(&b[17..19])?;
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let mut rest = &b[19..];
        let mut nanos: u32 = 0;
        if rest.first() == Some(&b'.') {
            let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 || digits > 9 {
                return None;
            }
            let frac = num(&rest[1..=digits])?;
            nanos = u32::try_from(frac * 10i64.pow(9 - u32::try_from(digits).ok()?)).ok()?;
            rest = &rest[1 + digits..];
        }
        let offset_seconds: i32 = match rest {
            [b'Z'] => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let h = num(&[*h1, *h2])?;
                let m = num(&[*m1, *m2])?;
                if h > 23 || m > 59 {
                    return None;
                }
                let off = i32::try_from(h * 3600 + m * 60).ok()?;
                if *sign == b'-' { -off } else { off }
            }
            _ => return None,
        };
        let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
        Some(GoTime {
            unix_seconds: local - i64::from(offset_seconds),
            nanos,
            offset_seconds,
        })
    }
}

impl fmt::Display for GoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.unix_seconds + i64::from(self.offset_seconds);
        let days = local.div_euclid(86_400);
        let secs_of_day = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            year,
            month,
            day,
            secs_of_day / 3600,
            (secs_of_day / 60) % 60,
            secs_of_day % 60
        )?;
        if self.nanos > 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        if self.offset_seconds == 0 {
            f.write_str("Z")
        } else {
            let sign = if self.offset_seconds < 0 { '-' } else { '+' };
            let abs = self.offset_seconds.unsigned_abs();
            write!(f, "{}{:02}:{:02}", sign, abs / 3600, (abs / 60) % 60)
        }
    }
}

impl fmt::Debug for GoTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoTime({self})")
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go_rfc3339nano() {
        let table: &[(&str, &str)] = &[
            ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
            (
                "2024-05-02T09:15:31.418207719Z",
                "2024-05-02T09:15:31.418207719Z",
            ),
            (
                "2024-05-02T09:15:31.520110000Z",
                "2024-05-02T09:15:31.52011Z",
            ),
            ("2023-11-14T22:13:20Z", "2023-11-14T22:13:20Z"),
            ("2023-11-14T22:13:20+00:00", "2023-11-14T22:13:20Z"),
            ("2023-11-14T23:13:20.5+01:00", "2023-11-14T23:13:20.5+01:00"),
            ("2020-02-29T00:00:00-05:30", "2020-02-29T00:00:00-05:30"),
            (
                "1969-12-31T23:59:59.999999999Z",
                "1969-12-31T23:59:59.999999999Z",
            ),
        ];
        for (input, want) in table {
            let t = GoTime::parse(input).unwrap_or_else(|| panic!("parse {input}"));
            assert_eq!(t.to_string(), *want, "input {input}");
        }
    }

    #[test]
    fn zero_time_is_default() {
        assert!(GoTime::default().is_zero());
        assert_eq!(
            GoTime::parse("0001-01-01T00:00:00Z"),
            Some(GoTime::default())
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "2023-13-14T22:13:20Z",
            "2023-02-30T22:13:20Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567891Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14 22:13:20Z",
            "２023-11-14T22:13:20Z",
        ] {
            assert_eq!(GoTime::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn now_round_trips() {
        let t = GoTime::now_utc();
        assert_eq!(GoTime::parse(&t.to_string()), Some(t));
    }

    proptest::proptest! {
        #[test]
        fn format_parse_round_trip(secs in -62_135_510_400i64..253_402_214_399, nanos in 0u32..1_000_000_000, off in -1439i32..1439) {
            let t = GoTime { unix_seconds: secs, nanos, offset_seconds: off * 60 };
            let text = t.to_string();
            let back = GoTime::parse(&text);
            proptest::prop_assert_eq!(back, Some(t));
        }
    }
}
