//! The scale benchmark's output: Markdown tables (one per metric, a row per level) and
//! the plots of the curves.

use std::path::Path;

use super::measure::Latency;
use super::plot::{self, Curve};
use super::{Level, Reads};

fn lat(l: &Latency) -> String {
    format!("{:.0} / {:.0}", l.p50, l.p99)
}

/// Prints the tables for `BENCHMARKS.md`.
pub fn print(levels: &[Level]) {
    println!("| events in store | documents | append 1 event, marten (events/s) | raw | marten / raw | daemon catch-up (events/s) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for l in levels {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} |",
            l.events,
            l.documents,
            l.append.marten,
            l.append.raw,
            l.append.marten / l.append.raw,
            l.daemon_events_per_s
        );
    }
    println!();
    for (pass, reads) in [
        ("cold", (|l: &Level| l.cold) as fn(&Level) -> Reads),
        ("warm", |l: &Level| l.warm),
    ] {
        println!("| events in store ({pass}) | documents | fetch_stream, 10 events (µs p50 / p99) | read_all page of 500 | tag boundary, 20 events | load by id |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for l in levels {
            let r = reads(l);
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                l.events,
                l.documents,
                lat(&r.fetch_stream),
                lat(&r.read_all),
                lat(&r.tag_boundary),
                lat(&r.load)
            );
        }
        println!();
    }
    println!("| events in store | bytes/event marten | bytes/event raw | ratio | documents | bytes/doc marten | bytes/doc raw | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in levels {
        let (e, d) = (&l.storage.per_event, &l.storage.per_doc);
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {} | {:.0} | {:.0} | {:.2} |",
            e.rows,
            e.marten,
            e.raw,
            e.marten / e.raw,
            d.rows,
            d.marten,
            d.raw,
            d.marten / d.raw
        );
    }
    println!();
    print_indexes(levels);
}

/// One row per index, one column per level, in MB.
fn print_indexes(levels: &[Level]) {
    let Some(last) = levels.last() else { return };
    let header: Vec<String> = levels
        .iter()
        .map(|l| format!("{} events", l.events))
        .collect();
    println!("| index (MB) | {} |", header.join(" | "));
    println!("|---|{}", "---:|".repeat(levels.len()));
    for (name, _) in &last.storage.indexes {
        let sizes: Vec<String> = levels
            .iter()
            .map(|l| {
                let bytes = l.storage.indexes.iter().find(|(n, _)| n == name);
                bytes.map_or("-".to_owned(), |(_, b)| format!("{:.1}", *b as f64 / 1e6))
            })
            .collect();
        println!("| {name} | {} |", sizes.join(" | "));
    }
}

/// (events, f(level)) of every level.
fn by_events(levels: &[Level], f: impl Fn(&Level) -> f64) -> Vec<(f64, f64)> {
    levels.iter().map(|l| (l.events as f64, f(l))).collect()
}

fn latency_curve<'a>(
    levels: &[Level],
    file: &'a str,
    title: &'a str,
    f: impl Fn(&Reads) -> Latency,
) -> Curve<'a> {
    Curve {
        file,
        title,
        x_desc: "events in the store",
        y_desc: "latency (µs)",
        series: vec![
            ("p50 cold", by_events(levels, |l| f(&l.cold).p50)),
            ("p99 cold", by_events(levels, |l| f(&l.cold).p99)),
            ("p50 warm", by_events(levels, |l| f(&l.warm).p50)),
            ("p99 warm", by_events(levels, |l| f(&l.warm).p99)),
        ],
    }
}

/// (documents, f(level)) of every level.
fn by_docs(levels: &[Level], f: impl Fn(&Level) -> f64) -> Vec<(f64, f64)> {
    levels.iter().map(|l| (l.documents as f64, f(l))).collect()
}

/// The curves of the rates and latencies.
fn curves(levels: &[Level]) -> Vec<Curve<'static>> {
    vec![
        Curve {
            file: "scale-append.png",
            title: "Append 1 event, 1 writer, synchronous_commit=off",
            x_desc: "events in the store",
            y_desc: "events/s",
            series: vec![
                ("marten", by_events(levels, |l| l.append.marten)),
                (
                    "raw tokio-postgres, the same work",
                    by_events(levels, |l| l.append.raw),
                ),
            ],
        },
        Curve {
            file: "scale-daemon.png",
            title: "Daemon catch-up over a window of new events",
            x_desc: "events in the store",
            y_desc: "events/s",
            series: vec![("marten", by_events(levels, |l| l.daemon_events_per_s))],
        },
        latency_curve(
            levels,
            "scale-fetch-stream.png",
            "fetch_stream of a 10-event stream",
            |r| r.fetch_stream,
        ),
        latency_curve(
            levels,
            "scale-read-all.png",
            "read_all, a page of 500",
            |r| r.read_all,
        ),
        latency_curve(
            levels,
            "scale-tag-boundary.png",
            "Tag boundary read, 20 events",
            |r| r.tag_boundary,
        ),
        Curve {
            file: "scale-load.png",
            title: "load by id",
            x_desc: "documents in the store",
            y_desc: "latency (µs)",
            series: vec![
                ("p50 cold", by_docs(levels, |l| l.cold.load.p50)),
                ("p99 cold", by_docs(levels, |l| l.cold.load.p99)),
                ("p50 warm", by_docs(levels, |l| l.warm.load.p50)),
                ("p99 warm", by_docs(levels, |l| l.warm.load.p99)),
            ],
        },
    ]
}

/// The curves of the storage.
fn storage_curves(levels: &[Level]) -> Vec<Curve<'static>> {
    vec![
        Curve {
            file: "scale-bytes-per-event.png",
            title: "Bytes per event: marten against a minimal raw table",
            x_desc: "events in the store",
            y_desc: "bytes/event",
            series: vec![
                ("marten", by_events(levels, |l| l.storage.per_event.marten)),
                ("raw", by_events(levels, |l| l.storage.per_event.raw)),
            ],
        },
        Curve {
            file: "scale-bytes-per-doc.png",
            title: "Bytes per document: marten against a minimal raw table",
            x_desc: "documents in the store",
            y_desc: "bytes/document",
            series: vec![
                ("marten", by_docs(levels, |l| l.storage.per_doc.marten)),
                ("raw", by_docs(levels, |l| l.storage.per_doc.raw)),
            ],
        },
    ]
}

/// Draws every curve into `dir` (created if missing).
pub fn plots(dir: &Path, levels: &[Level]) {
    if !plot::register_font() {
        return;
    }
    std::fs::create_dir_all(dir).expect("plots directory");
    for curve in curves(levels).into_iter().chain(storage_curves(levels)) {
        match plot::draw(dir, &curve) {
            Ok(()) => eprintln!("plot: {}", dir.join(curve.file).display()),
            Err(e) => eprintln!("plot {}: {e}", curve.file),
        }
    }
}
