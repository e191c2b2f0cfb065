//! The dataset check (`embtune pairs --check FILE`, and printed by `train` before step 1): row
//! count, duplicate rows, texts shared with the evaluation data (leakage), label balance, and the
//! token-length distribution against max_seq_length with the share that will be truncated.

use crate::data::{ColumnSpec, Table};
use crate::model::SentenceEncoder;
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenStats {
    pub max_seq_length: usize,
    pub texts: usize,
    pub min: usize,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
    pub mean: f64,
    pub truncated: usize,
    pub truncated_share: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckReport {
    pub file: String,
    pub rows: usize,
    pub text_columns: Vec<String>,
    pub duplicate_rows: usize,
    /// Distinct texts that also appear in the evaluation data.
    pub leaked_texts: Option<usize>,
    pub label_column: Option<String>,
    /// Label value → count (scores are bucketed to one decimal).
    pub label_balance: Option<BTreeMap<String, usize>>,
    pub tokens: Option<TokenStats>,
}

fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The columns are resolved as `train` resolves them ([`ColumnSpec::resolve`]: STS-B's metadata
/// columns are not texts, a numeric column is the label), with NLI's "gold_label" also taken as
/// the label, so both checks count the same texts.
pub fn check(
    t: &Table,
    columns: &ColumnSpec,
    eval: Option<&Table>,
    model: Option<&SentenceEncoder>,
) -> Result<CheckReport> {
    let mut spec = columns.clone();
    if spec.label_column.is_none() && t.columns.iter().any(|c| c == "gold_label") {
        spec.label_column = Some("gold_label".into());
    }
    let resolved = spec.resolve(t, true)?;
    let label = resolved.label;
    let text_cols: Vec<usize> = resolved
        .text
        .iter()
        .map(|n| t.column(n))
        .collect::<Result<_>>()?;
    let label_idx = match &label {
        Some(l) => Some(t.column(l)?),
        None => None,
    };
    let mut seen = HashSet::new();
    let mut dups = 0;
    for r in &t.rows {
        let key: Vec<&serde_json::Value> = text_cols
            .iter()
            .chain(label_idx.iter())
            .map(|&c| &r.cells[c])
            .collect();
        if !seen.insert(serde_json::to_string(&key).unwrap_or_default()) {
            dups += 1;
        }
    }
    let texts: Vec<String> = t
        .rows
        .iter()
        .flat_map(|r| text_cols.iter().map(|&c| cell_text(&r.cells[c])))
        .collect();
    let leaked = eval.map(|e| {
        let eval_texts: HashSet<String> = e
            .rows
            .iter()
            .flat_map(|r| r.cells.iter().map(cell_text))
            .collect();
        texts
            .iter()
            .filter(|x| !x.is_empty() && eval_texts.contains(*x))
            .collect::<HashSet<_>>()
            .len()
    });
    let balance = match &label {
        Some(l) => Some(label_balance(t, t.column(l)?)),
        None => None,
    };
    let tokens = match model {
        Some(m) => {
            let uniq: Vec<&str> = texts
                .iter()
                .map(|s| s.as_str())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let mut no_trunc = m.tokenizer.clone();
            no_trunc.set_max_seq_length(1 << 20)?;
            let mut lens: Vec<usize> = no_trunc
                .tokenize(&uniq)?
                .iter()
                .map(|t| t.ids.len())
                .collect();
            lens.sort_unstable();
            let n = lens.len().max(1);
            let msl = m.tokenizer.max_seq_length();
            let truncated = lens.iter().filter(|l| **l > msl).count();
            Some(TokenStats {
                max_seq_length: msl,
                texts: lens.len(),
                min: lens.first().copied().unwrap_or(0),
                median: lens.get(lens.len() / 2).copied().unwrap_or(0),
                p95: lens
                    .get((lens.len() * 95 / 100).min(lens.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(0),
                max: lens.last().copied().unwrap_or(0),
                mean: lens.iter().sum::<usize>() as f64 / n as f64,
                truncated,
                truncated_share: truncated as f64 / n as f64,
            })
        }
        None => None,
    };
    Ok(CheckReport {
        file: t.path.display().to_string(),
        rows: t.len(),
        text_columns: text_cols.iter().map(|&c| t.columns[c].clone()).collect(),
        duplicate_rows: dups,
        leaked_texts: leaked,
        label_column: label,
        label_balance: balance,
        tokens,
    })
}

/// Counts per label; numeric labels with more than 10 distinct values (scores) are binned into
/// 5 equal-width ranges.
fn label_balance(t: &Table, c: usize) -> BTreeMap<String, usize> {
    let vals: Vec<String> = t.rows.iter().map(|r| cell_text(&r.cells[c])).collect();
    let nums: Option<Vec<f64>> = vals
        .iter()
        .map(|v| v.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
        .collect();
    let mut m = BTreeMap::new();
    match nums {
        Some(xs) => {
            let mut distinct: Vec<f64> = xs.clone();
            distinct.sort_by(|a, b| a.total_cmp(b));
            distinct.dedup();
            if distinct.len() <= 10 {
                for x in xs {
                    *m.entry(format!("{x}")).or_insert(0) += 1;
                }
            } else {
                let (lo, hi) = (distinct[0], distinct[distinct.len() - 1]);
                let w = (hi - lo) / 5.0;
                for x in xs {
                    let k = (((x - lo) / w) as usize).min(4);
                    *m.entry(format!(
                        "{:.2}–{:.2}",
                        lo + k as f64 * w,
                        lo + (k + 1) as f64 * w
                    ))
                    .or_insert(0) += 1;
                }
            }
        }
        None => {
            for v in vals {
                *m.entry(v).or_insert(0) += 1;
            }
        }
    }
    m
}

impl CheckReport {
    /// A short human summary.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "dataset check: {}\n  rows: {} (text columns: {})\n  duplicate rows: {}\n",
            self.file,
            self.rows,
            self.text_columns.join(", "),
            self.duplicate_rows
        );
        if let Some(l) = self.leaked_texts {
            s.push_str(&format!("  texts also in the evaluation data: {l}\n"));
        }
        if let (Some(c), Some(b)) = (&self.label_column, &self.label_balance) {
            let parts: Vec<String> = b
                .iter()
                .take(12)
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            s.push_str(&format!(
                "  labels ({c}): {}{}\n",
                parts.join(", "),
                if b.len() > 12 { ", …" } else { "" }
            ));
        }
        if let Some(t) = &self.tokens {
            s.push_str(&format!(
                "  tokens per text: min {} median {} p95 {} max {} (mean {:.1}); {} of {} texts ({:.2} %) exceed max_seq_length {} and will be truncated\n",
                t.min, t.median, t.p95, t.max, t.mean, t.truncated, t.texts, 100.0 * t.truncated_share, t.max_seq_length
            ));
        }
        s
    }
}
