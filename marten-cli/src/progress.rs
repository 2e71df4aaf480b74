//! Showing the projections' progress: one `indicatif` bar per projection (rate, ETA, lag
//! and owner) on a terminal, plain lines ([`progress_line`]) when standard output is
//! not one (a log file, a pipe, a service manager).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use marten_pg::ProjectionStatus;

use crate::output::{note, Out};
use crate::CliError;

/// A text progress bar: `name [#####.....] position/head lag N rate ev/s owner X`.
pub fn progress_line(s: &ProjectionStatus, rate: f64) -> String {
    let width = 30usize;
    let done = if s.head <= 0 {
        width
    } else {
        let fraction = s.position.clamp(0, s.head) as f64 / s.head as f64;
        ((fraction * width as f64) as usize).min(width)
    };
    format!(
        "{:<20} [{}{}] {:>10}/{:<10} lag {:>8}  {:>8.0} ev/s  owner {}",
        s.name,
        "#".repeat(done),
        ".".repeat(width - done),
        s.position,
        s.head,
        s.lag(),
        rate,
        s.owner.as_deref().unwrap_or("-")
    )
}

/// The progress display of a command.
pub(crate) enum Display {
    /// One bar per projection, redrawn in place.
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
    },
    /// A line per projection whenever it changed.
    Lines {
        /// Per projection: the status last printed and when it was observed.
        last: HashMap<String, (ProjectionStatus, Instant)>,
        /// Where the lines go (standard output).
        out: Out,
    },
}

impl Display {
    /// Bars when standard output is a terminal, lines otherwise.
    pub(crate) fn new() -> Display {
        if std::io::stdout().is_terminal() {
            Display::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                bars: HashMap::new(),
            }
        } else {
            Display::Lines {
                last: HashMap::new(),
                out: Out::stdout(),
            }
        }
    }

    /// Whether the lines' reader went away (a closed pipe): nothing more is shown.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self, Display::Lines { out, .. } if out.is_closed())
    }

    /// Shows `statuses`. Fails only when a line cannot be written for another reason
    /// than a closed pipe (see [`Out`]).
    pub(crate) fn update(&mut self, statuses: &[ProjectionStatus]) -> Result<(), CliError> {
        match self {
            Display::Bars { multi, bars } => {
                for s in statuses {
                    let bar = bars
                        .entry(s.name.clone())
                        .or_insert_with(|| multi.add(new_bar(&s.name)));
                    bar.set_length(s.head.max(0) as u64);
                    bar.set_position(s.position.max(0) as u64);
                    bar.set_message(format!(
                        "lag {}  owner {}",
                        s.lag(),
                        s.owner.as_deref().unwrap_or("-")
                    ));
                }
            }
            Display::Lines { last, out } => {
                let now = Instant::now();
                for s in statuses {
                    let rate = match last.get(&s.name) {
                        Some((previous, _)) if previous == s => continue,
                        Some((previous, at)) => {
                            rate(previous.position, s.position, now.duration_since(*at))
                        }
                        None => 0.0,
                    };
                    out.line(format_args!(
                        "{}{}",
                        progress_line(s, rate),
                        eta(s.lag(), rate)
                    ))?;
                    last.insert(s.name.clone(), (s.clone(), now));
                }
            }
        }
        Ok(())
    }

    /// Prints a message without breaking the bars (on standard error without bars),
    /// best effort.
    pub(crate) fn message(&self, text: &str) {
        match self {
            Display::Bars { multi, .. } => {
                if multi.println(text).is_err() {
                    note(text);
                }
            }
            Display::Lines { .. } => note(text),
        }
    }

    /// Leaves the bars drawn as they are.
    pub(crate) fn finish(&self) {
        if let Display::Bars { bars, .. } = self {
            for bar in bars.values() {
                bar.abandon();
            }
        }
    }
}

/// A bar for one projection: name, bar, position/head, rate, ETA, lag and owner.
fn new_bar(name: &str) -> ProgressBar {
    let bar = ProgressBar::hidden();
    let template = "{prefix:<20} [{bar:30}] {pos:>10}/{len:<10} {per_sec:>12} eta {eta:>4}  {msg}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("#>."));
    }
    bar.set_prefix(name.to_owned());
    bar
}

/// Events per second from position `from` to `to` in `elapsed` (at least a millisecond);
/// 0 when the position did not advance. The positions are the database's: their
/// difference saturates instead of overflowing.
fn rate(from: i64, to: i64, elapsed: Duration) -> f64 {
    let advanced = to.saturating_sub(from).max(0);
    advanced as f64 / elapsed.as_secs_f64().max(0.001)
}

/// `"  eta 12s"` when the projection is behind and moving, else nothing (also when the
/// time left is too long for a `Duration`, or the rate is not a number).
fn eta(lag: i64, rate: f64) -> String {
    if lag <= 0 || rate.is_nan() || rate <= 0.0 {
        return String::new();
    }
    match Duration::try_from_secs_f64(lag as f64 / rate) {
        Ok(left) => format!("  eta {}s", left.as_secs()),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_of_a_moving_projection() {
        assert_eq!(eta(100, 10.0), "  eta 10s");
        assert_eq!(eta(1, 1e9), "  eta 0s");
        // Lag at its greatest, moving fast enough: a long but representable time.
        assert_eq!(eta(i64::MAX, 1.0), format!("  eta {}s", 1u64 << 63));
    }

    #[test]
    fn no_eta_when_it_cannot_be_told() {
        let cases = [
            // Too long for a `Duration` (about 1.8e19 s).
            (i64::MAX, 0.1),
            (i64::MAX, f64::MIN_POSITIVE),
            (1, 1e-300),
            // Not behind, or not moving.
            (0, 10.0),
            (-5, 10.0),
            (i64::MIN, 10.0),
            (100, 0.0),
            (100, -0.0),
            (100, -3.0),
            (100, f64::NEG_INFINITY),
            (100, f64::NAN),
            (100, -f64::NAN),
        ];
        for (lag, rate) in cases {
            assert_eq!(eta(lag, rate), "", "lag {lag}, rate {rate}");
        }
        // An infinite rate: nothing left to wait for.
        assert_eq!(eta(100, f64::INFINITY), "  eta 0s");
    }

    #[test]
    fn rate_of_positions_at_the_limits() {
        let second = Duration::from_secs(1);
        assert_eq!(rate(10, 30, second), 20.0);
        assert_eq!(rate(30, 10, second), 0.0);
        assert_eq!(rate(i64::MIN, i64::MAX, second), i64::MAX as f64);
        assert_eq!(rate(i64::MAX, i64::MIN, second), 0.0);
        assert_eq!(rate(-1, i64::MAX, second), i64::MAX as f64);
        assert_eq!(rate(i64::MIN, 0, second), i64::MAX as f64);
        assert_eq!(rate(i64::MAX, i64::MAX, second), 0.0);
        // No time elapsed: counted as a millisecond, not a division by zero.
        assert_eq!(rate(0, 5, Duration::ZERO), 5000.0);
        assert!(eta(i64::MAX, rate(i64::MIN, i64::MAX, Duration::ZERO)).starts_with("  eta"));
    }
}
