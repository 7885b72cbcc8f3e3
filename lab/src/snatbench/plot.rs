//! Plots of a run, as PNG and SVG: utilisation vs time, failures vs offered flows, allocation
//! latency vs occupancy.
//!
//! Text is drawn with plotters' `ab_glyph` backend and the Hack font shipped inside the
//! `epaint_default_fonts` crate, so no system font or fontconfig is needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Report;

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The font is valid TrueType shipped in the crate; a failure only loses labels.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::HACK_REGULAR,
        );
    });
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn utilisation<DB: DrawingBackend>(r: &Report, area: DrawingArea<DB, Shift>) -> PlotResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let t_max = r.samples.last().map_or(1, |s| s.t_s).max(1) as f64;
    let mut c = ChartBuilder::on(&area)
        .caption(
            format!(
                "{}: SNAT port utilisation ({} x {} IP)",
                r.scenario, r.mapping, r.public_ips
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..t_max, 0f64..100f64)?;
    c.configure_mesh()
        .x_desc("virtual time (s)")
        .y_desc("ports in use (%)")
        .draw()?;
    for i in 0..usize::from(r.public_ips) {
        let col = COLOURS[i % COLOURS.len()];
        c.draw_series(LineSeries::new(
            r.samples
                .iter()
                .map(|s| (s.t_s as f64, 100.0 * s.utilisation[i])),
            col.stroke_width(2),
        ))?
        .label(format!("public IP {i}"))
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], col));
    }
    let fails: Vec<(f64, f64)> = r
        .samples
        .iter()
        .filter(|s| s.failures() > 0)
        .map(|s| (s.t_s as f64, 2.0))
        .collect();
    if !fails.is_empty() {
        c.draw_series(fails.into_iter().map(|p| Circle::new(p, 2, RED.filled())))?
            .label("second with refusals")
            .legend(|(x, y)| Circle::new((x + 7, y), 3, RED.filled()));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()?;
    area.present()?;
    Ok(())
}

fn failures<DB: DrawingBackend>(r: &Report, area: DrawingArea<DB, Shift>) -> PlotResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let mut pts = vec![(0f64, 0f64)];
    let (mut off, mut fail) = (0u64, 0u64);
    for s in &r.samples {
        off += s.offered;
        fail += s.failures();
        pts.push((off as f64, fail as f64));
    }
    let x_max = (off.max(1)) as f64;
    let y_max = (fail.max(1)) as f64 * 1.05;
    let mut c = ChartBuilder::on(&area)
        .caption(
            format!("{}: refused vs offered connections", r.scenario),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    c.configure_mesh()
        .x_desc("connections offered (cumulative)")
        .y_desc("refused (cumulative)")
        .draw()?;
    c.draw_series(LineSeries::new(pts, COLOURS[1].stroke_width(2)))?;
    area.present()?;
    Ok(())
}

fn latency<DB: DrawingBackend>(r: &Report, area: DrawingArea<DB, Shift>) -> PlotResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let rows: Vec<(f64, f64, f64)> = r
        .latency
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            Some((
                i as f64 * 10.0 + 5.0,
                f64::from(b.p50_ns?),
                f64::from(b.p99_ns?),
            ))
        })
        .collect();
    let y_max = rows.iter().map(|x| x.2).fold(1.0, f64::max) * 1.1;
    let mut c = ChartBuilder::on(&area)
        .caption(
            format!("{}: SYN process() wall time vs occupancy", r.scenario),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..110f64, 0f64..y_max)?;
    c.configure_mesh()
        .x_desc("ports in use when the SYN arrived (%; 105 = all busy)")
        .y_desc("ns")
        .draw()?;
    c.draw_series(LineSeries::new(
        rows.iter().map(|x| (x.0, x.1)),
        COLOURS[0].stroke_width(2),
    ))?
    .label("p50")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], COLOURS[0]));
    c.draw_series(LineSeries::new(
        rows.iter().map(|x| (x.0, x.2)),
        COLOURS[1].stroke_width(2),
    ))?
    .label("p99")
    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], COLOURS[1]));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    area.present()?;
    Ok(())
}

/// Writes `<scenario>-<mapping>-<n>ip-{utilisation,failures,latency}.{png,svg}` into `dir`;
/// returns the files written.
pub fn write_plots(r: &Report, dir: &Path) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    register_font();
    std::fs::create_dir_all(dir)?;
    let stem = format!(
        "{}-{}-{}ip",
        r.scenario,
        r.mapping.to_ascii_lowercase(),
        r.public_ips
    );
    let mut out = Vec::new();
    type Draw = fn(&Report, &Path, &Path) -> PlotResult;
    let kinds: [(&str, Draw); 3] = [
        ("utilisation", |r, png, svg| {
            utilisation(r, BitMapBackend::new(png, (900, 500)).into_drawing_area())?;
            utilisation(r, SVGBackend::new(svg, (900, 500)).into_drawing_area())
        }),
        ("failures", |r, png, svg| {
            failures(r, BitMapBackend::new(png, (900, 500)).into_drawing_area())?;
            failures(r, SVGBackend::new(svg, (900, 500)).into_drawing_area())
        }),
        ("latency", |r, png, svg| {
            latency(r, BitMapBackend::new(png, (900, 500)).into_drawing_area())?;
            latency(r, SVGBackend::new(svg, (900, 500)).into_drawing_area())
        }),
    ];
    for (kind, draw) in kinds {
        let png = dir.join(format!("{stem}-{kind}.png"));
        let svg = dir.join(format!("{stem}-{kind}.svg"));
        draw(r, &png, &svg)?;
        out.push(png);
        out.push(svg);
    }
    Ok(out)
}
