//! Retrieval evaluation, as sentence-transformers' InformationRetrievalEvaluator: queries and
//! documents embedded (with their prompts), every document scored for every query by cosine and
//! by dot product, the top 100 kept per query — exact, by chunked matrix products, so no full
//! score matrix is held for a big corpus — ties ordered by document id, then the metrics of
//! `metrics.rs` averaged over the judged queries (`cosine_ndcg@10` primary, values in 0–1 as
//! sentence-transformers reports them). Corpus embeddings are cached (`embed_cache`) outside
//! training. Depends on `encode`, `embed_cache`, `pairs::topk::top_k`, `model`.

pub mod data;
pub mod metrics;

pub use data::{RetrievalData, RetrievalSource};

use super::{EvalPoints, Evaluator, Metrics};
use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::prompts::{PromptChoice, Side};
use crate::model::SentenceEncoder;
use anyhow::Result;
use std::path::PathBuf;

/// Documents scored per matrix product (sentence-transformers' corpus_chunk_size).
const CORPUS_CHUNK: usize = 50_000;

pub struct RetrievalEvaluator {
    pub data: RetrievalData,
    /// The queries' / documents' prompts (neither given: the model's query / document prompt,
    /// else its default one — sentence-transformers' encode_query / encode_document).
    pub query_prompt: PromptChoice,
    pub document_prompt: PromptChoice,
    /// Where corpus embeddings are cached (None: not cached, e.g. during training).
    pub cache: Option<PathBuf>,
}

impl RetrievalEvaluator {
    pub fn new(source: &RetrievalSource) -> Result<Self> {
        let data = source.load()?;
        for n in &data.notes {
            tracing::info!("note: {n}");
        }
        Ok(Self {
            data,
            query_prompt: PromptChoice::default(),
            document_prompt: PromptChoice::default(),
            cache: None,
        })
    }
}

fn normalized(e: &Embeddings) -> Embeddings {
    let mut data = e.data.clone();
    for row in data.chunks_mut(e.dim.max(1)) {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= n);
    }
    Embeddings {
        data,
        dim: e.dim,
        truncated: 0,
    }
}

impl Evaluator for RetrievalEvaluator {
    fn name(&self) -> &str {
        "retrieval"
    }

    fn evaluate(&self, model: &SentenceEncoder, opts: &EncodeOptions) -> Result<Metrics> {
        let d = &self.data;
        let side = |choice: &PromptChoice, side: Side, flag: &str| -> Result<EncodeOptions> {
            Ok(EncodeOptions {
                normalize: false,
                prompt: Some(model.prompts.choose(choice, side, flag)?),
                ..opts.clone()
            })
        };
        let q_opts = side(&self.query_prompt, Side::Query, "--query-prompt-name")?;
        let d_opts = side(
            &self.document_prompt,
            Side::Document,
            "--document-prompt-name",
        )?;
        let q_refs: Vec<&str> = d.queries.iter().map(|(_, t)| t.as_str()).collect();
        let q = encode(model, &q_refs, &q_opts)?;
        let d_refs: Vec<&str> = d.corpus.iter().map(|(_, t)| t.as_str()).collect();
        let c = crate::embed_cache::embeddings(
            model,
            &d_refs,
            &d_opts,
            self.cache.as_deref(),
            "retrieval",
        )?;
        let k = metrics::MAX_K.min(d.corpus.len());
        let mut values = Vec::new();
        let mut points = None;
        for (name, norm) in [("cosine", true), ("dot", false)] {
            let (qe, ce) = if norm {
                (normalized(&q), normalized(&c))
            } else {
                (q.clone(), c.clone())
            };
            let ranked = crate::pairs::topk::top_k(&qe, &ce, k, CORPUS_CHUNK)?;
            let per_query: Vec<Vec<(String, f64)>> = d
                .queries
                .iter()
                .zip(&ranked)
                .map(|((qid, _), hits)| {
                    let ids: Vec<&str> =
                        hits.iter().map(|(_, i)| d.corpus[*i].0.as_str()).collect();
                    metrics::query_metrics(&ids, &d.qrels[qid])
                })
                .collect();
            if norm {
                points = Some(ranking_points(d, &ranked, &per_query));
            }
            values.extend(
                metrics::mean(&per_query)
                    .into_iter()
                    .map(|(m, v)| (format!("{name}_{m}"), v)),
            );
        }
        Ok(Metrics {
            values,
            primary: "cosine_ndcg@10".into(),
            greater_is_better: true,
            precision: None,
            points,
        })
    }
}

/// Per-query nDCG@10 and mean recall@k for k = 1..=100 (cosine), for `eval --report`.
fn ranking_points(
    d: &RetrievalData,
    ranked: &[Vec<(f32, usize)>],
    per_query: &[Vec<(String, f64)>],
) -> EvalPoints {
    let ndcg = per_query
        .iter()
        .filter_map(|m| m.iter().find(|(n, _)| n == "ndcg@10").map(|(_, v)| *v))
        .collect();
    let kmax = ranked.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut recall = vec![0.0; kmax];
    for ((qid, _), hits) in d.queries.iter().zip(ranked) {
        let judged = &d.qrels[qid];
        let n_rel = judged.values().filter(|&&s| s > 0.0).count().max(1) as f64;
        let mut found = 0.0;
        for (k, slot) in recall.iter_mut().enumerate() {
            if let Some((_, i)) = hits.get(k) {
                if judged.get(&d.corpus[*i].0).is_some_and(|&s| s > 0.0) {
                    found += 1.0;
                }
            }
            *slot += found / n_rel;
        }
    }
    let nq = d.queries.len().max(1) as f64;
    EvalPoints::Ranking {
        ndcg,
        recall_at: recall
            .into_iter()
            .enumerate()
            .map(|(k, r)| (k + 1, r / nq))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal scores rank the lower document id first (the corpus is held sorted by id), also
    /// across corpus chunks and at the cut-off, as sentence-transformers 6.2 breaks ties.
    #[test]
    fn ties_rank_the_lower_document_id_first() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("qrels")).unwrap();
        // Written out of id order: d3, d1, d2, d0.
        std::fs::write(
            dir.join("corpus.jsonl"),
            "{\"_id\":\"d3\",\"text\":\"c\"}\n{\"_id\":\"d1\",\"text\":\"a\"}\n{\"_id\":\"d2\",\"text\":\"b\"}\n{\"_id\":\"d0\",\"text\":\"z\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("queries.jsonl"),
            "{\"_id\":\"q\",\"text\":\"x\"}\n",
        )
        .unwrap();
        std::fs::write(dir.join("qrels/test.tsv"), "q\td2\t1\n").unwrap();
        let d = RetrievalSource::Beir {
            dir: dir.to_path_buf(),
            split: "test".into(),
        }
        .load()
        .unwrap();
        let ids: Vec<&str> = d.corpus.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(ids, ["d0", "d1", "d2", "d3"]);
        // d1, d2, d3 tie above d0; keep 2 with a chunk of 1 document at a time.
        let corpus = Embeddings {
            data: vec![0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
            dim: 2,
            truncated: 0,
        };
        let q = Embeddings {
            data: vec![1.0, 0.0],
            dim: 2,
            truncated: 0,
        };
        let ranked = crate::pairs::topk::top_k(&q, &corpus, 2, 1).unwrap();
        let got: Vec<&str> = ranked[0].iter().map(|(_, i)| ids[*i]).collect();
        assert_eq!(got, ["d1", "d2"]);
        // So the relevant d2 is at rank 2: MRR 1/2.
        let m = metrics::query_metrics(&got, &d.qrels["q"]);
        assert_eq!(m.iter().find(|(n, _)| n == "mrr@10").unwrap().1, 0.5);
    }
}
