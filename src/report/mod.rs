//! Reports: a training run's `report.html` (a summary panel — model, data, loss, key
//! hyperparameters, results — then charts of the training loss raw and smoothed, the learning
//! rate, the gradient norm and every evaluation metric, the best evaluation marked), read from
//! the run's metrics.jsonl and train_config.json; and `eval --report`'s page (metrics, and a
//! scatter of cosine against the gold score in the data's own scale, or histograms of positive
//! and negative pairs with the decision threshold, or for retrieval the per-query nDCG@10
//! distribution and the recall@k curve). Self-contained HTML, charts inline
//! (`chart.rs`, hand-written SVG); the evaluation page is `eval.rs`. Depends on `eval::Metrics`,
//! `fsutil`.

pub mod chart;
mod eval;

pub use eval::{histogram_chart, scatter_chart, write_eval_report};

use anyhow::{Context, Result};
pub use chart::{esc, Chart, Series, Style, COLORS};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

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

fn chart(title: &str, y_label: &str, series: &[Series], y_from_zero: bool) -> String {
    Chart {
        title,
        x_label: "optimizer step",
        y_label,
        series,
        y_from_zero,
        marker: None,
        vline: None,
        x_integer: true,
    }
    .svg()
}

/// The evaluation of a metrics line if it is of the first evaluation set (the one that decides
/// the best model); the other sets' lines carry `eval_index` ≥ 1 and get their own charts.
fn primary_eval(v: &Value) -> Option<&Value> {
    (v.get("eval_index").and_then(Value::as_u64).unwrap_or(0) == 0)
        .then(|| v.get("eval"))
        .flatten()
}

/// The charts of the evaluation sets after the first: (file name, SVG) each.
fn other_eval_charts(lines: &[Value]) -> Vec<(String, String)> {
    let max = lines
        .iter()
        .filter_map(|v| v.get("eval_index").and_then(Value::as_u64))
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    for i in 1..=max {
        let set: Vec<&Value> = lines
            .iter()
            .filter(|v| v.get("eval_index").and_then(Value::as_u64) == Some(i))
            .collect();
        let Some(first) = set.first() else { continue };
        let name = first["eval_set"].as_str().unwrap_or("").to_string();
        let primary = first["eval"]["primary_metric"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let points: Vec<(f64, f64)> = set
            .iter()
            .filter_map(|v| Some((v["step"].as_f64()?, v["eval"].get(&primary)?.as_f64()?)))
            .collect();
        let series = [Series {
            name: primary.clone(),
            points,
            color: COLORS[(i as usize) % COLORS.len()],
            style: Style::LineAndPoints,
        }];
        let title = format!("evaluation: {name}");
        let svg = Chart {
            title: &title,
            x_label: "optimizer step",
            y_label: "metric value",
            series: &series,
            y_from_zero: false,
            marker: None,
            vline: None,
            x_integer: true,
        }
        .svg();
        out.push((format!("eval-{i}.svg"), svg));
    }
    out
}

/// The evaluation metrics worth plotting: STS's eight correlations are narrowed to the cosine
/// ones; the primary metric of each evaluation line is remembered for the best marker.
fn eval_names(lines: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for v in lines {
        if let Some(Value::Object(e)) = primary_eval(v) {
            for (k, x) in e {
                if x.is_number() && !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
    }
    if names.iter().any(|n| n.contains("cosine")) {
        names.retain(|n| n.contains("cosine"));
    }
    names
}

/// The charts of a run (file name, SVG), from its metrics.jsonl lines.
pub fn charts(lines: &[Value]) -> Vec<(String, String)> {
    let pick = |key: &str| -> Vec<(f64, f64)> {
        lines
            .iter()
            .filter_map(|v| Some((v["step"].as_f64()?, v.get(key)?.as_f64()?)))
            .collect()
    };
    let line = |name: &str, points, color| Series {
        name: name.into(),
        points,
        color,
        style: Style::Line,
    };
    let mut out = Vec::new();
    let loss = pick("loss");
    if !loss.is_empty() {
        let sm = smooth(&loss, 0.8);
        let style = if loss.len() <= 2 {
            Style::LineAndPoints
        } else {
            Style::Line
        };
        let series = [
            Series {
                style,
                ..line("loss", loss, COLORS[0])
            },
            line("smoothed (EMA 0.8)", sm, COLORS[1]),
        ];
        out.push((
            "loss.svg".into(),
            chart(
                "training loss",
                "loss (mean of each log window)",
                &series,
                false,
            ),
        ));
    }
    for (key, title, y, zero) in [
        ("lr", "learning rate", "learning rate", true),
        (
            "grad_norm",
            "gradient norm (before clipping)",
            "global L2 norm",
            true,
        ),
    ] {
        let p = pick(key);
        if !p.is_empty() {
            out.push((
                format!("{key}.svg"),
                chart(title, y, &[line(key, p, COLORS[2])], zero),
            ));
        }
    }
    let names = eval_names(lines);
    if !names.is_empty() {
        let series: Vec<Series> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Series {
                name: n.clone(),
                points: lines
                    .iter()
                    .filter_map(|v| Some((v["step"].as_f64()?, primary_eval(v)?.get(n)?.as_f64()?)))
                    .collect(),
                color: COLORS[i % COLORS.len()],
                style: Style::LineAndPoints,
            })
            .collect();
        let marker =
            best_eval(lines).map(|(step, name, v)| ((step, v), format!("best {name} {v:.4}")));
        let svg = Chart {
            title: "evaluation",
            x_label: "optimizer step",
            y_label: "metric value",
            series: &series,
            y_from_zero: false,
            marker,
            vline: None,
            x_integer: true,
        }
        .svg();
        out.push(("eval.svg".into(), svg));
    }
    out.extend(other_eval_charts(lines));
    out
}

/// The best evaluation of a run by its primary metric: (step, metric, value).
fn best_eval(lines: &[Value]) -> Option<(f64, String, f64)> {
    let mut best: Option<(f64, String, f64)> = None;
    for v in lines {
        let (Some(step), Some(e)) = (v["step"].as_f64(), primary_eval(v)) else {
            continue;
        };
        let Some(primary) = e.get("primary_metric").and_then(Value::as_str) else {
            continue;
        };
        let Some(x) = e.get(primary).and_then(Value::as_f64) else {
            continue;
        };
        let higher = e
            .get("greater_is_better")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let better = best
            .as_ref()
            .is_none_or(|(_, _, b)| if higher { x > *b } else { x < *b });
        if better {
            best = Some((step, primary.to_string(), x));
        }
    }
    best
}

/// The summary panel of a training report: what was trained on what, and how it ended.
fn summary(output: &Path, lines: &[Value]) -> String {
    let cfg: Value = std::fs::read_to_string(output.join("train_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let s = |v: &Value| match v {
        Value::String(x) => x.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    };
    let losses: Vec<f64> = lines.iter().filter_map(|v| v["loss"].as_f64()).collect();
    let steps = lines
        .iter()
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0);
    let mut rows: Vec<(&str, String)> = vec![
        (
            "model",
            format!(
                "{} ({} encoder, {} ops)",
                s(&cfg["model"]["model"]),
                s(&cfg["family"]),
                s(&cfg["exec"])
            ),
        ),
        ("data", s(&cfg["data"])),
        ("loss", s(&cfg["loss"])),
        (
            "hyperparameters",
            format!(
                "batch {}, lr {}, warmup ratio {}, {} epoch(s){}, seed {}",
                s(&cfg["batch_size"]),
                s(&cfg["lr"]),
                s(&cfg["warmup_ratio"]),
                s(&cfg["epochs"]),
                cfg["max_steps"]
                    .as_u64()
                    .map(|m| format!(" / max {m} steps"))
                    .unwrap_or_default(),
                s(&cfg["seed"])
            ),
        ),
        (
            "training",
            match (losses.first(), losses.last()) {
                (Some(a), Some(b)) => format!("{steps} optimizer steps; loss {a:.4} → {b:.4}"),
                _ => format!("{steps} optimizer steps"),
            },
        ),
    ];
    if let Some(last) = lines.iter().rev().find_map(primary_eval) {
        if let Some(p) = last.get("primary_metric").and_then(Value::as_str) {
            let v = last.get(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
            rows.push(("final evaluation", format!("{p} {v:.4}")));
        }
    }
    if let Some((step, name, v)) = best_eval(lines) {
        rows.push(("best evaluation", format!("{name} {v:.4} at step {step}")));
    }
    let mut html = String::from("<table class=\"summary\">");
    for (k, v) in rows {
        let _ = write!(html, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    html.push_str("</table>");
    html
}

/// The start of a report page: the document head with its style and the title as `<h1>`.
fn page_head(title: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>{STYLE}</style></head><body><h1>{0}</h1>",
        esc(title)
    )
}

const STYLE: &str = "body{font-family:sans-serif;max-width:720px;margin:2em auto}svg{display:block;margin:1em 0;border:1px solid #ddd}table{border-collapse:collapse}th{text-align:left;padding:2px 12px 2px 0;color:#555}td{padding:2px 12px}";

/// Writes the charts and `report.html` into a training run's output directory.
pub fn write_train_report(output: &Path, title: &str) -> Result<()> {
    let p = output.join("metrics.jsonl");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let mut html = page_head(title);
    html.push_str(&summary(output, &lines));
    for (name, svg) in &charts(&lines) {
        crate::fsutil::write_atomic(&output.join(name), svg.as_bytes())?;
        html.push_str(svg);
    }
    html.push_str("</body></html>\n");
    crate::fsutil::write_atomic(&output.join("report.html"), html.as_bytes())
}
