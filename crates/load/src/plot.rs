//! `--plot FILE.png|svg`: accept rate, decide rate and backlog over time, and the
//! accept latency distribution (by percentile), drawn with plotters.
//!
//! Text needs a TrueType font: the first DejaVu Sans found on the system (Debian's
//! `fonts-dejavu-core`, which `scripts/services.sh` installs) is registered at run time.

use std::path::Path;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use plotters::{
    coord::{types::RangedCoordf64, Shift},
    prelude::*,
    style::{register_font, FontStyle},
};

use crate::report::Sample;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn load_font() -> anyhow::Result<()> {
    for path in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps the font for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return Ok(());
            }
        }
    }
    bail!("no TrueType font found for the plot (install fonts-dejavu-core)")
}

/// Per-interval rates from cumulative samples: (t, accepted/s, decided/s, backlog).
fn rates(timeline: &[Sample]) -> Vec<(f64, f64, f64, f64)> {
    timeline
        .windows(2)
        .map(|w| {
            let dt = (w[1].t_s - w[0].t_s).max(0.001);
            (
                w[1].t_s,
                w[1].accepted.saturating_sub(w[0].accepted) as f64 / dt,
                w[1].decided.saturating_sub(w[0].decided) as f64 / dt,
                w[1].backlog as f64,
            )
        })
        .collect()
}

fn err(e: &dyn std::fmt::Debug) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

type Panel<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// One panel: a captioned chart from 0 to `x_max` and 0 to `y_max`, with its mesh
/// drawn (x labels through `x_label` when given, else plotters' own).
fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    (x_max, y_max): (f64, f64),
    x_desc: &str,
    x_label: Option<&dyn Fn(&f64) -> String>,
) -> anyhow::Result<Panel<'a, DB>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc);
    if let Some(format) = x_label {
        mesh.x_label_formatter(format);
    }
    mesh.draw().map_err(|e| err(&e))?;
    Ok(chart)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    timeline: &[Sample],
    latency_us: &Histogram<u64>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let panels = root.split_evenly((3, 1));
    let points = rates(timeline);
    let t_max = points.last().map_or(1.0, |p| p.0).max(1.0);
    let rate_max = points.iter().map(|p| p.1.max(p.2)).fold(1.0, f64::max) * 1.1;
    let backlog_max = points.iter().map(|p| p.3).fold(1.0, f64::max) * 1.1;

    let mut chart = panel(
        &panels[0],
        "requests per second",
        (t_max, rate_max),
        "seconds",
        None,
    )?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.1)), &BLUE))
        .map_err(|e| err(&e))?
        .label("accepted/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.2)), &RED))
        .map_err(|e| err(&e))?
        .label("decided/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;

    let mut chart = panel(
        &panels[1],
        "backlog (accepted, not yet decided)",
        (t_max, backlog_max),
        "seconds",
        None,
    )?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.0, p.3)), &GREEN))
        .map_err(|e| err(&e))?;

    // Latency by percentile on a "nines" axis: x = -log10(1 - q).
    let quantiles: Vec<(f64, f64)> = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999]
        .iter()
        .filter(|_| !latency_us.is_empty())
        .map(|q| {
            (
                -(1.0_f64 - q).log10(),
                latency_us.value_at_quantile(*q) as f64 / 1_000.0,
            )
        })
        .collect();
    let lat_max = quantiles.iter().map(|p| p.1).fold(0.1, f64::max) * 1.1;
    let percentile = |x: &f64| format!("{:.2}%", 100.0 * (1.0 - 10f64.powf(-x)));
    let mut chart = panel(
        &panels[2],
        "accept latency by percentile (ms)",
        (4.0, lat_max),
        "percentile",
        Some(&percentile),
    )?;
    chart
        .draw_series(LineSeries::new(quantiles, &MAGENTA))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Writes the plot; the format follows the extension (`.png` or `.svg`).
///
/// # Errors
/// An unknown extension, no font, or a drawing failure.
pub fn write(
    path: &Path,
    title: &str,
    timeline: &[Sample],
    latency_us: &Histogram<u64>,
) -> anyhow::Result<()> {
    load_font()?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => {
            let root = BitMapBackend::new(path, (1000, 1100)).into_drawing_area();
            draw(&root, title, timeline, latency_us)
        }
        Some("svg") => {
            let root = SVGBackend::new(path, (1000, 1100)).into_drawing_area();
            draw(&root, title, timeline, latency_us)
        }
        _ => bail!("--plot needs a .png or .svg file name"),
    }
    .with_context(|| format!("drawing {}", path.display()))
}
