//! Training report: SVG line charts (hand-written SVG, no dependency) of the training loss (raw
//! and smoothed), learning rate, gradient norm and every evaluation metric over steps, read from
//! a run's metrics.jsonl, and `report.html` — self-contained (the charts inline, no network).

use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

/// One line of a chart: a name, its points (x = step), a colour.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: &'static str,
}

const W: f64 = 640.0;
const H: f64 = 320.0;
const L: f64 = 64.0;
const R: f64 = 16.0;
const T: f64 = 28.0;
const B: f64 = 40.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn tick(v: f64) -> String {
    let a = v.abs();
    if v.fract() == 0.0 && a < 1e9 {
        format!("{v:.0}")
    } else if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Maps data to the plot area: (x, y) → SVG pixels (y grows downwards).
pub struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(series: &[Series]) -> Self {
        let pts = series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        if y1 - y0 < 1e-12 {
            (y0, y1) = (y0 - 0.5, y1 + 0.5);
        }
        Self { x0, x1, y0, y1 }
    }
    pub fn px(&self, x: f64, y: f64) -> (f64, f64) {
        (
            L + (x - self.x0) / (self.x1 - self.x0) * (W - L - R),
            T + (1.0 - (y - self.y0) / (self.y1 - self.y0)) * (H - T - B),
        )
    }
}

/// A line chart as an SVG document: axes with 5 ticks each, one polyline per series, a legend.
pub fn line_chart(title: &str, x_label: &str, series: &[Series]) -> String {
    let f = Frame::new(series);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<rect width="{W}" height="{H}" fill="white"/><text x="{}" y="16" text-anchor="middle" font-size="13">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    let (ax0, ay0) = (L, H - B);
    let _ = write!(
        s,
        r##"<line x1="{L}" y1="{T}" x2="{L}" y2="{ay0}" stroke="#444"/><line x1="{ax0}" y1="{ay0}" x2="{}" y2="{ay0}" stroke="#444"/>"##,
        W - R
    );
    for i in 0..=4 {
        let fr = i as f64 / 4.0;
        let mut xv = f.x0 + fr * (f.x1 - f.x0);
        if f.x1 - f.x0 >= 8.0 {
            xv = xv.round(); // steps are whole numbers
        }
        let yv = f.y0 + fr * (f.y1 - f.y0);
        let (xp, _) = f.px(xv, f.y0);
        let (_, yp) = f.px(f.x0, yv);
        let _ = write!(
            s,
            r##"<line x1="{xp:.1}" y1="{ay0}" x2="{xp:.1}" y2="{}" stroke="#444"/><text x="{xp:.1}" y="{}" text-anchor="middle">{}</text>"##,
            ay0 + 4.0,
            ay0 + 16.0,
            tick(xv)
        );
        let _ = write!(
            s,
            r##"<line x1="{}" y1="{yp:.1}" x2="{L}" y2="{yp:.1}" stroke="#444"/><line x1="{L}" y1="{yp:.1}" x2="{}" y2="{yp:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            L - 4.0,
            W - R,
            L - 6.0,
            yp + 4.0,
            tick(yv)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 6.0,
        esc(x_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| {
                let (a, b) = f.px(x, y);
                format!("{a:.2},{b:.2}")
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline data-series="{}" fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            esc(&ser.name),
            ser.color,
            pts.join(" ")
        );
        let ly = T + 6.0 + 14.0 * i as f64;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            W - R - 150.0,
            W - R - 130.0,
            ser.color,
            W - R - 125.0,
            ly + 4.0,
            esc(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Exponential moving average (weight `a` on the past), as TensorBoard's smoothing.
pub fn smooth(points: &[(f64, f64)], a: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(points.len());
    let mut m: Option<f64> = None;
    for &(x, y) in points {
        let v = match m {
            Some(p) => a * p + (1.0 - a) * y,
            None => y,
        };
        m = Some(v);
        out.push((x, v));
    }
    out
}

/// The charts of a run (file name, SVG), from its metrics.jsonl lines.
pub fn charts(lines: &[Value]) -> Vec<(String, String)> {
    let pick = |key: &str| -> Vec<(f64, f64)> {
        lines
            .iter()
            .filter_map(|v| Some((v["step"].as_f64()?, v.get(key)?.as_f64()?)))
            .collect()
    };
    let mut out = Vec::new();
    let loss = pick("loss");
    if !loss.is_empty() {
        let sm = smooth(&loss, 0.8);
        out.push((
            "loss.svg".to_string(),
            line_chart(
                "training loss",
                "step",
                &[
                    Series {
                        name: "loss".into(),
                        points: loss,
                        color: COLORS[0],
                    },
                    Series {
                        name: "smoothed (EMA 0.8)".into(),
                        points: sm,
                        color: COLORS[1],
                    },
                ],
            ),
        ));
    }
    for (key, title) in [
        ("lr", "learning rate"),
        ("grad_norm", "gradient norm (before clipping)"),
    ] {
        let p = pick(key);
        if !p.is_empty() {
            out.push((
                format!("{key}.svg"),
                line_chart(
                    title,
                    "step",
                    &[Series {
                        name: key.into(),
                        points: p,
                        color: COLORS[2],
                    }],
                ),
            ));
        }
    }
    // Evaluation: one series per metric.
    let mut names: Vec<String> = Vec::new();
    for v in lines {
        if let Some(Value::Object(e)) = v.get("eval") {
            for (k, x) in e {
                if x.is_number() && !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    // STS evaluations report 8 correlations; the cosine ones tell the story.
    if names.iter().any(|n| n.contains("cosine")) {
        names.retain(|n| n.contains("cosine"));
    }
    if !names.is_empty() {
        let series: Vec<Series> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Series {
                name: n.clone(),
                points: lines
                    .iter()
                    .filter_map(|v| Some((v["step"].as_f64()?, v.get("eval")?.get(n)?.as_f64()?)))
                    .collect(),
                color: COLORS[i % COLORS.len()],
            })
            .collect();
        out.push((
            "eval.svg".to_string(),
            line_chart("evaluation", "step", &series),
        ));
    }
    out
}

/// Writes the charts and `report.html` into a training run's output directory.
pub fn write_train_report(output: &Path, title: &str) -> Result<()> {
    let p = output.join("metrics.jsonl");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let charts = charts(&lines);
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>body{{font-family:sans-serif;max-width:700px;margin:2em auto}}svg{{display:block;margin:1em 0;border:1px solid #ddd}}</style></head><body><h1>{0}</h1>",
        esc(title)
    );
    let last_loss = lines.iter().rev().find_map(|v| v["loss"].as_f64());
    let steps = lines
        .iter()
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0);
    let _ = write!(
        html,
        "<p>{steps} optimizer steps; last logged loss {}.</p>",
        last_loss
            .map(|l| format!("{l:.4}"))
            .unwrap_or_else(|| "–".into())
    );
    for (name, svg) in &charts {
        crate::fsutil::write_atomic(&output.join(name), svg.as_bytes())?;
        html.push_str(svg);
    }
    html.push_str("</body></html>\n");
    crate::fsutil::write_atomic(&output.join("report.html"), html.as_bytes())
}

/// A scatter plot (one circle per point) as an SVG document.
pub fn scatter_chart(title: &str, x_label: &str, y_label: &str, pts: &[(f64, f64)]) -> String {
    // The line chart's frame and axes for these points (an invisible polyline), then circles.
    let ser = [Series {
        name: String::new(),
        points: pts.to_vec(),
        color: "none",
    }];
    let f = Frame::new(&ser);
    let mut s = line_chart(title, x_label, &ser).replace("</svg>\n", "");
    let _ = write!(
        s,
        r#"<text x="14" y="{0}" transform="rotate(-90 14 {0})" text-anchor="middle">{1}</text><g data-series="points" fill="{2}" fill-opacity="0.45">"#,
        H / 2.0,
        esc(y_label),
        COLORS[0]
    );
    for &(x, y) in pts.iter().filter(|(x, y)| x.is_finite() && y.is_finite()) {
        let (a, b) = f.px(x, y);
        let _ = write!(s, r#"<circle cx="{a:.2}" cy="{b:.2}" r="2"/>"#);
    }
    s.push_str("</g></svg>\n");
    s
}

/// Histograms of two samples on shared bins (e.g. cosine of positive and of negative pairs).
pub fn histogram_chart(title: &str, a: (&str, &[f64]), b: (&str, &[f64]), bins: usize) -> String {
    let all = a.1.iter().chain(b.1).copied().filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    let (lo, hi) = if lo > hi {
        (0.0, 1.0)
    } else if hi - lo < 1e-12 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo, hi)
    };
    let count = |v: &[f64]| -> Vec<usize> {
        let mut c = vec![0usize; bins];
        for x in v.iter().filter(|x| x.is_finite()) {
            let i = (((x - lo) / (hi - lo)) * bins as f64).floor() as usize;
            c[i.min(bins - 1)] += 1;
        }
        c
    };
    let (ca, cb) = (count(a.1), count(b.1));
    let width = (hi - lo) / bins as f64;
    let top = ca.iter().chain(&cb).copied().max().unwrap_or(1).max(1) as f64;
    // Frame: x = cosine, y = count (0..top), drawn as step outlines via the line chart.
    let step = |c: &[usize]| -> Vec<(f64, f64)> {
        let mut p = vec![(lo, 0.0)];
        for (i, &n) in c.iter().enumerate() {
            let x0 = lo + i as f64 * width;
            p.push((x0, n as f64));
            p.push((x0 + width, n as f64));
        }
        p.push((hi, 0.0));
        p
    };
    let mut s = line_chart(
        title,
        "cosine similarity",
        &[
            Series {
                name: a.0.to_string(),
                points: step(&ca),
                color: COLORS[2],
            },
            Series {
                name: b.0.to_string(),
                points: step(&cb),
                color: COLORS[3],
            },
            Series {
                name: String::new(),
                points: vec![(lo, top)],
                color: "none",
            },
        ],
    );
    let counts = |c: &[usize]| {
        c.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    s = s.replace(
        "</svg>\n",
        &format!(
            "<desc data-bins=\"{bins}\" data-lo=\"{lo}\" data-hi=\"{hi}\" data-counts-a=\"{}\" data-counts-b=\"{}\"/></svg>\n",
            counts(&ca),
            counts(&cb)
        ),
    );
    s
}

/// `eval --report DIR`: the task's plot (`scatter.svg` for STS, `histogram.svg` for pair
/// classification and triplets) and `report.html` with the metrics table.
pub fn write_eval_report(dir: &Path, title: &str, m: &crate::eval::Metrics) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (name, svg) = match &m.points {
        Some(crate::eval::EvalPoints::Scatter { gold, pred }) => {
            let pts: Vec<(f64, f64)> = gold.iter().copied().zip(pred.iter().copied()).collect();
            (
                "scatter.svg",
                scatter_chart(
                    "predicted cosine vs gold score",
                    "gold score",
                    "cosine similarity",
                    &pts,
                ),
            )
        }
        Some(crate::eval::EvalPoints::Split { pos, neg }) => (
            "histogram.svg",
            histogram_chart(
                "cosine similarity of positives and negatives",
                ("positives", pos),
                ("negatives", neg),
                30,
            ),
        ),
        None => ("", String::new()),
    };
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>body{{font-family:sans-serif;max-width:700px;margin:2em auto}}td{{padding:2px 12px}}svg{{display:block;margin:1em 0;border:1px solid #ddd}}</style></head><body><h1>{0}</h1><table>",
        esc(title)
    );
    for (k, v) in &m.values {
        let mark = if *k == m.primary { " (primary)" } else { "" };
        let _ = write!(html, "<tr><td>{}{mark}</td><td>{v:.4}</td></tr>", esc(k));
    }
    html.push_str("</table>");
    if !name.is_empty() {
        crate::fsutil::write_atomic(&dir.join(name), svg.as_bytes())?;
        html.push_str(&svg);
    }
    html.push_str("</body></html>\n");
    crate::fsutil::write_atomic(&dir.join("report.html"), html.as_bytes())
}
