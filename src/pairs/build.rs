//! The label-driven builders: scored pairs → labeled pairs by thresholds (or normalised scores),
//! labeled pairs → kept or positives only, class-labeled texts → triplets, NLI rows → triplets
//! grouped by premise.

use super::output::Rows;
use super::{PairsConfig, PairsReport};
use crate::data::Table;
use crate::rng::Rng;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn skip(report: &mut PairsReport, why: &str) {
    *report.skipped.entry(why.to_string()).or_default() += 1;
}

/// `(sentence1, sentence2, score)`. With `--positive-min`/`--negative-max`: label 1 when
/// score ≥ positive-min, 0 when ≤ negative-max, rows in between dropped (counted); with
/// `--positives-only`, only the positives as (anchor, positive). Without thresholds: scores
/// normalised to 0..1 by the data's range (STS-B: /5).
pub fn from_scores(
    t: &Table,
    c: &[usize],
    cfg: &PairsConfig,
    report: &mut PairsReport,
) -> Result<Rows> {
    let mut data = Vec::with_capacity(t.len());
    for r in &t.rows {
        data.push((
            t.text(r, c[0])?.into_owned(),
            t.text(r, c[1])?.into_owned(),
            t.number(r, c[2])?,
        ));
    }
    match (cfg.positive_min, cfg.negative_max) {
        (None, None) => {
            if cfg.positives_only {
                bail!("--positives-only needs --positive-min");
            }
            let lo = data.iter().map(|d| d.2).fold(0.0f64, f64::min);
            let hi = data.iter().map(|d| d.2).fold(f64::MIN, f64::max);
            let span = if hi > lo { hi - lo } else { 1.0 };
            let mut out = Rows::new(&["sentence1", "sentence2", "score"]);
            for (a, b, s) in data {
                out.push(vec![json!(a), json!(b), json!((s - lo) / span)]);
            }
            Ok(out)
        }
        (pmin, nmax) => {
            if let (Some(p), Some(n)) = (pmin, nmax) {
                if n >= p {
                    bail!("--negative-max {n} must be below --positive-min {p}");
                }
            }
            let mut out = if cfg.positives_only {
                Rows::new(&["anchor", "positive"])
            } else {
                Rows::new(&["sentence1", "sentence2", "label"])
            };
            for (a, b, s) in data {
                let label = if pmin.is_some_and(|p| s >= p) {
                    1
                } else if nmax.is_some_and(|n| s <= n) {
                    0
                } else {
                    skip(report, "between thresholds");
                    continue;
                };
                if cfg.positives_only {
                    if label == 1 {
                        out.push(vec![json!(a), json!(b)]);
                    } else {
                        skip(report, "negative (positives only)");
                    }
                } else {
                    out.push(vec![json!(a), json!(b), json!(label)]);
                }
            }
            Ok(out)
        }
    }
}

/// `(sentence1, sentence2, label)` with labels 0/1 (anything else is an error naming the line).
pub fn from_labeled(
    t: &Table,
    c: &[usize],
    cfg: &PairsConfig,
    report: &mut PairsReport,
) -> Result<Rows> {
    let mut out = if cfg.positives_only {
        Rows::new(&["anchor", "positive"])
    } else {
        Rows::new(&["sentence1", "sentence2", "label"])
    };
    for r in &t.rows {
        let l = t.number(r, c[2])?;
        if l != 0.0 && l != 1.0 {
            bail!(
                "{}:{}: field {:?}: expected a label 0 or 1, got {l}",
                t.path.display(),
                r.line,
                t.columns[c[2]]
            );
        }
        let (a, b) = (t.text(r, c[0])?.into_owned(), t.text(r, c[1])?.into_owned());
        if cfg.positives_only {
            if l == 1.0 {
                out.push(vec![json!(a), json!(b)]);
            } else {
                skip(report, "negative (positives only)");
            }
        } else {
            out.push(vec![json!(a), json!(b), json!(l as i64)]);
        }
    }
    Ok(out)
}

/// A class label as text (numbers and strings alike); empty labels are an error.
fn class_label(t: &Table, r: &crate::data::Row, c: usize) -> Result<String> {
    let s = match &r.cells[c] {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    if s.is_empty() {
        bail!(
            "{}:{}: field {:?}: empty class label; every text needs a class",
            t.path.display(),
            r.line,
            t.columns[c]
        );
    }
    Ok(s)
}

/// `(text, label)`: for each text, `--per-anchor` triplets with a positive from the same class
/// (not the text itself) and a negative from another class, drawn with the seed. Texts of a class
/// with no other member are skipped and counted; fewer than two classes is an error.
pub fn from_classes(
    t: &Table,
    c: &[usize],
    cfg: &PairsConfig,
    report: &mut PairsReport,
) -> Result<Rows> {
    let mut classes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut items = Vec::new();
    for r in &t.rows {
        let text = t.text(r, c[0])?.into_owned();
        let label = class_label(t, r, c[1])?;
        classes.entry(label.clone()).or_default().push(text.clone());
        items.push((text, label));
    }
    if classes.len() < 2 {
        bail!(
            "{}: only one class ({:?}); triplets need negatives from another class",
            t.path.display(),
            classes.keys().next()
        );
    }
    let names: Vec<&String> = classes.keys().collect();
    let mut rng = Rng::with_stream(cfg.seed, 7);
    let mut out = Rows::new(&["anchor", "positive", "negative"]);
    for (text, label) in &items {
        let same: Vec<&String> = classes[label].iter().filter(|x| *x != text).collect();
        if same.is_empty() {
            skip(report, "class with no other text");
            continue;
        }
        for _ in 0..cfg.per_anchor.max(1) {
            let pos = same[rng.below(same.len())];
            let other = loop {
                let k = names[rng.below(names.len())];
                if k != label {
                    break k;
                }
            };
            let negs = &classes[other];
            let neg = &negs[rng.below(negs.len())];
            out.push(vec![json!(text), json!(pos), json!(neg)]);
        }
    }
    Ok(out)
}

/// NLI labels: entailment/neutral/contradiction, or HF's 0/1/2. Anything else is None.
fn nli_label(v: &Value) -> Option<u8> {
    match v {
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "entailment" | "0" => Some(0),
            "neutral" | "1" => Some(1),
            "contradiction" | "2" => Some(2),
            _ => None,
        },
        Value::Number(n) => match n.as_i64() {
            Some(k @ 0..=2) => Some(k as u8),
            _ => None,
        },
        _ => None,
    }
}

/// `(premise, hypothesis, label)`: for each premise with at least one entailed and one
/// contradicted hypothesis, one (premise, entailment, contradiction) triplet per entailment, the
/// contradiction drawn with the seed — the triplet form of sentence-transformers' AllNLI. Rows
/// whose label is `-` or unknown are skipped and counted; neutral rows are not used.
pub fn from_nli(
    t: &Table,
    c: &[usize],
    cfg: &PairsConfig,
    report: &mut PairsReport,
) -> Result<Rows> {
    let mut groups: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
    let mut order = Vec::new();
    for r in &t.rows {
        let Some(label) = nli_label(&r.cells[c[2]]) else {
            skip(report, "label not entailment/neutral/contradiction");
            continue;
        };
        let premise = t.text(r, c[0])?.trim().to_string();
        let hyp = t.text(r, c[1])?.trim().to_string();
        if !groups.contains_key(&premise) {
            order.push(premise.clone());
        }
        let g = groups.entry(premise).or_default();
        match label {
            0 => g.0.push(hyp),
            2 => g.1.push(hyp),
            _ => skip(report, "neutral"),
        }
    }
    let mut rng = Rng::with_stream(cfg.seed, 8);
    let mut out = Rows::new(&["anchor", "positive", "negative"]);
    for p in order {
        let (ent, con) = &groups[&p];
        if ent.is_empty() || con.is_empty() {
            skip(report, "premise without both entailment and contradiction");
            continue;
        }
        for e in ent {
            out.push(vec![json!(p), json!(e), json!(con[rng.below(con.len())])]);
        }
    }
    Ok(out)
}
