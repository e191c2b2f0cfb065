//! Evaluators: trait [`Evaluator`] → [`Metrics`] {values, primary, greater_is_better}; one file
//! per task (sts, triplet, binary), `build()` is the registry. Metric names follow
//! sentence-transformers' evaluators; scores are ×100, thresholds raw.

pub mod binary;
pub mod job;
pub mod stats;
pub mod sts;
pub mod triplet;

use crate::data::Table;
use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::SentenceEncoder;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Closed set of evaluation tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalTask {
    /// Pairs with a similarity score: Pearson/Spearman of embedding similarity vs score.
    Sts,
    /// (anchor, positive, negative): how often the positive is closer.
    Triplet,
    /// Pairs with a 0/1 label: accuracy, F1, precision, recall, AP at the best threshold.
    Binary,
}

impl EvalTask {
    /// Default text and label columns, in role order (label last).
    pub fn default_columns(self) -> &'static [&'static str] {
        match self {
            EvalTask::Sts => &["sentence1", "sentence2", "score"],
            EvalTask::Triplet => &["anchor", "positive", "negative"],
            EvalTask::Binary => &["sentence1", "sentence2", "label"],
        }
    }
}

/// Named metric values in a fixed order, with the one that decides "best".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub values: Vec<(String, f64)>,
    pub primary: String,
    pub greater_is_better: bool,
    /// Per-example cosine similarities behind the numbers (for `eval --report` plots).
    #[serde(skip)]
    pub points: Option<EvalPoints>,
}

/// The cosine similarities an evaluation computed, for plots.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalPoints {
    /// STS: gold score and predicted cosine of each pair.
    Scatter { gold: Vec<f64>, pred: Vec<f64> },
    /// Pair classification / triplets: cosines of positive and of negative pairs.
    Split { pos: Vec<f64>, neg: Vec<f64> },
}

impl Metrics {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
    pub fn primary_value(&self) -> f64 {
        self.get(&self.primary).unwrap_or(f64::NAN)
    }
    /// One JSON object: every metric, plus `primary_metric`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.values {
            m.insert(k.clone(), serde_json::json!(v));
        }
        m.insert("primary_metric".into(), serde_json::json!(self.primary));
        serde_json::Value::Object(m)
    }
    /// A two-column human table.
    pub fn to_table(&self) -> String {
        let w = self
            .values
            .iter()
            .map(|(k, _)| k.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let mut s = format!("{:<w$}  {:>10}\n", "metric", "value");
        for (k, v) in &self.values {
            let mark = if *k == self.primary {
                "  (primary)"
            } else {
                ""
            };
            s.push_str(&format!("{k:<w$}  {v:>10.4}{mark}\n"));
        }
        s
    }
}

/// One evaluation over fixed data.
pub trait Evaluator {
    fn name(&self) -> &str;
    fn evaluate(&self, model: &SentenceEncoder, opts: &EncodeOptions) -> Result<Metrics>;
}

/// Builds the evaluator of `task` from a table; `columns` are text columns then the label/score
/// column (none for triplet); `score_scale` divides scores (5 for STS-B, 1 otherwise).
pub fn build(
    task: EvalTask,
    table: &Table,
    columns: &[String],
    score_scale: f64,
) -> Result<Box<dyn Evaluator>> {
    let want = task.default_columns().len();
    if columns.len() != want {
        bail!(
            "--columns: task {task:?} needs {want} columns ({}), got {}",
            task.default_columns().join(", "),
            columns.len()
        );
    }
    Ok(match task {
        EvalTask::Sts => Box::new(sts::StsEvaluator::from_table(table, columns, score_scale)?),
        EvalTask::Triplet => Box::new(triplet::TripletEvaluator::from_table(table, columns)?),
        EvalTask::Binary => Box::new(binary::BinaryEvaluator::from_table(table, columns)?),
    })
}

/// [`build`] with the defaults filled in: the task's default columns, and scores divided by 5
/// for STS-B files (their scores run 0–5), else by 1.
pub fn build_with_defaults(
    task: EvalTask,
    table: &Table,
    columns: Option<&[String]>,
    score_scale: Option<f64>,
) -> Result<Box<dyn Evaluator>> {
    let cols: Vec<String> = match columns {
        Some(c) => c.to_vec(),
        None => task
            .default_columns()
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let stsb = table.format == crate::data::DataFormat::Stsb;
    build(
        task,
        table,
        &cols,
        score_scale.unwrap_or(if stsb { 5.0 } else { 1.0 }),
    )
}

/// Encodes the distinct texts once and maps each text to its row of the result.
pub(crate) struct UniqueEmbeddings {
    pub emb: Embeddings,
    pub index: HashMap<String, usize>,
}

impl UniqueEmbeddings {
    pub fn new<'a>(
        model: &SentenceEncoder,
        texts: impl Iterator<Item = &'a str>,
        opts: &EncodeOptions,
    ) -> Result<Self> {
        let mut index = HashMap::new();
        let mut uniq: Vec<&str> = Vec::new();
        for t in texts {
            if !index.contains_key(t) {
                index.insert(t.to_string(), uniq.len());
                uniq.push(t);
            }
        }
        let emb = encode(model, &uniq, opts)?;
        Ok(Self { emb, index })
    }
    pub fn get(&self, t: &str) -> &[f32] {
        self.emb.row(self.index[t])
    }
}
