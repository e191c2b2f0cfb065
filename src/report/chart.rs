//! SVG charts, hand-written (no plotting dependency: the output stays a few kilobytes of plain
//! SVG that any browser shows): line charts, point series, scatter plots and histograms with
//! round tick values (1-2-5 steps), axis titles on both axes, the legend in its own row above the
//! plot (never over the data), an optional marker (the best evaluation) and an optional vertical
//! line (a decision threshold). Depends on nothing but std.

use std::fmt::Write;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Line,
    /// A line with a dot at every point (few points, e.g. evaluations: one point still shows).
    LineAndPoints,
    /// Dots only (scatter plots).
    Points,
}

/// One series of a chart: a name, its points, a colour.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
    pub style: Style,
}

/// A chart to draw.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    /// Start the y axis at 0 (rates, counts).
    pub y_from_zero: bool,
    /// A labelled marker at a point (e.g. "best").
    pub marker: Option<((f64, f64), String)>,
    /// A labelled vertical line at an x value (e.g. a decision threshold).
    pub vline: Option<(f64, String)>,
    /// x values are whole numbers (optimizer steps): ticks at least 1 apart.
    pub x_integer: bool,
}

pub const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const W: f64 = 680.0;
const H: f64 = 340.0;
const L: f64 = 74.0;
const R: f64 = 18.0;
const B: f64 = 46.0;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Round tick positions covering `[lo, hi]`: a step of 1, 2 or 5 × 10ᵏ giving at most `max`
/// intervals, the range widened to whole steps. Returns (lo, hi, ticks).
pub fn nice_ticks(lo: f64, hi: f64, max: usize) -> (f64, f64, Vec<f64>) {
    nice_ticks_min(lo, hi, max, 0.0)
}

/// [`nice_ticks`] with a smallest step.
fn nice_ticks_min(lo: f64, hi: f64, max: usize, min_step: f64) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let raw = (hi - lo) / max.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag)
        .max(min_step);
    let (a, b) = ((lo / step).floor() * step, (hi / step).ceil() * step);
    let n = ((b - a) / step).round() as usize;
    let ticks = (0..=n).map(|i| a + i as f64 * step).collect();
    (a, b, ticks)
}

/// A tick label: as few digits as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    if v.abs() < step * 1e-9 {
        return "0".into();
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

struct Frame {
    x: (f64, f64),
    y: (f64, f64),
    top: f64,
}

impl Frame {
    fn px(&self, x: f64, y: f64) -> (f64, f64) {
        let (x0, x1) = self.x;
        let (y0, y1) = self.y;
        (
            L + (x - x0) / (x1 - x0) * (W - L - R),
            self.top + (1.0 - (y - y0) / (y1 - y0)) * (H - self.top - B),
        )
    }
}

fn finite(p: &(f64, f64)) -> bool {
    p.0.is_finite() && p.1.is_finite()
}

impl Chart<'_> {
    /// The chart as an SVG document.
    pub fn svg(&self) -> String {
        let pts = self
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| finite(p));
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if let Some((v, _)) = &self.vline {
            (x0, x1) = (x0.min(*v), x1.max(*v));
        }
        if self.y_from_zero {
            y0 = y0.min(0.0);
        }
        let (xa, xb, xt) = nice_ticks_min(x0, x1, 6, if self.x_integer { 1.0 } else { 0.0 });
        let (ya, yb, yt) = nice_ticks(y0, y1, 5);
        let named: Vec<&Series> = self.series.iter().filter(|s| !s.name.is_empty()).collect();
        let top = if named.is_empty() { 30.0 } else { 48.0 };
        let f = Frame {
            x: (xa, xb),
            y: (ya, yb),
            top,
        };
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11"><rect width="{W}" height="{H}" fill="white"/><text x="{}" y="16" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
            W / 2.0,
            esc(self.title)
        );
        // Legend: one row under the title.
        let mut lx = L;
        for ser in &named {
            let _ = write!(
                s,
                r#"<g class="legend"><line x1="{lx}" y1="30" x2="{}" y2="30" stroke="{}" stroke-width="2"/><text x="{}" y="34">{}</text></g>"#,
                lx + 18.0,
                ser.color,
                lx + 22.0,
                esc(&ser.name)
            );
            lx += 34.0 + 6.5 * ser.name.chars().count() as f64;
        }
        let bottom = H - B;
        let xstep = xt.get(1).map(|b| b - xt[0]).unwrap_or(1.0);
        let ystep = yt.get(1).map(|b| b - yt[0]).unwrap_or(1.0);
        for &x in &xt {
            let (p, _) = f.px(x, ya);
            let _ = write!(
                s,
                r##"<line x1="{p:.1}" y1="{top}" x2="{p:.1}" y2="{bottom}" stroke="#f0f0f0"/><line x1="{p:.1}" y1="{bottom}" x2="{p:.1}" y2="{}" stroke="#444"/><text x="{p:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bottom + 4.0,
                bottom + 16.0,
                tick_label(x, xstep)
            );
        }
        for &y in &yt {
            let (_, p) = f.px(xa, y);
            let _ = write!(
                s,
                r##"<line x1="{L}" y1="{p:.1}" x2="{}" y2="{p:.1}" stroke="#eee"/><line x1="{}" y1="{p:.1}" x2="{L}" y2="{p:.1}" stroke="#444"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                W - R,
                L - 4.0,
                L - 6.0,
                p + 4.0,
                tick_label(y, ystep)
            );
        }
        let _ = write!(
            s,
            r##"<line x1="{L}" y1="{top}" x2="{L}" y2="{bottom}" stroke="#444"/><line x1="{L}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#444"/><text class="x-title" x="{}" y="{}" text-anchor="middle">{}</text><text class="y-title" x="14" y="{ymid:.1}" transform="rotate(-90 14 {ymid:.1})" text-anchor="middle">{}</text>"##,
            W - R,
            (L + W - R) / 2.0,
            H - 8.0,
            esc(self.x_label),
            esc(self.y_label),
            ymid = (top + bottom) / 2.0,
        );
        for ser in self.series {
            let pts: Vec<(f64, f64)> = ser
                .points
                .iter()
                .copied()
                .filter(finite)
                .map(|(x, y)| f.px(x, y))
                .collect();
            if ser.style != Style::Points {
                let text: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.2},{b:.2}")).collect();
                let _ = write!(
                    s,
                    r#"<polyline data-series="{}" fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                    esc(&ser.name),
                    ser.color,
                    text.join(" ")
                );
            }
            if ser.style != Style::Line {
                let _ = write!(
                    s,
                    r#"<g data-series="{}" fill="{}" fill-opacity="{}">"#,
                    esc(if ser.style == Style::Points {
                        "points"
                    } else {
                        &ser.name
                    }),
                    ser.color,
                    if ser.style == Style::Points {
                        0.45
                    } else {
                        1.0
                    }
                );
                let r = if ser.style == Style::Points { 2.0 } else { 3.0 };
                for (a, b) in &pts {
                    let _ = write!(s, r#"<circle cx="{a:.2}" cy="{b:.2}" r="{r}"/>"#);
                }
                s.push_str("</g>");
            }
        }
        if let Some((v, label)) = &self.vline {
            let (p, _) = f.px(*v, ya);
            let _ = write!(
                s,
                r##"<line class="vline" x1="{p:.1}" y1="{top}" x2="{p:.1}" y2="{bottom}" stroke="#333" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" >{}</text>"##,
                p + 4.0,
                top + 12.0,
                esc(label)
            );
        }
        if let Some(((x, y), label)) = &self.marker {
            let (a, b) = f.px(*x, *y);
            let _ = write!(
                s,
                r##"<g class="marker"><rect x="{:.1}" y="{:.1}" width="9" height="9" transform="rotate(45 {a:.1} {b:.1})" fill="none" stroke="#d62728" stroke-width="2"/><text x="{:.1}" y="{:.1}" fill="#d62728">{}</text></g>"##,
                a - 4.5,
                b - 4.5,
                a + 8.0,
                b - 8.0,
                esc(label)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_one_two_five_steps_covering_the_range() {
        let (a, b, t) = nice_ticks(0.0, 360.0, 6);
        assert_eq!((a, b), (0.0, 400.0));
        assert_eq!(t, vec![0.0, 100.0, 200.0, 300.0, 400.0]);
        let (_, _, t) = nice_ticks(0.8123, 0.8741, 5);
        assert_eq!(t.len(), 5, "{t:?}"); // 0.81 … 0.88 in steps of 0.02
        assert!((t[1] - t[0] - 0.02).abs() < 1e-12, "{t:?}");
        let (a, b, t) = nice_ticks(5.0, 5.0, 5);
        assert!(a <= 4.5 && b >= 5.5 && t.len() >= 2);
        assert_eq!(tick_label(2e-5, 1e-5), "2.0e-5");
        assert_eq!(tick_label(0.84, 0.02), "0.84");
        assert_eq!(tick_label(300.0, 100.0), "300");
    }

    #[test]
    fn one_point_still_shows_and_the_legend_sits_above_the_plot() {
        let s = [Series {
            name: "spearman_cosine".into(),
            points: vec![(40.0, 0.84)],
            color: COLORS[0],
            style: Style::LineAndPoints,
        }];
        let svg = Chart {
            title: "evaluation",
            x_label: "step",
            y_label: "value",
            series: &s,
            y_from_zero: false,
            marker: Some(((40.0, 0.84), "best 0.8400".into())),
            vline: None,
            x_integer: true,
        }
        .svg();
        assert_eq!(svg.matches("<circle").count(), 1, "{svg}");
        assert!(svg.contains("best 0.8400") && svg.contains("class=\"y-title\""));
        // The legend row (y = 30) is above the plot's top (48).
        assert!(svg.contains(r#"y1="30""#));
        // Steps are whole numbers: one point at step 40 gets ticks 39, 40, 41, not 39.4 ….
        assert!(
            svg.contains(">40</text>") && !svg.contains(">39.4</text>"),
            "{svg}"
        );
    }
}
