//! Line charts and scatter plots as SVG and PNG (plotters). Text is rendered with a TrueType
//! font read at run time (DejaVu Sans from Debian's `fonts-dejavu-core`, or `$CONTRAST_FONT`),
//! so no system font library is linked.

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Chart size in pixels (PNG) / user units (SVG).
pub const SIZE: (u32, u32) = (900, 520);

/// A line chart: one line per named series of `(x, y)` points.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// A 2-D scatter plot of points coloured by class (e.g. a PCA projection of embeddings).
#[derive(Debug, Clone, PartialEq)]
pub struct Scatter {
    pub title: String,
    /// `(x, y, class)`.
    pub points: Vec<(f64, f64, usize)>,
    /// Legend names of the classes (index = class); may be empty.
    pub class_names: Vec<String>,
}

/// Anything drawable by [`write_svg_png`].
pub trait Drawable {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;

    /// Write `<stem>.svg` and `<stem>.png`; returns both paths.
    fn write(&self, stem: &Path) -> Result<Vec<PathBuf>>
    where
        Self: Sized,
    {
        write_svg_png(self, stem)
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// `[lo, hi]` with a 5 % margin; a constant range is widened so that the line is visible.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * hi.abs().max(1.0) {
        let d = (hi.abs() * 0.1).max(1e-6);
        return (lo - d, hi + d);
    }
    (lo - 0.05 * span, hi + 0.05 * span)
}

fn color(i: usize) -> RGBColor {
    // Tableau 10: distinguishable, readable on white
    const C: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

impl Drawable for LineChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let pts = || self.series.iter().flat_map(|s| s.1.iter());
        if pts().next().is_none() {
            bail!("chart `{}` has no points", self.title);
        }
        let (x0, x1) = pts().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = pts().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let (x0, x1) = padded(x0, x1);
        let (y0, y1) = padded(y0, y1);
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&|x| {
                if x.fract() == 0.0 || x.abs() >= 100.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, (name, points)) in self.series.iter().enumerate() {
            let c = color(i);
            let style = c.stroke_width(2);
            if points.len() == 1 {
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                    .map_err(err)?
                    .label(name)
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
            } else {
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), style))
                    .map_err(err)?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    }
}

impl Drawable for Scatter {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        if self.points.is_empty() {
            bail!("scatter `{}` has no points", self.title);
        }
        let (x0, x1) = self
            .points
            .iter()
            .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = self
            .points
            .iter()
            .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let (x0, x1) = padded(x0, x1);
        let (y0, y1) = padded(y0, y1);
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("component 1")
            .y_desc("component 2")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        let classes = self.points.iter().map(|p| p.2).max().unwrap_or(0) + 1;
        for c in 0..classes {
            let col = color(c);
            let name = self
                .class_names
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("class {c}"));
            chart
                .draw_series(
                    self.points
                        .iter()
                        .filter(|p| p.2 == c)
                        .map(|p| Circle::new((p.0, p.1), 3, col.mix(0.7).filled())),
                )
                .map_err(err)?
                .label(name)
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, col.filled()));
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    }
}

/// One line of an [`OverlayChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Legend entry (`None`: not in the legend, e.g. one seed of several).
    pub label: Option<String>,
    pub points: Vec<(f64, f64)>,
    /// Index into the chart palette (one colour per side of a comparison).
    pub color: usize,
    /// Stroke width in pixels (thin seeds, bold mean).
    pub width: u32,
    /// 0–1.
    pub opacity: f64,
}

/// Several runs on one chart: each seed a thin line, the mean bold, one colour per side.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    /// Pixels (PNG) / user units (SVG).
    pub size: (u32, u32),
}

impl Drawable for OverlayChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let pts = || self.lines.iter().flat_map(|l| l.points.iter());
        if pts().next().is_none() {
            bail!("chart `{}` has no points", self.title);
        }
        let (x0, x1) = pts().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = pts().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let (x0, x1) = padded(x0, x1);
        let (y0, y1) = padded(y0, y1);
        // text scales with the chart: small multiples get small text
        let small = self.size.0 < 600;
        let (title_px, label_px, y_area) = if small { (14, 11, 52) } else { (18, 13, 70) };
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", title_px))
            .margin(if small { 6 } else { 12 })
            .x_label_area_size(if small { 28 } else { 40 })
            .y_label_area_size(y_area)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_labels(if small { 4 } else { 8 })
            .y_labels(if small { 5 } else { 8 })
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| crate::format::sig(*y, 3))
            .label_style(("sans-serif", label_px))
            .draw()
            .map_err(err)?;
        let mut legend = false;
        for l in &self.lines {
            let c = color(l.color).mix(l.opacity.clamp(0.05, 1.0));
            let style = c.stroke_width(l.width.max(1));
            let series = if l.points.len() == 1 {
                chart
                    .draw_series(
                        l.points
                            .iter()
                            .map(|&p| Circle::new(p, l.width + 2, c.filled())),
                    )
                    .map_err(err)?
            } else {
                chart
                    .draw_series(LineSeries::new(l.points.iter().copied(), style))
                    .map_err(err)?
            };
            if let Some(label) = &l.label {
                legend = true;
                series
                    .label(label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
        }
        if legend {
            // the legend goes into the right-hand corner with fewer points under it
            let right = |up: bool| {
                pts()
                    .filter(|p| (p.0 - x0) / (x1 - x0) > 0.55)
                    .filter(|p| ((p.1 - y0) / (y1 - y0) > 0.5) == up)
                    .count()
            };
            let position = if right(true) <= right(false) {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::LowerRight
            };
            chart
                .configure_series_labels()
                .label_font(("sans-serif", label_px))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(position)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
        Ok(())
    }
}

/// `d` rendered as an SVG document of `size` (for embedding in a page).
pub fn svg_string<D: Drawable>(d: &D, size: (u32, u32)) -> Result<String> {
    crate::font::ensure_font()?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        d.draw(&root)?;
    }
    Ok(svg)
}

/// Render `d` to `<stem>.svg` and `<stem>.png` (atomically).
pub fn write_svg_png<D: Drawable>(d: &D, stem: &Path) -> Result<Vec<PathBuf>> {
    crate::font::ensure_font()?;
    let (w, h) = SIZE;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        d.draw(&root)?;
    }
    let svg_path = stem.with_extension("svg");
    crate::write_atomic(&svg_path, svg.as_bytes())?;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        d.draw(&root)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).context("chart buffer size")?;
    let png_path = stem.with_extension("png");
    crate::images::save_png(&img, &png_path)?;
    Ok(vec![svg_path, png_path])
}
