//! The report's three SVG plots (plotters' SVG backend: no fonts, no image codecs).
//!
//! Each kind of mark has its own colour, so a reader (or a test) can tell them apart in the SVG:
//! [`COMMAND_COLOR`] and [`MEASURED_COLOR`] polylines (one each per joint panel), [`SPLICE_COLOR`] vertical
//! polylines (one per spliced chunk per panel), [`LATENCY_BAR_COLOR`] rectangles (one per non-empty
//! lateness bin) and [`INTERVENTION_BAR_COLOR`] rectangles (one per reason). No legends are drawn (they
//! would repeat the marks); the captions say which colour is which.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::{PlotCounts, Series};
use crate::record::{RecordError, RecordResult};

/// Longer series are decimated to a min/max envelope of about this many points.
pub const MAX_POINTS_PER_SERIES: usize = 4000;
/// Bins of the lateness histogram.
pub const LATENESS_BINS: usize = 50;

const COMMAND: RGBColor = RGBColor(0x1F, 0x77, 0xB4);
const MEASURED: RGBColor = RGBColor(0xFF, 0x7F, 0x0E);
const SPLICE: RGBColor = RGBColor(0xD6, 0x27, 0x28);
const LATENESS_BAR: RGBColor = RGBColor(0x2C, 0xA0, 0x2C);
const INTERVENTION_BAR: RGBColor = RGBColor(0x94, 0x67, 0xBD);

/// The commanded-position polylines' `stroke` in `joints.svg`.
pub const COMMAND_COLOR: &str = "#1F77B4";
/// The measured-position polylines' `stroke` in `joints.svg`.
pub const MEASURED_COLOR: &str = "#FF7F0E";
/// The splice markers' `stroke` in `joints.svg`.
pub const SPLICE_COLOR: &str = "#D62728";
/// The lateness bars' `fill` in `lateness.svg`.
pub const LATENCY_BAR_COLOR: &str = "#2CA02C";
/// The intervention bars' `fill` in `interventions.svg`.
pub const INTERVENTION_BAR_COLOR: &str = "#9467BD";

fn plot_err(path: &Path) -> impl Fn(String) -> RecordError + '_ {
    move |message| RecordError::Plot { path: path.to_path_buf(), message }
}

/// Writes `lateness.svg`, `joints.svg` and `interventions.svg` into `out_dir`, appending their paths.
pub(crate) fn write_all(
    series: &Series,
    interventions: &BTreeMap<String, u64>,
    out_dir: &Path,
    written: &mut Vec<PathBuf>,
) -> RecordResult<PlotCounts> {
    let mut counts = PlotCounts::default();
    let path = out_dir.join("lateness.svg");
    counts.lateness_bars = lateness(&series.lateness_ns, &path).map_err(plot_err(&path))?;
    written.push(path);

    let path = out_dir.join("joints.svg");
    (counts.joint_panels, counts.measured_series, counts.splice_markers) =
        joints(series, &path).map_err(plot_err(&path))?;
    written.push(path);

    let path = out_dir.join("interventions.svg");
    counts.intervention_bars = intervention_bars(interventions, &path).map_err(plot_err(&path))?;
    written.push(path);
    Ok(counts)
}

/// The histogram's bins: `(upper edge in µs, count)`, equal width from 0 to the largest value.
pub(crate) fn lateness_bins(lateness_ns: &[u64]) -> (f64, Vec<u64>) {
    let max_us = lateness_ns.iter().copied().max().unwrap_or(0) as f64 / 1e3;
    let width_us = (max_us / LATENESS_BINS as f64).max(1e-3);
    let mut bins = vec![0u64; LATENESS_BINS];
    for &ns in lateness_ns {
        let i = ((ns as f64 / 1e3) / width_us) as usize;
        bins[i.min(LATENESS_BINS - 1)] += 1;
    }
    (width_us, bins)
}

fn lateness(lateness_ns: &[u64], path: &Path) -> Result<usize, String> {
    let (width_us, bins) = lateness_bins(lateness_ns);
    let top = bins.iter().copied().max().unwrap_or(0).max(1) as f64 * 2.0;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("tick lateness ({} ticks; green: ticks per bin, log scale)", lateness_ns.len()),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..width_us * LATENESS_BINS as f64, (0.8..top).log_scale())
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("lateness [us]").y_desc("ticks").draw().map_err(|e| e.to_string())?;
    let bars: Vec<_> = bins
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &n)| {
            let x0 = i as f64 * width_us;
            Rectangle::new([(x0, 0.8), (x0 + width_us, n as f64)], LATENESS_BAR.filled())
        })
        .collect();
    let drawn = bars.len();
    chart.draw_series(bars).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(drawn)
}

/// `(t, y)` points without non-finite values, decimated to a min/max envelope when long.
pub(crate) fn decimate(t_s: &[f64], y: &[f64]) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> =
        t_s.iter().copied().zip(y.iter().copied()).filter(|(t, v)| t.is_finite() && v.is_finite()).collect();
    if points.len() <= MAX_POINTS_PER_SERIES {
        return points;
    }
    let buckets = MAX_POINTS_PER_SERIES / 2;
    let per = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(buckets * 2);
    for bucket in points.chunks(per) {
        let (mut lo, mut hi) = (bucket[0], bucket[0]);
        let (mut lo_i, mut hi_i) = (0, 0);
        for (i, p) in bucket.iter().enumerate() {
            if p.1 < lo.1 {
                (lo, lo_i) = (*p, i);
            }
            if p.1 > hi.1 {
                (hi, hi_i) = (*p, i);
            }
        }
        if lo_i <= hi_i {
            out.extend([lo, hi]);
        } else {
            out.extend([hi, lo]);
        }
    }
    out
}

fn joints(series: &Series, path: &Path) -> Result<(usize, usize, usize), String> {
    let n = series.command_rad.len().max(series.measured_rad.len());
    let panels = n.max(1);
    let root = SVGBackend::new(path, (1000, (220 * panels) as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(
            "joint position (blue: commanded, orange: measured, red: RTC-spliced chunk arrives)",
            ("sans-serif", 18),
        )
        .map_err(|e| e.to_string())?;
    let t0 = series.t_s.iter().copied().find(|t| t.is_finite()).unwrap_or(0.0);
    let t1 = series.t_s.iter().copied().filter(|t| t.is_finite()).fold(t0, f64::max);
    let t1 = if t1 > t0 { t1 } else { t0 + 1.0 };
    let splices: Vec<f64> = series.splice_t_s.iter().copied().filter(|t| t.is_finite()).collect();
    let mut measured_series = 0;
    for (j, area) in root.split_evenly((panels, 1)).into_iter().enumerate().take(n) {
        let command = series.command_rad.get(j).map(|c| decimate(&series.t_s, c)).unwrap_or_default();
        let measured = series.measured_rad.get(j).map(|m| decimate(&series.t_s, m)).unwrap_or_default();
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for &(_, v) in command.iter().chain(&measured) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !(lo.is_finite() && hi.is_finite()) {
            (lo, hi) = (-1.0, 1.0);
        }
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let (lo, hi) = (lo - pad, hi + pad);
        let mut chart = ChartBuilder::on(&area)
            .caption(format!("joint {j}"), ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(t0..t1, lo..hi)
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc("t [s]").y_desc("position [rad]").draw().map_err(|e| e.to_string())?;
        chart.draw_series(LineSeries::new(command, COMMAND.stroke_width(2))).map_err(|e| e.to_string())?;
        if !measured.is_empty() {
            measured_series += 1;
            chart.draw_series(LineSeries::new(measured, MEASURED.stroke_width(1))).map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(splices.iter().map(|&t| PathElement::new(vec![(t, lo), (t, hi)], SPLICE.stroke_width(1))))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok((n, measured_series, splices.len()))
}

fn intervention_bars(interventions: &BTreeMap<String, u64>, path: &Path) -> Result<usize, String> {
    let reasons: Vec<(&String, u64)> = interventions.iter().map(|(r, &n)| (r, n)).collect();
    let top = reasons.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64 * 1.1;
    let slots = reasons.len().max(1) as f64;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let total: u64 = reasons.iter().map(|r| r.1).sum();
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("safety interventions by reason ({total} ticks)"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..slots, 0.0..top)
        .map_err(|e| e.to_string())?;
    let label = |x: &f64| {
        let i = x.floor();
        // Label each bar once, at its centre tick.
        if (x - i - 0.5).abs() < 1e-9 && i >= 0.0 {
            reasons.get(i as usize).map(|r| r.0.clone()).unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(reasons.len().max(1) * 2 + 1)
        .x_label_formatter(&label)
        .y_desc("ticks")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(reasons.iter().enumerate().map(|(i, &(_, n))| {
            Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, n as f64)], INTERVENTION_BAR.filled())
        }))
        .map_err(|e| e.to_string())?;
    // The reasons under the bars as text too (tick labels depend on plotters' tick placement).
    chart
        .draw_series(reasons.iter().enumerate().map(|(i, &(r, n))| {
            Text::new(format!("{r}: {n}"), (i as f64 + 0.2, n as f64 + top * 0.02), ("sans-serif", 13))
        }))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(reasons.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimation_keeps_every_extreme_and_bounds_the_point_count() {
        let t: Vec<f64> = (0..100_000).map(|i| i as f64 * 0.002).collect();
        let mut y: Vec<f64> = t.iter().map(|t| t.sin()).collect();
        y[54_321] = 7.0;
        y[999] = -7.0;
        y[10] = f64::NAN;
        let out = decimate(&t, &y);
        assert!(out.len() <= MAX_POINTS_PER_SERIES);
        assert!(out.contains(&(t[54_321], 7.0)) && out.contains(&(t[999], -7.0)));
        assert!(out.windows(2).all(|w| w[0].0 <= w[1].0), "time order kept");
        assert_eq!(decimate(&t[..5], &y[..5]).len(), 5);
    }

    #[test]
    fn lateness_bins_count_every_tick_and_put_the_largest_in_the_last_bin() {
        let ns: Vec<u64> = (0..1000).map(|i| i * 100).collect();
        let (width_us, bins) = lateness_bins(&ns);
        assert_eq!(bins.iter().sum::<u64>(), 1000);
        assert!((width_us - 99.9 / LATENESS_BINS as f64).abs() < 1e-9);
        assert!(bins[LATENESS_BINS - 1] >= 1);
    }
}
