//! `chart`: delivered/s and p99 against offered deliveries/s, one line per
//! result file. SVG output keeps text as `<text>` elements, so no font files
//! or fontconfig are needed (plotters only estimates text extents for layout).

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;

use crate::cli::ChartArgs;
use crate::report::RunReport;

struct Series {
    label: String,
    /// (offered deliveries/s, delivered/s, p99 ms)
    points: Vec<(f64, f64, Option<f64>)>,
}

pub fn draw(args: &ChartArgs) -> Result<()> {
    let series = args
        .inputs
        .iter()
        .map(|path| load(path))
        .collect::<Result<Vec<_>>>()?;
    let offered_max = max_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let delivered_max =
        max_of(series.iter().flat_map(|s| s.points.iter().map(|p| p.1))).max(offered_max);
    let p99_max = max_of(
        series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|p| p.2)),
    );

    let root = SVGBackend::new(&args.out, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(700);
    draw_panel(
        &left,
        "Delivered vs offered",
        "delivered/s",
        delivered_max,
        offered_max,
        &series,
        |point| Some(point.1),
    )?;
    draw_panel(
        &right,
        "p99 latency vs offered",
        "p99 (ms)",
        p99_max,
        offered_max,
        &series,
        |point| point.2,
    )?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn load(path: &Path) -> Result<Series> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let report: RunReport =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let points: Vec<_> = report
        .steps
        .iter()
        .filter_map(|step| {
            let offered = step.offered_deliveries_per_sec?;
            Some((offered, step.delivered_per_sec, step.p99_ms))
        })
        .collect();
    if points.is_empty() {
        bail!(
            "{} has no step with an offered rate to chart (idle or unlimited-rate runs have none)",
            path.display()
        );
    }
    Ok(Series {
        label: format!("{} {}", report.target, report.scenario),
        points,
    })
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    y_max: f64,
    x_max: f64,
    series: &[Series],
    y_of: impl Fn(&(f64, f64, Option<f64>)) -> Option<f64>,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max * 1.05, 0.0..y_max * 1.1)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("offered deliveries/s")
        .y_desc(y_label)
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| si(*v))
        .draw()
        .map_err(plot_error)?;
    for (i, series) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter_map(|point| Some((point.0, y_of(point)?)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(series.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(plot_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max).max(f64::MIN_POSITIVE)
}

/// Axis labels like `250k`, `1.25M` and `0.5`.
fn si(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let digits = format!("{scaled:.2}");
    let digits = digits.trim_end_matches('0').trim_end_matches('.');
    format!("{digits}{suffix}")
}

fn plot_error(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing chart: {err}")
}
