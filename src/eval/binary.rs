//! Pair classification on cosine similarity: accuracy, F1, precision, recall (×100) at their best
//! thresholds and average precision, as sentence-transformers' BinaryClassificationEvaluator.
//! Primary metric: cosine_ap.

use super::stats::{average_precision, best_accuracy, best_f1};
use super::{Evaluator, Metrics, UniqueEmbeddings};
use crate::data::Table;
use crate::encode::EncodeOptions;
use crate::model::SentenceEncoder;
use crate::quantize::Precision;
use crate::similarity::cosine;
use anyhow::{bail, Result};

pub struct BinaryEvaluator {
    pub s1: Vec<String>,
    pub s2: Vec<String>,
    pub labels: Vec<bool>,
    /// Embedding precision to evaluate at (None: the model's raw output).
    pub precision: Option<Precision>,
}

impl BinaryEvaluator {
    /// `columns` = [sentence1, sentence2, label]; labels must be 0 or 1.
    pub fn from_table(t: &Table, columns: &[String]) -> Result<Self> {
        let (c1, c2, cl) = (
            t.column(&columns[0])?,
            t.column(&columns[1])?,
            t.column(&columns[2])?,
        );
        let mut e = Self {
            s1: Vec::new(),
            s2: Vec::new(),
            labels: Vec::new(),
            precision: None,
        };
        for r in &t.rows {
            e.s1.push(t.text(r, c1)?.into_owned());
            e.s2.push(t.text(r, c2)?.into_owned());
            let l = t.number(r, cl)?;
            if l != 0.0 && l != 1.0 {
                bail!(
                    "{}:{}: field {:?}: expected a label 0 or 1, got {l}",
                    t.path.display(),
                    r.line,
                    columns[2]
                );
            }
            e.labels.push(l == 1.0);
        }
        Ok(e)
    }

    pub fn metrics_from_scores(&self, scores: &[f64]) -> Metrics {
        let (acc, acc_th) = best_accuracy(scores, &self.labels);
        let (f1, p, r, f1_th) = best_f1(scores, &self.labels);
        let ap = average_precision(scores, &self.labels);
        let values = vec![
            ("cosine_accuracy".to_string(), 100.0 * acc),
            ("cosine_accuracy_threshold".to_string(), acc_th),
            ("cosine_f1".to_string(), 100.0 * f1),
            ("cosine_f1_threshold".to_string(), f1_th),
            ("cosine_precision".to_string(), 100.0 * p),
            ("cosine_recall".to_string(), 100.0 * r),
            ("cosine_ap".to_string(), 100.0 * ap),
        ];
        let split = |want: bool| -> Vec<f64> {
            scores
                .iter()
                .zip(&self.labels)
                .filter(|(_, l)| **l == want)
                .map(|(s, _)| *s)
                .collect()
        };
        Metrics {
            values,
            primary: "cosine_ap".into(),
            greater_is_better: true,
            precision: None,
            points: Some(super::EvalPoints::Split {
                pos: split(true),
                neg: split(false),
            }),
        }
    }
}

impl Evaluator for BinaryEvaluator {
    fn name(&self) -> &str {
        "binary"
    }

    fn evaluate(&self, model: &SentenceEncoder, opts: &EncodeOptions) -> Result<Metrics> {
        let u = UniqueEmbeddings::new(
            model,
            self.s1.iter().chain(&self.s2).map(|s| s.as_str()),
            opts,
            self.precision,
        )?;
        let scores: Vec<f64> = self
            .s1
            .iter()
            .zip(&self.s2)
            .map(|(a, b)| cosine(u.get(a), u.get(b)))
            .collect();
        let mut m = self.metrics_from_scores(&scores);
        m.precision = u.precision;
        Ok(m)
    }
}
