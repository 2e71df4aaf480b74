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
    println!("| events in store | documents | append 1 event, marten (events/s) | raw | marten / raw | to 100 streams, marten | raw | marten / raw | daemon catch-up (events/s) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in levels {
        let (a, h) = (&l.append, &l.append_hot);
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} |",
            l.events,
            l.documents,
            a.marten,
            a.raw,
            a.marten / a.raw,
            h.marten,
            h.raw,
            if h.raw > 0.0 { h.marten / h.raw } else { 0.0 },
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

fn latency_curve(
    levels: &[Level],
    file: String,
    title: &str,
    f: impl Fn(&Reads) -> Latency,
) -> Curve {
    Curve {
        file,
        title: title.into(),
        x_desc: "events in the store",
        y_desc: "latency (µs)",
        series: vec![
            ("p50 cold".into(), by_events(levels, |l| f(&l.cold).p50)),
            ("p99 cold".into(), by_events(levels, |l| f(&l.cold).p99)),
            ("p50 warm".into(), by_events(levels, |l| f(&l.warm).p50)),
            ("p99 warm".into(), by_events(levels, |l| f(&l.warm).p99)),
        ],
    }
}

/// (documents, f(level)) of every level.
fn by_docs(levels: &[Level], f: impl Fn(&Level) -> f64) -> Vec<(f64, f64)> {
    levels.iter().map(|l| (l.documents as f64, f(l))).collect()
}

/// The file name of the curve `what`: `scale-<most events in the store>-<what>.png`
/// (`scale-10m-load.png` for a run up to 10 million events, `scale-10k-` for a run of the
/// probe alone), so runs to different sizes keep their own plots.
fn file_name(levels: &[Level], what: &str) -> String {
    let most = levels.iter().map(|l| l.events).max().unwrap_or(0);
    let size = match most {
        n if n >= 1_000_000 => format!("{}m", (n as f64 / 1e6).round()),
        n if n >= 1_000 => format!("{}k", (n as f64 / 1e3).round()),
        n => n.to_string(),
    };
    format!("scale-{size}-{what}.png")
}

/// The curves of the rates and latencies.
fn curves(levels: &[Level]) -> Vec<Curve> {
    let name = |what: &str| file_name(levels, what);
    vec![
        Curve {
            file: name("append"),
            title: "Append 1 event, 1 writer, synchronous_commit=off".into(),
            x_desc: "events in the store",
            y_desc: "events/s",
            series: vec![
                ("marten".into(), by_events(levels, |l| l.append.marten)),
                (
                    "raw tokio-postgres, the same work".into(),
                    by_events(levels, |l| l.append.raw),
                ),
                (
                    "marten, to 100 streams".into(),
                    by_events(levels, |l| l.append_hot.marten),
                ),
                (
                    "raw, to 100 streams".into(),
                    by_events(levels, |l| l.append_hot.raw),
                ),
            ],
        },
        Curve {
            file: name("daemon"),
            title: "Daemon catch-up over a window of new events".into(),
            x_desc: "events in the store",
            y_desc: "events/s",
            series: vec![(
                "marten".into(),
                by_events(levels, |l| l.daemon_events_per_s),
            )],
        },
        latency_curve(
            levels,
            name("fetch-stream"),
            "fetch_stream of a 10-event stream",
            |r| r.fetch_stream,
        ),
        latency_curve(levels, name("read-all"), "read_all, a page of 500", |r| {
            r.read_all
        }),
        latency_curve(
            levels,
            name("tag-boundary"),
            "Tag boundary read, 20 events",
            |r| r.tag_boundary,
        ),
        Curve {
            file: name("load"),
            title: "load by id".into(),
            x_desc: "documents in the store",
            y_desc: "latency (µs)",
            series: vec![
                ("p50 cold".into(), by_docs(levels, |l| l.cold.load.p50)),
                ("p99 cold".into(), by_docs(levels, |l| l.cold.load.p99)),
                ("p50 warm".into(), by_docs(levels, |l| l.warm.load.p50)),
                ("p99 warm".into(), by_docs(levels, |l| l.warm.load.p99)),
            ],
        },
    ]
}

/// The indexes that grow with the events: the event tables' and the raw schema's.
const EVENT_INDEXES: [&str; 8] = [
    "mt_events_pkey",
    "mt_events_id",
    "mt_events_stream_version",
    "mt_events_tx_seq",
    "mt_streams_pkey",
    "mt_event_tags_pkey",
    "mt_tag_versions_pkey",
    "raw_events_pkey",
];
/// The indexes that grow with the documents.
const DOCUMENT_INDEXES: [&str; 2] = ["mt_doc_customer_pkey", "raw_docs_pkey"];

/// Each index's bytes per row of its side (events or documents), at every level: a flat
/// line is an index growing in proportion to the data.
fn index_curve(levels: &[Level], documents: bool) -> Curve {
    let names: &[&str] = if documents {
        &DOCUMENT_INDEXES
    } else {
        &EVENT_INDEXES
    };
    let rows = |l: &Level| if documents { l.documents } else { l.events } as f64;
    let series = (names.iter())
        .map(|&name| {
            let points = (levels.iter())
                .filter_map(|l| {
                    let (_, bytes) = l.storage.indexes.iter().find(|(n, _)| n == name)?;
                    (rows(l) > 0.0).then(|| (rows(l), *bytes as f64 / rows(l)))
                })
                .collect();
            (name.to_owned(), points)
        })
        .collect();
    let (what, file, x_desc) = if documents {
        ("document", "index-bytes-per-doc", "documents in the store")
    } else {
        ("event", "index-bytes-per-event", "events in the store")
    };
    Curve {
        file: file_name(levels, file),
        title: format!("Index bytes per {what}, each index"),
        x_desc,
        y_desc: "bytes per row",
        series,
    }
}

/// The curves of the storage.
fn storage_curves(levels: &[Level]) -> Vec<Curve> {
    let name = |what: &str| file_name(levels, what);
    vec![
        index_curve(levels, false),
        index_curve(levels, true),
        Curve {
            file: name("bytes-per-event"),
            title: "Bytes per event: marten against a minimal raw table".into(),
            x_desc: "events in the store",
            y_desc: "bytes/event",
            series: vec![
                (
                    "marten".into(),
                    by_events(levels, |l| l.storage.per_event.marten),
                ),
                ("raw".into(), by_events(levels, |l| l.storage.per_event.raw)),
            ],
        },
        Curve {
            file: name("bytes-per-doc"),
            title: "Bytes per document: marten against a minimal raw table".into(),
            x_desc: "documents in the store",
            y_desc: "bytes/document",
            series: vec![
                (
                    "marten".into(),
                    by_docs(levels, |l| l.storage.per_doc.marten),
                ),
                ("raw".into(), by_docs(levels, |l| l.storage.per_doc.raw)),
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
            Ok(()) => eprintln!("plot: {}", dir.join(&curve.file).display()),
            Err(e) => eprintln!("plot {}: {e}", curve.file),
        }
    }
}
