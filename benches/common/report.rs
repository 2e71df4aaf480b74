//! Machine-readable results and the regression guard.
//!
//! Every benchmark that uses a [`Report`] writes its rows as JSON, to the file named by
//! `MARTEN_BENCH_JSON` or to `target/bench-results/<bench>.json`. With
//! `MARTEN_BENCH_CHECK=<baseline.json>` the report also compares each row's median ratio
//! with the baseline recorded for the build profile (`dev` or `release`) and fails the
//! run when a ratio fell by more than the baseline's tolerance (15 %), or by more than
//! `MARTEN_BENCH_TOLERANCE` (a fraction, such as `0.35`) when that is set. Rows the
//! baseline does not list are reported, not checked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use super::{median, quartiles, Row};

/// One row of a benchmark's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub scenario: String,
    pub synchronous_commit: String,
    pub unit: String,
    /// Median throughput of marten (or the first side), per second.
    pub marten: f64,
    /// Median throughput of the referent, per second.
    pub referent: f64,
    /// Median of the paired ratios marten / referent.
    pub ratio: f64,
    pub ratio_q1: f64,
    pub ratio_q3: f64,
    pub repetitions: usize,
}

impl Entry {
    /// The key of this row in a baseline: `"<scenario> | <synchronous_commit>"`.
    pub fn key(&self) -> String {
        format!("{} | {}", self.scenario, self.synchronous_commit)
    }
}

/// The results of one benchmark run.
#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    /// `dev` or `release`: ratios differ between optimised and unoptimised builds.
    pub profile: &'static str,
    pub quick: bool,
    pub rows: Vec<Entry>,
}

/// A baseline file: per profile, per benchmark, the ratio of each checked row.
#[derive(Debug, Deserialize)]
struct Baseline {
    /// How the baseline was made (for its readers).
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
    /// The largest accepted fall of a ratio, as a fraction (0.15: 15 %).
    tolerance: f64,
    #[serde(flatten)]
    profiles: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>,
}

/// The build profile this benchmark was compiled with.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

/// Where the JSON results of `bench` go: `MARTEN_BENCH_JSON`, or
/// `<target>/bench-results/<bench>.json`.
pub fn results_path(bench: &str) -> PathBuf {
    std::env::var_os("MARTEN_BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
            dir.join("bench-results").join(format!("{bench}.json"))
        })
}

/// Writes `results` as pretty JSON to [`results_path`] of `bench`.
pub fn write_json(bench: &str, results: &impl Serialize) {
    let path = results_path(bench);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("results directory");
    }
    let json = serde_json::to_string_pretty(results).expect("results as JSON");
    std::fs::write(&path, json).expect("write results");
    eprintln!("results: {}", path.display());
}

impl Report {
    pub fn new(bench: &'static str, quick: bool) -> Self {
        Report {
            bench,
            profile: profile(),
            quick,
            rows: Vec::new(),
        }
    }

    /// Adds a row of paired repetitions and returns it.
    pub fn add(&mut self, row: &Row, sync: &str) -> &Entry {
        let ratios = row.ratios();
        let (q1, q3) = quartiles(&ratios);
        let ratio = median(&ratios);
        self.push(Entry {
            scenario: row.name.clone(),
            synchronous_commit: sync.to_owned(),
            unit: row.unit.to_owned(),
            marten: median(&row.lib),
            referent: median(&row.raw),
            ratio,
            ratio_q1: q1,
            ratio_q3: q3,
            repetitions: ratios.len(),
        })
    }

    /// Adds a row measured once (no spread) and returns it.
    pub fn add_single(
        &mut self,
        scenario: &str,
        sync: &str,
        unit: &str,
        lib: f64,
        raw: f64,
    ) -> &Entry {
        let ratio = lib / raw;
        self.push(Entry {
            scenario: scenario.to_owned(),
            synchronous_commit: sync.to_owned(),
            unit: unit.to_owned(),
            marten: lib,
            referent: raw,
            ratio,
            ratio_q1: ratio,
            ratio_q3: ratio,
            repetitions: 1,
        })
    }

    fn push(&mut self, entry: Entry) -> &Entry {
        self.rows.push(entry);
        self.rows.last().expect("just pushed")
    }

    /// Writes the JSON file and, with `MARTEN_BENCH_CHECK`, checks the baseline: the exit
    /// code is a failure when a checked ratio fell by more than the tolerance.
    pub fn finish(self) -> ExitCode {
        write_json(self.bench, &self);
        match std::env::var_os("MARTEN_BENCH_CHECK") {
            Some(baseline) => self.check(&PathBuf::from(baseline)),
            None => ExitCode::SUCCESS,
        }
    }

    /// Compares each row with the baseline and prints every checked row. Fails when a
    /// row fell, when no row that ran has a baseline (for this benchmark and build
    /// profile), or when a baseline row was not measured (unless `MARTEN_BENCH_ONLY` chose
    /// scenarios).
    fn check(&self, baseline: &std::path::Path) -> ExitCode {
        let text = std::fs::read_to_string(baseline).expect("read the baseline");
        let baseline: Baseline = serde_json::from_str(&text).expect("parse the baseline");
        let tolerance = tolerance_override().unwrap_or(baseline.tolerance);
        let empty = BTreeMap::new();
        let expected = baseline
            .profiles
            .get(self.profile)
            .and_then(|p| p.get(self.bench))
            .unwrap_or(&empty);
        let mut failed = 0;
        let mut compared = 0;
        for row in &self.rows {
            let Some(base) = expected.get(&row.key()) else {
                continue;
            };
            compared += 1;
            let floor = base * (1.0 - tolerance);
            let ok = row.ratio >= floor;
            if !ok {
                failed += 1;
            }
            eprintln!(
                "{} {}: ratio {:.2}, baseline {:.2}, floor {:.2}",
                if ok { "ok  " } else { "FELL" },
                row.key(),
                row.ratio,
                base,
                floor
            );
        }
        if compared == 0 {
            // Checking against nothing would pass whatever the ratios are.
            eprintln!(
                "no baseline row for what ran ({}, {} build)",
                self.bench, self.profile
            );
            failed += 1;
        }
        // A baseline row this run did not measure (renamed, or dropped) checks nothing:
        // a failure too, unless `MARTEN_BENCH_ONLY` chose the scenarios.
        let filtered = super::only_filter().is_some();
        for key in expected.keys() {
            if !filtered && !self.rows.iter().any(|row| &row.key() == key) {
                eprintln!("MISS {key}: in the baseline, not measured");
                failed += 1;
            }
        }
        if failed > 0 {
            eprintln!(
                "{failed} check(s) failed (a ratio fell by more than {:.0} %, a baseline row was not measured, or no baseline)",
                tolerance * 100.0
            );
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// `MARTEN_BENCH_TOLERANCE`, when set: the fraction a ratio may fall below its baseline.
fn tolerance_override() -> Option<f64> {
    let text = std::env::var("MARTEN_BENCH_TOLERANCE").ok()?;
    match text.trim().parse::<f64>() {
        Ok(t) if (0.0..1.0).contains(&t) => Some(t),
        _ => panic!("MARTEN_BENCH_TOLERANCE must be a fraction in [0, 1), not {text:?}"),
    }
}
