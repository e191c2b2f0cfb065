//! Semantic textual similarity: Pearson and Spearman (×100) between gold scores and the
//! similarity of the two sentences' embeddings, for cosine, euclidean, manhattan and dot —
//! named and computed as sentence-transformers' EmbeddingSimilarityEvaluator (distances negated).
//! Primary metric: spearman_cosine.

use super::stats::{pearson, spearman};
use super::{Evaluator, Metrics, UniqueEmbeddings};
use crate::data::Table;
use crate::encode::EncodeOptions;
use crate::model::SentenceEncoder;
use crate::quantize::Precision;
use crate::similarity::SimilarityFn;
use anyhow::Result;

pub struct StsEvaluator {
    pub s1: Vec<String>,
    pub s2: Vec<String>,
    pub scores: Vec<f64>,
    /// Embedding precision to evaluate at (None: the model's raw output).
    pub precision: Option<Precision>,
    /// What the file's scores were divided by.
    pub score_scale: f64,
}

impl StsEvaluator {
    /// `columns` = [sentence1, sentence2, score]; scores are divided by `score_scale`.
    pub fn from_table(t: &Table, columns: &[String], score_scale: f64) -> Result<Self> {
        let (c1, c2, cs) = (
            t.column(&columns[0])?,
            t.column(&columns[1])?,
            t.column(&columns[2])?,
        );
        let mut e = Self {
            s1: Vec::new(),
            s2: Vec::new(),
            scores: Vec::new(),
            precision: None,
            score_scale,
        };
        for r in &t.rows {
            e.s1.push(t.text(r, c1)?.into_owned());
            e.s2.push(t.text(r, c2)?.into_owned());
            e.scores.push(t.number(r, cs)? / score_scale);
        }
        if e.scores.len() > 1 && e.scores.iter().all(|&s| s == 0.0 || s == 1.0) {
            tracing::warn!(
                "warning: {}: the scores of column {:?} are all 0 or 1: labels of pair classification? --task binary evaluates those (accuracy, F1, AP)",
                t.path.display(),
                columns[2]
            );
        }
        Ok(e)
    }

    /// Metrics from precomputed embeddings (one per pair side).
    pub fn metrics_from(&self, a: &[&[f32]], b: &[&[f32]]) -> Metrics {
        let mut values = Vec::new();
        for f in SimilarityFn::ALL {
            let sims: Vec<f64> = a.iter().zip(b).map(|(x, y)| f.score(x, y)).collect();
            values.push((
                format!("pearson_{}", f.name()),
                100.0 * pearson(&self.scores, &sims),
            ));
            values.push((
                format!("spearman_{}", f.name()),
                100.0 * spearman(&self.scores, &sims),
            ));
        }
        let pred = a
            .iter()
            .zip(b)
            .map(|(x, y)| SimilarityFn::Cosine.score(x, y))
            .collect();
        Metrics {
            values,
            primary: "spearman_cosine".into(),
            greater_is_better: true,
            precision: None,
            points: Some(super::EvalPoints::Scatter {
                gold: self.scores.clone(),
                pred,
                scale: self.score_scale,
            }),
        }
    }
}

impl Evaluator for StsEvaluator {
    fn name(&self) -> &str {
        "sts"
    }

    fn evaluate(&self, model: &SentenceEncoder, opts: &EncodeOptions) -> Result<Metrics> {
        let u = UniqueEmbeddings::new(
            model,
            self.s1.iter().chain(&self.s2).map(|s| s.as_str()),
            opts,
            self.precision,
        )?;
        let a: Vec<&[f32]> = self.s1.iter().map(|s| u.get(s)).collect();
        let b: Vec<&[f32]> = self.s2.iter().map(|s| u.get(s)).collect();
        let mut m = self.metrics_from(&a, &b);
        m.precision = u.precision;
        Ok(m)
    }
}
