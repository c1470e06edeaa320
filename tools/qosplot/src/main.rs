// SPDX-License-Identifier: GPL-2.0

//! `qosplot CSV PNG [TITLE]`: plots an openqos experiment.
//!
//! The CSV has a header line and the columns `t_s, phase, premium_delay_ms,
//! basic_delay_ms, basic_rate_limit, ...`; comment lines (`#`) may give the set point as
//! `set point N ms`; a seventh column, if any, is the basic connections accepted in the
//! period. The plot shows both classes' mean delay per period (one line when the two
//! columns are the same queue's) and the set point on the left axis, the basic class's
//! accept rate limit (the actuator) and admitted rate on the right axis, and a dashed
//! line with the phase's name where a phase begins. The delays are on a log scale: a
//! throttled class waits a hundred times longer than the one held at its set point. The font is Debian's
//! DejaVu Sans (fonts-dejavu-core), read from its file: no fontconfig.
//!
//! A *sweep* CSV (header `mode,rate_per_class,class,...`, from `scripts/experiment
//! prio`) is drawn instead as two panels against the offered load per class: each
//! class's mean response time (log scale) and its throughput, one line per class and
//! mode (solid: with the prioritized queue; dashed: one FIFO queue).
//!
//! A *utilization* CSV (header `t_s,phase,utilization_pct,degraded_share_pct,
//! degraded_rate_limit,full_accepted,degraded_accepted,period_s,offered_per_s`, from
//! `scripts/experiment fig10`; `set point N %` in a comment) is drawn as the servers'
//! CPU utilization with the set point and its +-3 point band and the share of clients
//! sent to degraded content on the left axis (percent), and the degraded instance's
//! accept rate limit, the connections admitted by both instances and the offered load on
//! the right axis (connections/s), with the phases marked.

use anyhow::{bail, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

struct Row {
    t: f64,
    phase: String,
    premium: Option<f64>,
    basic: Option<f64>,
    rate: Option<f64>,
    /// Basic connections accepted in the period.
    basic_accepted: Option<f64>,
}

/// The set point a comment line gives (`set point N ms`, `set point N %`).
fn set_point_in(comment: &str) -> Option<f64> {
    let rest = comment.split("set point ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn parse(text: &str) -> Result<(Vec<Row>, Option<f64>)> {
    let mut rows = Vec::new();
    let mut set_point = None;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix('#') {
            set_point = set_point_in(c).or(set_point);
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 5 || f[0] == "t_s" {
            continue;
        }
        let num = |s: &str| s.trim().parse::<f64>().ok();
        rows.push(Row {
            t: num(f[0]).with_context(|| format!("bad time in {line:?}"))?,
            phase: f[1].to_string(),
            premium: num(f[2]),
            basic: num(f[3]),
            rate: num(f[4]),
            basic_accepted: f.get(6).and_then(|v| num(v)),
        });
    }
    if rows.is_empty() {
        bail!("no data rows");
    }
    Ok((rows, set_point))
}

/// One point of a sweep: a class's outcome at one offered load, in one mode.
#[derive(Debug, PartialEq)]
struct Point {
    mode: String,
    rate: f64,
    class: u32,
    throughput: f64,
    mean_ms: Option<f64>,
}

/// Parses a sweep CSV: `mode,rate_per_class,class,replies_per_s,mean_ms,...`.
fn parse_sweep(text: &str) -> Result<Vec<Point>> {
    let mut pts = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.starts_with('#') || f.len() < 5 || f[0] == "mode" {
            continue;
        }
        pts.push(Point {
            mode: f[0].to_string(),
            rate: f[1]
                .parse()
                .with_context(|| format!("bad rate in {line:?}"))?,
            class: f[2]
                .parse()
                .with_context(|| format!("bad class in {line:?}"))?,
            throughput: f[3]
                .parse()
                .with_context(|| format!("bad throughput in {line:?}"))?,
            mean_ms: f[4].parse().ok(),
        });
    }
    if pts.is_empty() {
        bail!("no data rows");
    }
    Ok(pts)
}

const CLASS_COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(230, 120, 20),
    RGBColor(148, 103, 189),
];

/// Draws a sweep: response time and throughput per class against the offered load.
fn plot_sweep(pts: &[Point], png: &str, title: &str) -> Result<()> {
    let x_max = pts.iter().map(|p| p.rate).fold(1.0, f64::max) * 1.05;
    let d_max = pts.iter().filter_map(|p| p.mean_ms).fold(10.0, f64::max) * 1.5;
    let t_max = pts.iter().map(|p| p.throughput).fold(1.0, f64::max) * 1.15;
    let mut classes: Vec<u32> = pts.iter().map(|p| p.class).collect();
    classes.sort_unstable();
    classes.dedup();
    let mut modes: Vec<&str> = pts.iter().map(|p| p.mode.as_str()).collect();
    modes.sort_unstable();
    modes.dedup();

    let root = BitMapBackend::new(png, (1400, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 24))?;
    let (left, right) = root.split_horizontally(700);
    let line = |mode: &str, class: u32, get: &dyn Fn(&Point) -> Option<f64>| {
        let mut v: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| p.mode == mode && p.class == class)
            .filter_map(|p| get(p).map(|y| (p.rate, y)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let style = |class: u32| CLASS_COLORS[class as usize % CLASS_COLORS.len()].stroke_width(2);

    let mut a = ChartBuilder::on(&left)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (1.0..d_max).log_scale())?;
    a.configure_mesh()
        .x_desc("offered load per class (connections/s)")
        .y_desc("mean response time (ms, log scale)")
        .label_style(("sans-serif", 15))
        .draw()?;
    let mut b = ChartBuilder::on(&right)
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..t_max)?;
    b.configure_mesh()
        .x_desc("offered load per class (connections/s)")
        .y_desc("throughput (replies/s)")
        .label_style(("sans-serif", 15))
        .draw()?;
    for &c in &classes {
        for &m in &modes {
            let label = format!("class {c}, {m}");
            let delays = line(m, c, &|p| p.mean_ms);
            let tput = line(m, c, &|p| Some(p.throughput));
            let st = style(c);
            if m == "prio" {
                a.draw_series(LineSeries::new(delays, st))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], st));
                b.draw_series(LineSeries::new(tput, st))?;
            } else {
                a.draw_series(DashedLineSeries::new(delays, 6, 4, st))?
                    .label(label)
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 8, y)], st));
                b.draw_series(DashedLineSeries::new(tput, 6, 4, st))?;
            }
        }
    }
    legend(&mut a, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// One period of a utilization experiment.
#[derive(Debug, PartialEq)]
struct UtilRow {
    t: f64,
    phase: String,
    util: f64,
    share: f64,
    limit: Option<f64>,
    /// Connections both instances accepted per second in the period.
    admitted: f64,
    offered: Option<f64>,
}

/// Parses a utilization CSV and its set point (`# set point N %`).
fn parse_util(text: &str) -> Result<(Vec<UtilRow>, Option<f64>)> {
    let mut rows = Vec::new();
    let mut set_point = None;
    for line in text.lines() {
        if let Some(c) = line.strip_prefix('#') {
            set_point = set_point_in(c).or(set_point);
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 9 || f[0] == "t_s" {
            continue;
        }
        let num = |i: usize, what: &str| -> Result<f64> {
            f[i].parse()
                .with_context(|| format!("bad {what} in {line:?}"))
        };
        let period = num(7, "period")?;
        rows.push(UtilRow {
            t: num(0, "time")?,
            phase: f[1].to_string(),
            util: num(2, "utilization")?,
            share: num(3, "share")?,
            limit: f[4].parse().ok(),
            admitted: if period > 0.0 {
                (num(5, "accepted")? + num(6, "accepted")?) / period
            } else {
                0.0
            },
            offered: f[8].parse().ok(),
        });
    }
    if rows.is_empty() {
        bail!("no data rows");
    }
    Ok((rows, set_point))
}

/// Draws a utilization experiment (the paper's Figure 10).
fn plot_util(rows: &[UtilRow], set_point: Option<f64>, png: &str, title: &str) -> Result<()> {
    let t_max = rows.iter().map(|r| r.t).fold(1.0, f64::max);
    let r_max = rows
        .iter()
        .flat_map(|r| [Some(r.admitted), r.offered])
        .flatten()
        .fold(1.0, f64::max)
        * 1.8;
    let root = BitMapBackend::new(png, (1200, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        // Up to 140 %: the legend sits above the curves, which stay below 100 %.
        .build_cartesian_2d(0.0..t_max, 0.0..140.0)?
        .set_secondary_coord(0.0..t_max, 0.0..r_max);
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("percent")
        .label_style(("sans-serif", 15))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("connections/s")
        .label_style(("sans-serif", 15))
        .draw()?;
    let pts = |get: &dyn Fn(&UtilRow) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| get(r).map(|v| (r.t, v)))
            .collect()
    };
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(230, 120, 20);
    let green = RGBColor(44, 160, 44);
    let purple = RGBColor(148, 103, 189);
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(LineSeries::new(
            pts(&|r| Some(r.util)),
            blue.stroke_width(2),
        ))?
        .label("CPU utilization of both instances (%)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
    if let Some(sp) = set_point {
        chart
            .draw_series(LineSeries::new(
                [(0.0, sp), (t_max, sp)],
                BLACK.stroke_width(1),
            ))?
            .label(format!("set point {sp} % (dashed: +-3 points)"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
        for d in [-3.0, 3.0] {
            chart.draw_series(DashedLineSeries::new(
                [(0.0, sp + d), (t_max, sp + d)],
                3,
                3,
                BLACK.stroke_width(1),
            ))?;
        }
    }
    chart
        .draw_series(LineSeries::new(
            pts(&|r| Some(r.share)),
            orange.stroke_width(2),
        ))?
        .label("clients sent to degraded content (%)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], orange.stroke_width(2)));
    let limit: Vec<(f64, f64)> = pts(&|r| r.limit.map(|l| l.min(r_max)));
    if !limit.is_empty() {
        chart
            .draw_secondary_series(LineSeries::new(limit, green.stroke_width(2)))?
            .label("degraded accept rate limit (/s, right axis)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green.stroke_width(2)));
    }
    chart
        .draw_secondary_series(LineSeries::new(
            pts(&|r| Some(r.admitted)),
            purple.stroke_width(1),
        ))?
        .label("admitted, both instances (/s, right axis)")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], purple.stroke_width(1)));
    let offered = pts(&|r| r.offered);
    if !offered.is_empty() {
        chart
            .draw_secondary_series(DashedLineSeries::new(offered, 6, 3, grey.stroke_width(2)))?
            .label("offered load (/s, right axis)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 8, y)], grey.stroke_width(2)));
    }
    // A dashed line and the name where each phase begins; the names of neighbouring
    // phases on two heights, so that short phases' names do not overlap.
    let mut last = "";
    let mut n = 0;
    for r in rows {
        if r.phase != last {
            last = &r.phase;
            n += 1;
            chart.draw_series(DashedLineSeries::new(
                [(r.t, 0.0), (r.t, 100.0)],
                6,
                4,
                grey.stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                r.phase.clone(),
                (r.t + t_max / 200.0, if n % 2 == 1 { 99.0 } else { 94.0 }),
                ("sans-serif", 13).into_font().color(&grey),
            )))?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Both plots' legend: the labelled series in a framed, nearly opaque box at `at`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, csv, png, rest @ ..] = &args[..] else {
        bail!("usage: qosplot CSV PNG [TITLE]");
    };
    let title = rest.first().map_or("openqos experiment", String::as_str);
    let text = std::fs::read_to_string(csv).with_context(|| csv.clone())?;
    let font =
        std::fs::read(FONT).with_context(|| format!("{FONT} (Debian: fonts-dejavu-core)"))?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable TrueType font"))?;
    if text
        .lines()
        .find(|l| !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("mode,"))
    {
        return plot_sweep(&parse_sweep(&text)?, png, title);
    }
    if text
        .lines()
        .find(|l| !l.starts_with('#'))
        .is_some_and(|l| l.starts_with("t_s,phase,utilization_pct,"))
    {
        let (rows, set_point) = parse_util(&text)?;
        return plot_util(&rows, set_point, png, title);
    }
    let (rows, set_point) = parse(&text)?;

    let t_max = rows.iter().map(|r| r.t).fold(0.0, f64::max);
    let d_max = rows
        .iter()
        .flat_map(|r| [r.premium, r.basic])
        .flatten()
        .chain(set_point)
        .fold(1.0, f64::max)
        * 1.1;
    // The basic class's admitted rate: accepted in a period over the period's length.
    let admitted: Vec<(f64, f64)> = rows
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].t - w[0].t;
            Some((w[1].t, w[1].basic_accepted? / dt)).filter(|_| dt > 0.0)
        })
        .collect();
    // The right axis goes to 1.5 times the highest admitted rate: a limit far above it
    // (the group left "unlimited") is drawn at the top.
    let admitted_max = admitted.iter().map(|a| a.1).fold(0.0, f64::max);
    let r_max = if admitted_max > 0.0 {
        admitted_max * 1.5
    } else {
        rows.iter().filter_map(|r| r.rate).fold(1.0, f64::max) * 1.1
    };
    let one_queue = rows.iter().all(|r| r.premium == r.basic);

    let root = BitMapBackend::new(png, (1200, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, (1.0..d_max).log_scale())?
        .set_secondary_coord(0.0..t_max, 0.0..r_max);
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("mean connection delay in the period (ms, log scale)")
        .label_style(("sans-serif", 15))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("basic class: connections/s")
        .label_style(("sans-serif", 15))
        .draw()?;

    let series = |get: fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| get(r).map(|v| (r.t, v)))
            .collect()
    };
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(230, 120, 20);
    chart
        .draw_series(LineSeries::new(series(|r| r.premium), blue.stroke_width(2)))?
        .label(if one_queue {
            "delay, every client (one queue)"
        } else {
            "premium delay"
        })
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], blue.stroke_width(2)));
    if !one_queue {
        chart
            .draw_series(LineSeries::new(series(|r| r.basic), orange.stroke_width(2)))?
            .label("basic delay")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], orange.stroke_width(2)));
    }
    if let Some(sp) = set_point {
        chart
            .draw_series(LineSeries::new(
                [(0.0, sp), (t_max, sp)],
                BLACK.stroke_width(1),
            ))?
            .label(format!("set point {sp} ms"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
        for f in [0.9, 1.1] {
            let band = chart.draw_series(DashedLineSeries::new(
                [(0.0, sp * f), (t_max, sp * f)],
                3,
                3,
                BLACK.stroke_width(1),
            ))?;
            if f < 1.0 {
                band.label("set point +-10 % (dashed)")
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 8, y)], BLACK.stroke_width(1)));
            }
        }
    }
    let green = RGBColor(44, 160, 44);
    let limit: Vec<(f64, f64)> = series(|r| r.rate)
        .into_iter()
        .map(|(t, v)| (t, v.min(r_max)))
        .collect();
    if !limit.is_empty() {
        chart
            .draw_secondary_series(LineSeries::new(limit, green.stroke_width(2)))?
            .label("basic accept rate limit (/s, right axis; unlimited: at the top)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green.stroke_width(2)));
    }
    let purple = RGBColor(148, 103, 189);
    if !admitted.is_empty() && !one_queue {
        chart
            .draw_secondary_series(LineSeries::new(admitted, purple.stroke_width(1)))?
            .label("basic admitted (/s, right axis)")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], purple.stroke_width(1)));
    }

    // Phase boundaries.
    let grey = RGBColor(120, 120, 120);
    let mut last = "";
    for r in &rows {
        if r.phase != last {
            last = &r.phase;
            chart.draw_series(DashedLineSeries::new(
                [(r.t, 1.0), (r.t, d_max)],
                6,
                4,
                grey.stroke_width(1),
            ))?;
            chart.draw_series(std::iter::once(Text::new(
                r.phase.clone(),
                (r.t, d_max * 0.8),
                ("sans-serif", 13).into_font().color(&grey),
            )))?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_rows_parse() {
        let text = "# comment\nmode,rate_per_class,class,replies_per_s,mean_ms,errors\nfifo,4,0,3.9,120.5,0\nprio,4,2,1.0,,12\n";
        let p = parse_sweep(text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].mean_ms, Some(120.5));
        assert_eq!((p[1].class, p[1].mean_ms), (2, None));
        assert!(parse_sweep("mode,rate\n").is_err());
    }

    #[test]
    fn utilization_rows_parse() {
        let text = "t_s,phase,utilization_pct,degraded_share_pct,degraded_rate_limit,full_accepted,degraded_accepted,period_s,offered_per_s\n2.0,controlled,31.5,48.2,30,12,10,2.00,12\n# set point 30 %\n";
        let (r, sp) = parse_util(text).unwrap();
        assert_eq!(sp, Some(30.0));
        assert_eq!(
            (r[0].util, r[0].share, r[0].limit),
            (31.5, 48.2, Some(30.0))
        );
        assert_eq!((r[0].admitted, r[0].offered), (11.0, Some(12.0)));
        assert!(parse_util("t_s,phase,utilization_pct\n2.0,x,bad,1,1,1,1,2,1\n").is_err());
    }
}
