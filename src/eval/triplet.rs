//! Triplet accuracy (×100): the share of (anchor, positive, negative) where the positive is
//! strictly more similar to the anchor than the negative, per similarity function — as
//! sentence-transformers' TripletEvaluator. Primary metric: cosine_accuracy.

use super::{Evaluator, Metrics, UniqueEmbeddings};
use crate::data::Table;
use crate::encode::EncodeOptions;
use crate::model::SentenceEncoder;
use crate::quantize::Precision;
use crate::similarity::SimilarityFn;
use anyhow::Result;

pub struct TripletEvaluator {
    pub triplets: Vec<[String; 3]>,
    /// Embedding precision to evaluate at (None: the model's raw output).
    pub precision: Option<Precision>,
}

impl TripletEvaluator {
    pub fn from_table(t: &Table, columns: &[String]) -> Result<Self> {
        let cols = [
            t.column(&columns[0])?,
            t.column(&columns[1])?,
            t.column(&columns[2])?,
        ];
        let mut triplets = Vec::new();
        for r in &t.rows {
            triplets.push([
                t.text(r, cols[0])?.into_owned(),
                t.text(r, cols[1])?.into_owned(),
                t.text(r, cols[2])?.into_owned(),
            ]);
        }
        Ok(Self {
            triplets,
            precision: None,
        })
    }
}

impl Evaluator for TripletEvaluator {
    fn name(&self) -> &str {
        "triplet"
    }

    fn evaluate(&self, model: &SentenceEncoder, opts: &EncodeOptions) -> Result<Metrics> {
        let u = UniqueEmbeddings::new(
            model,
            self.triplets
                .iter()
                .flat_map(|t| t.iter().map(|s| s.as_str())),
            opts,
            self.precision,
        )?;
        let n = self.triplets.len().max(1) as f64;
        let values = SimilarityFn::ALL
            .iter()
            .map(|f| {
                let hits = self
                    .triplets
                    .iter()
                    .filter(|[a, p, ng]| f.score(u.get(a), u.get(p)) > f.score(u.get(a), u.get(ng)))
                    .count();
                (format!("{}_accuracy", f.name()), 100.0 * hits as f64 / n)
            })
            .collect();
        let cos = |x: &str, y: &str| SimilarityFn::Cosine.score(u.get(x), u.get(y));
        let u_precision = u.precision;
        Ok(Metrics {
            values,
            primary: "cosine_accuracy".into(),
            greater_is_better: true,
            precision: u_precision,
            points: Some(super::EvalPoints::Split {
                pos: self.triplets.iter().map(|[a, p, _]| cos(a, p)).collect(),
                neg: self.triplets.iter().map(|[a, _, n]| cos(a, n)).collect(),
            }),
        })
    }
}
