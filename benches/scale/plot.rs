//! One PNG per curve (plotters, bitmap backend): x is the number of events (or
//! documents) in the store on a log scale, one line per series. Text is drawn with a
//! TrueType font read at run time (`MARTEN_SCALE_FONT`, default DejaVu Sans); without
//! it the curves are not drawn.

use std::path::Path;

use plotters::prelude::*;

/// One curve's plot.
pub struct Curve {
    /// The file name under the output directory.
    pub file: String,
    pub title: String,
    pub x_desc: &'static str,
    pub y_desc: &'static str,
    /// (series name, points (x, y)).
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Registers the font as "sans-serif"; false (and a message) when it cannot be read.
pub fn register_font() -> bool {
    let path = std::env::var("MARTEN_SCALE_FONT").unwrap_or_else(|_| FONT.to_owned());
    let bytes = match std::fs::read(&path) {
        Ok(b) => Box::leak(b.into_boxed_slice()),
        Err(e) => {
            eprintln!("no plots: font {path}: {e}");
            return false;
        }
    };
    match plotters::style::register_font("sans-serif", FontStyle::Normal, bytes) {
        Ok(()) => true,
        Err(_) => {
            eprintln!("no plots: {path} is not a font plotters can read");
            false
        }
    }
}

/// 1200 -> "1.2k", 3000000 -> "3M".
fn human(x: f64) -> String {
    let (v, unit) = match x {
        x if x >= 1e6 => (x / 1e6, "M"),
        x if x >= 1e3 => (x / 1e3, "k"),
        x => (x, ""),
    };
    let s = format!("{v:.1}");
    format!("{}{unit}", s.trim_end_matches(".0"))
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Draws `curve` into `dir`.
pub fn draw(dir: &Path, curve: &Curve) -> Result<(), Box<dyn std::error::Error>> {
    let points = curve.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, 1.0f64, 0.0f64);
    for &(x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_max = y_max.max(y);
    }
    let (x_min, x_max) = (x_min.max(1.0) / 2.0, x_max * 2.0);
    let path = dir.join(&curve.file);
    let root = BitMapBackend::new(&path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(&curve.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..(y_max * 1.15).max(1e-9))?;
    chart
        .configure_mesh()
        .x_desc(curve.x_desc)
        .y_desc(curve.y_desc)
        .x_label_formatter(&|x| human(*x))
        .y_label_formatter(&|y| human(*y))
        .draw()?;
    // A series a run did not measure (all zeros, from an older results file) is left out.
    let measured = curve
        .series
        .iter()
        .filter(|(_, p)| p.iter().any(|&(_, y)| y != 0.0));
    for (i, (name, pts)) in measured.enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(move |&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
