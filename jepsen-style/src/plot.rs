//! The run's timeline (`timeline.svg`): one panel per node with the latency of every request
//! sent through it (data plane dots, Admin API register operations), failures on the top
//! line, and the faults that touched the node shaded over their interval.

use std::path::Path;

use plotters::prelude::*;

use crate::checker::OpRec;
use crate::history::Kind;
use crate::nemesis::Fault;
use crate::workload::Sample;

const TOP_MS: f64 = 10_000.0;
const FLOOR_MS: f64 = 0.1;

fn fault_color(nemesis: &str) -> RGBColor {
    match nemesis {
        "partition" => RGBColor(128, 80, 200),
        "pause" => RGBColor(60, 130, 220),
        "membership" => RGBColor(230, 170, 20),
        "restart" => RGBColor(120, 120, 120),
        _ => RGBColor(220, 50, 50),
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn clamp_ms(ns: u64) -> f64 {
    (ns as f64 / 1e6).clamp(FLOOR_MS, TOP_MS)
}

/// Draws the timeline into `path`.
pub fn timeline(
    path: &Path,
    nodes: usize,
    samples: &[Sample],
    ops: &[OpRec],
    faults: &[Fault],
    title: &str,
) -> anyhow::Result<()> {
    let end = samples
        .iter()
        .map(|s| s.time + s.latency_ns)
        .chain(
            ops.iter()
                .filter(|o| o.complete != u64::MAX)
                .map(|o| o.complete),
        )
        .max()
        .map(secs)
        .unwrap_or(1.0)
        .max(1.0);
    let root = SVGBackend::new(path, (1400, 120 + 200 * nodes as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let (head, body) = root.split_vertically(120);
    head.draw(&Text::new(
        title.to_string(),
        (20, 15),
        ("sans-serif", 22).into_font(),
    ))
    .map_err(plot_err)?;
    let legend = [
        ("kill -9", fault_color("kill")),
        ("pause", fault_color("pause")),
        ("partition (cut-off side)", fault_color("partition")),
        ("rolling restart", fault_color("restart")),
        ("membership change", fault_color("membership")),
    ];
    for (i, (name, color)) in legend.iter().enumerate() {
        let x = 20 + 230 * i as i32;
        head.draw(&Rectangle::new(
            [(x, 55), (x + 18, 70)],
            color.mix(0.35).filled(),
        ))
        .map_err(plot_err)?;
        head.draw(&Text::new(
            name.to_string(),
            (x + 24, 55),
            ("sans-serif", 15).into_font(),
        ))
        .map_err(plot_err)?;
    }
    head.draw(&Text::new(
        "dots: proxy requests (green ok, red failed) · squares: Admin API register ops (blue ok, orange failed/unknown) · failures drawn at the top"
            .to_string(),
        (20, 88),
        ("sans-serif", 14).into_font(),
    ))
    .map_err(plot_err)?;

    for (node, area) in body.split_evenly((nodes, 1)).iter().enumerate() {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.node == node).collect();
        let healthy: Vec<&&Sample> = mine.iter().filter(|s| !s.faulted).collect();
        let ok = healthy.iter().filter(|s| s.ok).count();
        let caption = format!(
            "node {} — proxy: {} of {} requests ok while not faulted",
            node + 1,
            ok,
            healthy.len()
        );
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(24)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, (FLOOR_MS..TOP_MS).log_scale())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .y_desc("latency ms")
            .x_desc("seconds")
            .disable_x_mesh()
            .draw()
            .map_err(plot_err)?;
        chart
            .draw_series(faults.iter().filter(|f| f.nodes.contains(&node)).map(|f| {
                Rectangle::new(
                    [(secs(f.start_ns), FLOOR_MS), (secs(f.end_ns), TOP_MS)],
                    fault_color(&f.nemesis).mix(0.25).filled(),
                )
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(mine.iter().map(|s| {
                let (y, color) = if s.ok {
                    (clamp_ms(s.latency_ns), RGBColor(30, 150, 60))
                } else {
                    (TOP_MS * 0.8, RGBColor(220, 30, 30))
                };
                Circle::new((secs(s.time), y), 2, color.filled())
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(ops.iter().filter(|o| o.node == node).map(|o| {
                let (y, color) = if o.kind == Kind::Ok {
                    (clamp_ms(o.complete - o.invoke), RGBColor(40, 90, 200))
                } else {
                    (TOP_MS * 0.6, RGBColor(240, 140, 20))
                };
                let x = secs(o.invoke);
                Rectangle::new([(x, y), (x + end / 1400.0, y * 1.12)], color.filled())
            }))
            .map_err(plot_err)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e}")
}
