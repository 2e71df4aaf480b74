//! Showing the projections' progress: one `indicatif` bar per projection (rate, ETA, lag
//! and owner) on a terminal, plain lines ([`progress_line`]) when standard output is
//! not one (a log file, a pipe, a service manager).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use marten_pg::ProjectionStatus;

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
            }
        }
    }

    /// Shows `statuses`.
    pub(crate) fn update(&mut self, statuses: &[ProjectionStatus]) {
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
            Display::Lines { last } => {
                let now = Instant::now();
                for s in statuses {
                    let rate = match last.get(&s.name) {
                        Some((previous, _)) if previous == s => continue,
                        Some((previous, at)) => {
                            let elapsed = now.duration_since(*at).as_secs_f64().max(0.001);
                            (s.position - previous.position).max(0) as f64 / elapsed
                        }
                        None => 0.0,
                    };
                    println!("{}{}", progress_line(s, rate), eta(s.lag(), rate));
                    last.insert(s.name.clone(), (s.clone(), now));
                }
            }
        }
    }

    /// Prints a message without breaking the bars.
    pub(crate) fn message(&self, text: &str) {
        match self {
            Display::Bars { multi, .. } => {
                if multi.println(text).is_err() {
                    eprintln!("{text}");
                }
            }
            Display::Lines { .. } => eprintln!("{text}"),
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

/// `" eta 12s"` when the projection is behind and moving, else nothing.
fn eta(lag: i64, rate: f64) -> String {
    if lag > 0 && rate > 0.0 {
        let seconds = Duration::from_secs_f64(lag as f64 / rate).as_secs();
        format!("  eta {seconds}s")
    } else {
        String::new()
    }
}
