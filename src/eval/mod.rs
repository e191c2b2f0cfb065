//! Evaluators: trait [`Evaluator`] → [`Metrics`] {values, primary, greater_is_better}; one file
//! per task (sts, triplet, binary), `build()` is the registry. Metric names follow
//! sentence-transformers' evaluators; scores are ×100, thresholds raw. With a [`Precision`]
//! (`eval --precision`), embeddings are L2-normalised, quantized and cast back to floats first,
//! as sentence-transformers' EmbeddingSimilarityEvaluator(precision=…) does.

pub mod binary;
pub mod job;
pub mod retrieval;
pub mod stats;
pub mod sts;
pub mod triplet;

use crate::data::Table;
use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::SentenceEncoder;
use crate::quantize::{quantize, Precision};
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
    /// Queries against a corpus with relevance judgments (a BEIR folder): nDCG, MRR, MAP,
    /// recall, precision, accuracy @k.
    Retrieval,
}

impl EvalTask {
    /// Default text and label columns, in role order (label last).
    pub fn default_columns(self) -> &'static [&'static str] {
        match self {
            EvalTask::Sts => &["sentence1", "sentence2", "score"],
            EvalTask::Triplet => &["anchor", "positive", "negative"],
            EvalTask::Binary => &["sentence1", "sentence2", "label"],
            EvalTask::Retrieval => &[],
        }
    }
}

/// Named metric values in a fixed order, with the one that decides "best".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub values: Vec<(String, f64)>,
    pub primary: String,
    pub greater_is_better: bool,
    /// The embedding precision evaluated (`eval --precision`); None: the model's raw output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<EvalPrecision>,
    /// Per-example cosine similarities behind the numbers (for `eval --report` plots).
    #[serde(skip)]
    pub points: Option<EvalPoints>,
}

/// The precision an evaluation scored its embeddings at, and what one embedding then takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalPrecision {
    pub precision: Precision,
    pub bytes_per_embedding: usize,
}

/// The cosine similarities an evaluation computed, for plots.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalPoints {
    /// STS: gold score and predicted cosine of each pair.
    /// `scale`: what the gold scores were divided by (5 for STS-B), to plot them in the data's
    /// own scale.
    Scatter {
        gold: Vec<f64>,
        pred: Vec<f64>,
        scale: f64,
    },
    /// Pair classification / triplets: cosines of positive and of negative pairs.
    Split { pos: Vec<f64>, neg: Vec<f64> },
    /// Retrieval: nDCG@10 of each query, and mean recall@k for k = 1, 2, ….
    Ranking {
        ndcg: Vec<f64>,
        recall_at: Vec<(usize, f64)>,
    },
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
        if let Some(p) = self.precision {
            m.insert("precision".into(), serde_json::json!(p.precision));
            m.insert(
                "bytes_per_embedding".into(),
                serde_json::json!(p.bytes_per_embedding),
            );
        }
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
        if let Some(p) = self.precision {
            let bytes = format!("{} ({} B)", p.precision, p.bytes_per_embedding);
            s.push_str(&format!("{:<w$}  {bytes:>10}\n", "precision"));
        }
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
    build_at(task, table, columns, score_scale, None)
}

/// [`build`] for embeddings evaluated at `precision` (None: the model's raw float32 output).
pub fn build_at(
    task: EvalTask,
    table: &Table,
    columns: &[String],
    score_scale: f64,
    precision: Option<Precision>,
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
        EvalTask::Sts => {
            let mut e = sts::StsEvaluator::from_table(table, columns, score_scale)?;
            e.precision = precision;
            Box::new(e)
        }
        EvalTask::Triplet => {
            let mut e = triplet::TripletEvaluator::from_table(table, columns)?;
            e.precision = precision;
            Box::new(e)
        }
        EvalTask::Binary => {
            let mut e = binary::BinaryEvaluator::from_table(table, columns)?;
            e.precision = precision;
            Box::new(e)
        }
        EvalTask::Retrieval => bail!(
            "{}: the retrieval task reads a BEIR folder (--data DIR) or --queries/--corpus/--qrels, not a table",
            table.path.display()
        ),
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
    build_with_defaults_at(task, table, columns, score_scale, None)
}

/// [`build_with_defaults`] at an embedding `precision` (see [`build_at`]).
pub fn build_with_defaults_at(
    task: EvalTask,
    table: &Table,
    columns: Option<&[String]>,
    score_scale: Option<f64>,
    precision: Option<Precision>,
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
    build_at(
        task,
        table,
        &cols,
        score_scale.unwrap_or(if stsb { 5.0 } else { 1.0 }),
        precision,
    )
}

/// Encodes the distinct texts once and maps each text to its row of the result. With a
/// `precision`, as sentence-transformers' EmbeddingSimilarityEvaluator: the embeddings are
/// L2-normalised (`normalize_embeddings=bool(precision)`), quantized — int8/uint8 with ranges
/// over all the texts together (min/max do not see duplicates, so unique texts give the same
/// ranges) — and cast back to floats, binary/ubinary unpacked to 0/1 per bit.
pub(crate) struct UniqueEmbeddings {
    pub emb: Embeddings,
    pub index: HashMap<String, usize>,
    pub precision: Option<EvalPrecision>,
}

impl UniqueEmbeddings {
    pub fn new<'a>(
        model: &SentenceEncoder,
        texts: impl Iterator<Item = &'a str>,
        opts: &EncodeOptions,
        precision: Option<Precision>,
    ) -> Result<Self> {
        let mut index = HashMap::new();
        let mut uniq: Vec<&str> = Vec::new();
        for t in texts {
            if !index.contains_key(t) {
                index.insert(t.to_string(), uniq.len());
                uniq.push(t);
            }
        }
        let emb = match precision {
            None => encode(model, &uniq, opts)?,
            Some(p) => {
                let opts = EncodeOptions {
                    normalize: true,
                    ..opts.clone()
                };
                let emb = encode(model, &uniq, &opts)?;
                quantize(&emb, p, None)?.to_eval_floats()
            }
        };
        let precision = precision.map(|p| EvalPrecision {
            precision: p,
            bytes_per_embedding: p.bytes_per_embedding(model.dim()),
        });
        Ok(Self {
            emb,
            index,
            precision,
        })
    }
    pub fn get(&self, t: &str) -> &[f32] {
        self.emb.row(self.index[t])
    }
}
