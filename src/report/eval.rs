//! `eval --report`'s page: the metrics table, and a scatter of cosine against the gold score,
//! histograms of positive and negative pairs with the decision threshold, or for retrieval the
//! per-query nDCG@10 distribution and the recall@k curve. Depends on `report`, `eval::Metrics`,
//! `fsutil`.

use super::{esc, page_head, Chart, Series, Style, COLORS};
use anyhow::{Context, Result};
use std::fmt::Write;
use std::path::Path;

/// A scatter plot (one dot per point) as an SVG document.
pub fn scatter_chart(title: &str, x_label: &str, y_label: &str, pts: &[(f64, f64)]) -> String {
    let series = [Series {
        name: String::new(),
        points: pts.to_vec(),
        color: COLORS[0],
        style: Style::Points,
    }];
    Chart {
        title,
        x_label,
        y_label,
        series: &series,
        y_from_zero: false,
        marker: None,
        vline: None,
        x_integer: false,
    }
    .svg()
}

/// Histograms of two samples on shared bins (e.g. cosine of positive and of negative pairs),
/// with an optional labelled threshold.
pub fn histogram_chart(
    title: &str,
    a: (&str, &[f64]),
    b: (&str, &[f64]),
    bins: usize,
    threshold: Option<f64>,
) -> String {
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
    // Step outlines of the bars.
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
    let series = [
        Series {
            name: a.0.to_string(),
            points: step(&ca),
            color: COLORS[2],
            style: Style::Line,
        },
        Series {
            name: b.0.to_string(),
            points: step(&cb),
            color: COLORS[3],
            style: Style::Line,
        },
    ];
    let s = Chart {
        title,
        x_label: "cosine similarity",
        y_label: "pairs per bin",
        series: &series,
        y_from_zero: true,
        marker: None,
        vline: threshold.map(|t| (t, format!("threshold {t:.4}"))),
        x_integer: false,
    }
    .svg();
    let counts = |c: &[usize]| {
        c.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    s.replace(
        "</svg>\n",
        &format!(
            "<desc data-bins=\"{bins}\" data-lo=\"{lo}\" data-hi=\"{hi}\" data-counts-a=\"{}\" data-counts-b=\"{}\"/></svg>\n",
            counts(&ca),
            counts(&cb)
        ),
    )
}

/// A histogram of one sample, values in [0, 1] (e.g. per-query nDCG).
fn one_histogram(title: &str, x_label: &str, v: &[f64], bins: usize) -> String {
    let mut c = vec![0usize; bins];
    for x in v.iter().filter(|x| x.is_finite()) {
        c[((x.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1)] += 1;
    }
    let w = 1.0 / bins as f64;
    let mut p = vec![(0.0, 0.0)];
    for (i, &n) in c.iter().enumerate() {
        p.push((i as f64 * w, n as f64));
        p.push(((i + 1) as f64 * w, n as f64));
    }
    p.push((1.0, 0.0));
    let series = [Series {
        name: String::new(),
        points: p,
        color: COLORS[0],
        style: Style::Line,
    }];
    Chart {
        title,
        x_label,
        y_label: "queries per bin",
        series: &series,
        y_from_zero: true,
        marker: None,
        vline: None,
        x_integer: false,
    }
    .svg()
}

/// `eval --report DIR`: the task's plot (`scatter.svg` for STS, `histogram.svg` for pair
/// classification and triplets) and `report.html` with the metrics table.
pub fn write_eval_report(dir: &Path, title: &str, m: &crate::eval::Metrics) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (name, svg) = match &m.points {
        Some(crate::eval::EvalPoints::Scatter { gold, pred, scale }) => {
            // Gold scores back in the file's own scale (STS-B: 0–5).
            let pts: Vec<(f64, f64)> = gold
                .iter()
                .map(|g| g * scale)
                .zip(pred.iter().copied())
                .collect();
            let x = if *scale == 1.0 {
                "gold score".to_string()
            } else {
                format!("gold score (as in the file: 0–{scale})")
            };
            (
                "scatter.svg",
                scatter_chart(
                    "predicted cosine vs gold score",
                    &x,
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
                m.get("cosine_accuracy_threshold"),
            ),
        ),
        Some(crate::eval::EvalPoints::Ranking { ndcg, recall_at }) => {
            // Two plots: the per-query nDCG@10 distribution, and recall against k.
            let hist = one_histogram("nDCG@10 of each query", "nDCG@10", ndcg, 20);
            crate::fsutil::write_atomic(&dir.join("ndcg.svg"), hist.as_bytes())?;
            let curve = [Series {
                name: "cosine recall@k".into(),
                points: recall_at.iter().map(|&(k, r)| (k as f64, r)).collect(),
                color: COLORS[0],
                style: Style::Line,
            }];
            let svg = Chart {
                title: "recall@k (cosine)",
                x_label: "k (documents retrieved)",
                y_label: "mean recall",
                series: &curve,
                y_from_zero: true,
                marker: None,
                vline: None,
                x_integer: true,
            }
            .svg();
            ("recall.svg", format!("{hist}{svg}"))
        }
        None => ("", String::new()),
    };
    let mut html = page_head(title);
    html.push_str("<table>");
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
