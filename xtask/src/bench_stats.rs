//! The numbers of `cargo xtask bench`: one timed run of a tool ([`Sample`]: wall time and the
//! child's peak RSS), the samples of one measure ([`Series`], keyed by section, case,
//! filesystem and tool), their summary (median, min, max, spread) and the ratios the report
//! prints. Pure functions, unit-tested; nothing here runs a process.

use serde::{Deserialize, Serialize};

/// One timed run of one command.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock time from spawn to exit, in milliseconds.
    pub wall_ms: f64,
    /// Peak resident set size of the child (the largest of it and its waited-for
    /// descendants, `ru_maxrss` of `RUSAGE_CHILDREN`), in KiB; 0 when not measured.
    pub max_rss_kib: u64,
}

/// What a series measures: `section` (`pull-cold`), `case` (`big:latest overlay`), `fs`
/// (`ext4`, `tmpfs` or `-` when no file is written) and `tool` (`podstore`, `skopeo`, …).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// Group of measures, one table in the report.
    pub section: String,
    /// The row: image, driver, operation.
    pub case: String,
    /// Filesystem of the store (or scratch directory).
    pub fs: String,
    /// The program measured.
    pub tool: String,
}

impl Key {
    /// A key from its four parts.
    pub fn new(section: &str, case: &str, fs: &str, tool: &str) -> Key {
        Key {
            section: section.to_owned(),
            case: case.to_owned(),
            fs: fs.to_owned(),
            tool: tool.to_owned(),
        }
    }
}

/// Every sample of one measure, plus the exact command (for the report's reproduction notes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// What was measured.
    pub key: Key,
    /// The command line of one run (store paths of that run).
    pub command: String,
    /// The runs, in the order they ran.
    pub samples: Vec<Sample>,
}

/// Median, extremes and count of a list of numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median (mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Summary {
    /// The summary of `values`; `None` when there are none (or any is NaN).
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            n,
        })
    }

    /// Spread as a fraction of the median: `(max - min) / median` (0 for a zero median).
    pub fn spread(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / self.median
        }
    }
}

impl Series {
    /// Summary of the wall times.
    pub fn time(&self) -> Option<Summary> {
        Summary::of(&self.samples.iter().map(|s| s.wall_ms).collect::<Vec<_>>())
    }

    /// Summary of the peak RSS values, in MiB (samples without a measurement are left out).
    pub fn rss_mib(&self) -> Option<Summary> {
        let values: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.max_rss_kib > 0)
            .map(|s| s.max_rss_kib as f64 / 1024.0)
            .collect();
        Summary::of(&values)
    }
}

/// `a / b`, `None` when either is missing or `b` is not positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// A duration in ms for a table cell: 3 significant digits below 100, whole numbers with
/// thousands separators above.
pub fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        thousands(ms.round() as u64)
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `median (min–max)` in ms, with `n=` when the count is not `expected_n`.
pub fn format_summary(summary: &Summary) -> String {
    format!(
        "{} ({}–{})",
        format_ms(summary.median),
        format_ms(summary.min),
        format_ms(summary.max)
    )
}

/// A ratio as `0.42×`, or `–` when there is none.
pub fn format_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r < 0.1 => format!("{r:.3}×"),
        Some(r) => format!("{r:.2}×"),
        None => "–".to_owned(),
    }
}

/// How a target compares a measured value with its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The value must be at most the bound.
    AtMost,
    /// The value must be strictly below the bound.
    Below,
}

/// Whether `value` meets `bound` under `goal`; `None` when the value is missing.
pub fn meets(value: Option<f64>, goal: Goal, bound: f64) -> Option<bool> {
    value.map(|v| match goal {
        Goal::AtMost => v <= bound,
        Goal::Below => v < bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (values, expected (median, min, max, n)).
    type SummaryCase<'a> = (&'a [f64], Option<(f64, f64, f64, usize)>);

    #[test]
    fn summaries_of_odd_even_and_empty_lists() {
        let table: &[SummaryCase<'_>] = &[
            (&[], None),
            (&[5.0], Some((5.0, 5.0, 5.0, 1))),
            (&[3.0, 1.0, 2.0], Some((2.0, 1.0, 3.0, 3))),
            (&[4.0, 1.0, 3.0, 2.0], Some((2.5, 1.0, 4.0, 4))),
            (&[10.0, 10.0, 1000.0], Some((10.0, 10.0, 1000.0, 3))),
            (&[1.0, f64::NAN], None),
        ];
        for (values, want) in table {
            let got = Summary::of(values).map(|s| (s.median, s.min, s.max, s.n));
            assert_eq!(&got, want, "{values:?}");
        }
        let s = Summary::of(&[8.0, 10.0, 12.0]).unwrap();
        assert!((s.spread() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn rss_summary_skips_unmeasured_samples() {
        let series = Series {
            key: Key::new("pull-cold", "big overlay", "tmpfs", "podstore"),
            command: String::new(),
            samples: vec![
                Sample {
                    wall_ms: 1.0,
                    max_rss_kib: 2048,
                },
                Sample {
                    wall_ms: 3.0,
                    max_rss_kib: 0,
                },
                Sample {
                    wall_ms: 2.0,
                    max_rss_kib: 4096,
                },
            ],
        };
        assert_eq!(series.time().unwrap().median, 2.0);
        let rss = series.rss_mib().unwrap();
        assert_eq!((rss.median, rss.n), (3.0, 2));
    }

    #[test]
    fn ratios_formats_and_goals() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(format_ratio(Some(0.25)), "0.25×");
        assert_eq!(format_ratio(Some(0.0123)), "0.012×");
        assert_eq!(format_ratio(None), "–");
        for (ms, want) in [
            (0.1234, "0.123"),
            (4.567, "4.57"),
            (45.67, "45.7"),
            (4567.4, "4,567"),
            (1234567.0, "1,234,567"),
        ] {
            assert_eq!(format_ms(ms), want);
        }
        assert_eq!(meets(Some(0.5), Goal::AtMost, 0.5), Some(true));
        assert_eq!(meets(Some(1.0), Goal::Below, 1.0), Some(false));
        assert_eq!(meets(Some(0.99), Goal::Below, 1.0), Some(true));
        assert_eq!(meets(None, Goal::AtMost, 1.0), None);
    }
}
