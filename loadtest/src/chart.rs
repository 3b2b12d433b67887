//! `chart`: delivered/s, and p50 and p99 latency, against offered
//! deliveries/s, one colour per result file. SVG output keeps text as
//! `<text>` elements, so no font files or fontconfig are needed (plotters only
//! estimates text extents for layout).

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::cli::ChartArgs;
use crate::report::RunReport;

const SIZE: (u32, u32) = (1400, 560);
const TEXT: (&str, u32) = ("sans-serif", 16);
/// The latency panel's reference line: the p99 bound of a sustained step
/// (`--max-p99`'s default).
const P99_BOUND_MS: f64 = 50.0;

struct Series {
    label: String,
    points: Vec<Point>,
}

/// One step of a run.
struct Point {
    offered: f64,
    delivered: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

pub fn draw(args: &ChartArgs) -> Result<()> {
    let series = args
        .inputs
        .iter()
        .map(|path| load(path))
        .collect::<Result<Vec<_>>>()?;
    render(
        SVGBackend::new(&args.out, SIZE).into_drawing_area(),
        &series,
    )
}

fn load(path: &Path) -> Result<Series> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let report: RunReport =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    series_of(&report).with_context(|| format!("charting {}", path.display()))
}

fn series_of(report: &RunReport) -> Result<Series> {
    let points: Vec<_> = report
        .steps
        .iter()
        .filter_map(|step| {
            Some(Point {
                offered: step.offered_deliveries_per_sec?,
                delivered: step.delivered_per_sec,
                p50_ms: step.p50_ms,
                p99_ms: step.p99_ms,
            })
        })
        .collect();
    if points.is_empty() {
        bail!("no step with an offered rate to chart (idle or unlimited-rate runs have none)");
    }
    Ok(Series {
        label: format!("{} {}", report.target, report.scenario),
        points,
    })
}

/// Two panels side by side: delivered/s (linear) and latency (log-log).
fn render<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, series: &[Series]) -> Result<()> {
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    draw_delivered(&left, series)?;
    draw_latency(&right, series)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn draw_delivered<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
) -> Result<()> {
    let offered_max = max_of(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.offered)),
    );
    let delivered_max = max_of(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.delivered)),
    )
    .max(offered_max);
    let mut chart = panel(area, "Delivered vs offered")
        .build_cartesian_2d(0.0..offered_max * 1.05, 0.0..delivered_max * 1.1)
        .map_err(plot_error)?;
    draw_mesh(&mut chart, "offered deliveries/s", "delivered/s", si)?;
    for (i, series) in series.iter().enumerate() {
        let color = color_of(i);
        let points: Vec<_> = series
            .points
            .iter()
            .map(|p| (p.offered, p.delivered))
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
    draw_legend(&mut chart)
}

/// p99 solid with filled dots, p50 dashed with hollow ones, in each file's
/// colour; both axes logarithmic, since the sweep's rates rise by a factor
/// and latencies span 0.1 ms to seconds.
fn draw_latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
) -> Result<()> {
    let offered = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.offered));
    let (offered_min, offered_max) = bounds_of(offered);
    let latencies = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.p50_ms, p.p99_ms]))
        .flatten()
        .chain([P99_BOUND_MS]);
    let (latency_min, latency_max) = bounds_of(latencies);
    let x_range = offered_min / 1.2..offered_max * 1.2;
    let y_range = latency_min / 1.5..latency_max * 2.0;
    let mut chart = panel(area, "Latency vs offered: p99 solid, p50 dashed")
        .build_cartesian_2d(
            x_range
                .clone()
                .log_scale()
                .with_key_points(one_two_five(&x_range)),
            y_range
                .clone()
                .log_scale()
                .with_key_points(one_two_five(&y_range)),
        )
        .map_err(plot_error)?;
    draw_mesh(
        &mut chart,
        "offered deliveries/s (log)",
        "latency, ms (log)",
        trimmed,
    )?;
    let bound = BLACK.mix(0.4);
    chart
        .draw_series(LineSeries::new(
            [(x_range.start, P99_BOUND_MS), (x_range.end, P99_BOUND_MS)],
            bound.stroke_width(1),
        ))
        .map_err(plot_error)?
        .label(format!("{P99_BOUND_MS} ms, the p99 bound"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], bound.stroke_width(1)));
    for (i, series) in series.iter().enumerate() {
        let color = color_of(i);
        let p99 = latency_points(series, |p| p.p99_ms);
        chart
            .draw_series(LineSeries::new(p99.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(format!("{} p99", series.label))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(p99.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(plot_error)?;
        let p50 = latency_points(series, |p| p.p50_ms);
        chart
            .draw_series(DashedLineSeries::new(
                p50.clone(),
                6,
                4,
                color.stroke_width(2),
            ))
            .map_err(plot_error)?
            .label(format!("{} p50", series.label))
            .legend(move |(x, y)| {
                DashedPathElement::new([(x, y), (x + 20, y)], 6, 4, color.stroke_width(2))
            });
        chart
            .draw_series(
                p50.into_iter()
                    .map(|p| Circle::new(p, 3, color.stroke_width(1))),
            )
            .map_err(plot_error)?;
    }
    draw_legend(&mut chart)
}

/// A panel's title and label areas.
fn panel<'a, 'b, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &'b str,
) -> ChartBuilder<'a, 'b, DB> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80);
    builder
}

/// The grid and axes, offered deliveries/s along x.
fn draw_mesh<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    x_desc: &str,
    y_desc: &str,
    y_label: fn(f64) -> String,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(TEXT)
        .x_label_formatter(&|v| si(*v))
        .y_label_formatter(&|v| y_label(*v))
        .draw()
        .map_err(plot_error)
}

fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(TEXT)
        .draw()
        .map_err(plot_error)
}

/// Tableau's first colours; the first two, blue and orange, stay apart for
/// red-green colour-blind readers too.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(214, 39, 40),
];

fn color_of(series: usize) -> RGBAColor {
    COLORS[series % COLORS.len()].to_rgba()
}

/// (offered, latency) of the steps that measured one; a log axis has no zero.
fn latency_points(series: &Series, latency: impl Fn(&Point) -> Option<f64>) -> Vec<(f64, f64)> {
    series
        .points
        .iter()
        .filter_map(|p| Some((p.offered, latency(p).filter(|ms| *ms > 0.0)?)))
        .collect()
}

fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, f64::max).max(f64::MIN_POSITIVE)
}

/// The smallest and largest positive values, for a log axis (1..10 if none).
fn bounds_of(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = values
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0.0_f64), |(min, max), v| {
            (min.min(v), max.max(v))
        });
    if max > 0.0 {
        (min, max)
    } else {
        (1.0, 10.0)
    }
}

/// Axis labels at 1, 2 and 5 times the powers of ten within `range`.
fn one_two_five(range: &std::ops::Range<f64>) -> Vec<f64> {
    let mut decade = 10f64.powf(range.start.log10().floor());
    let mut points = Vec::new();
    while decade <= range.end {
        points.extend(
            [1.0, 2.0, 5.0]
                .map(|m| m * decade)
                .into_iter()
                .filter(|v| range.contains(v)),
        );
        decade *= 10.0;
    }
    points
}

/// Axis labels like `250k`, `1.25M` and `0.5`.
fn si(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e6 => (value / 1e6, "M"),
        v if v >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    format!("{}{suffix}", trimmed(scaled))
}

/// `value` with up to three decimals, trailing zeros dropped: `0.05`, `2000`.
fn trimmed(value: f64) -> String {
    let digits = format!("{value:.3}");
    digits
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

fn plot_error(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing chart: {err}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sweep;

    fn svg_of(series: &[Series]) -> String {
        let mut svg = String::new();
        render(
            SVGBackend::with_string(&mut svg, SIZE).into_drawing_area(),
            series,
        )
        .unwrap();
        svg
    }

    #[test]
    fn the_latency_panel_has_each_servers_p50_and_p99() {
        let series = [series_of(&sweep(0)).unwrap(), series_of(&sweep(1)).unwrap()];
        let svg = svg_of(&series);
        for label in [
            "ringcast fanout p99",
            "ringcast fanout p50",
            "nats fanout p99",
            "nats fanout p50",
            "50 ms, the p99 bound",
        ] {
            assert!(svg.contains(&format!("\n{label}\n</text>")), "no {label}");
        }
        // Every step's p50 (hollow) and p99 (filled) dot, in each server's
        // colour, besides the delivered panel's dot.
        for (i, series) in series.iter().enumerate() {
            let color = color_of(i);
            let rgb = format!("#{:02X}{:02X}{:02X}", color.0, color.1, color.2);
            let dots = svg
                .lines()
                .filter(|line| line.starts_with("<circle") && line.contains(&rgb))
                .count();
            assert_eq!(dots, 3 * series.points.len(), "{}", series.label);
        }
        // The 1-2-5 labels of the log axes.
        for label in ["200k", "500k", "1M", "2M", "5M", "1000", "0.5"] {
            assert!(
                svg.contains(&format!("\n{label}\n")),
                "no axis label {label}"
            );
        }
    }

    #[test]
    fn a_run_without_an_offered_rate_is_refused() {
        let mut report = sweep(0);
        for step in &mut report.steps {
            step.offered_deliveries_per_sec = None;
        }
        assert!(series_of(&report).is_err());
    }

    #[test]
    fn log_axis_labels_are_one_two_five() {
        assert_eq!(one_two_five(&(150e3..7e6)), [200e3, 500e3, 1e6, 2e6, 5e6]);
        assert_eq!(si(1.25e6), "1.25M");
        assert_eq!(trimmed(0.05), "0.05");
        assert_eq!(trimmed(2000.0), "2000");
    }
}
