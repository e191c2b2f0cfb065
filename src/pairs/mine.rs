//! Negatives for (anchor, positive) pairs: random, or hard negatives mined with a model —
//! sentence-transformers' `mine_hard_negatives` semantics: the corpus is the deduplicated
//! `--corpus` texts then positives; candidates are the top-k by cosine; a candidate is dropped
//! when it is one of the anchor's positives (or the anchor itself), when
//! `score + margin > pos`, when `score > pos − |pos|·relative_margin` (pos = the lowest score among
//! the anchor's positives), above `--max-score` or below `--min-score`; then the first
//! `range_max` survivors are kept, the first `range_min` of them skipped, and the next
//! `num_negatives` taken. Top-k is chunked: memory grows with the corpus embeddings, never with
//! the square of the corpus.

use super::output::{NegativeFormat, Rows};
use super::{PairsConfig, PairsReport};
use crate::data::Table;
use crate::encode::{encode, Embeddings};
use crate::model::SentenceEncoder;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::{BinaryHeap, HashMap, HashSet};

/// Anchors with their positives (duplicate anchors merged) and the candidate corpus.
struct Grouped {
    rows: Vec<(String, String)>,
    anchors: Vec<String>,
    /// anchor index → corpus indices of its positives
    positives: Vec<Vec<usize>>,
    corpus: Vec<String>,
}

fn group(t: &Table, c: &[usize], extra_corpus: Vec<String>) -> Result<Grouped> {
    let mut rows = Vec::new();
    for r in &t.rows {
        rows.push((t.text(r, c[0])?.into_owned(), t.text(r, c[1])?.into_owned()));
    }
    let mut corpus = Vec::new();
    let mut cindex: HashMap<String, usize> = HashMap::new();
    for s in extra_corpus
        .into_iter()
        .chain(rows.iter().map(|r| r.1.clone()))
    {
        if !cindex.contains_key(&s) {
            cindex.insert(s.clone(), corpus.len());
            corpus.push(s);
        }
    }
    let mut anchors = Vec::new();
    let mut aindex: HashMap<&str, usize> = HashMap::new();
    let mut positives: Vec<Vec<usize>> = Vec::new();
    for (a, p) in &rows {
        let i = *aindex.entry(a.as_str()).or_insert_with(|| {
            anchors.push(a.clone());
            positives.push(Vec::new());
            anchors.len() - 1
        });
        let pi = cindex[p];
        if !positives[i].contains(&pi) {
            positives[i].push(pi);
        }
    }
    Ok(Grouped {
        rows,
        anchors,
        positives,
        corpus,
    })
}

fn read_corpus(cfg: &PairsConfig) -> Result<Vec<String>> {
    let Some(p) = &cfg.negatives.corpus else {
        return Ok(Vec::new());
    };
    crate::data::read_corpus_texts(p)
}

/// `--from pairs`: adds negatives, random or mined.
pub fn add_negatives(
    t: &Table,
    c: &[usize],
    cfg: &PairsConfig,
    report: &mut PairsReport,
) -> Result<Rows> {
    let n = cfg.negatives.num_negatives;
    if n == 0 {
        bail!("--num-negatives must be at least 1");
    }
    let g = group(t, c, read_corpus(cfg)?)?;
    let negatives: Vec<Vec<usize>> = if cfg.negatives.mined {
        let spec = cfg
            .model
            .as_ref()
            .context("hard-negative mining needs --model")?;
        let model = SentenceEncoder::load_on_spec_device(spec)?;
        mine(&model, &g, cfg)?
    } else {
        random(&g, n, cfg.seed)
    };
    Ok(layout(&g, &negatives, n, cfg.negatives.format, report))
}

fn random(g: &Grouped, n: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = Rng::with_stream(seed, 9);
    g.anchors
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let excluded: HashSet<usize> = g.positives[i].iter().copied().collect();
            let pool: Vec<usize> = (0..g.corpus.len())
                .filter(|j| !excluded.contains(j) && g.corpus[*j] != *a)
                .collect();
            let mut pool = pool;
            rng.shuffle(&mut pool);
            pool.truncate(n);
            pool
        })
        .collect()
}

/// Scores of every anchor against every corpus text, keeping the top `k` per anchor,
/// `chunk` corpus rows at a time. Embeddings must be L2-normalised (cosine = dot).
pub fn top_k(
    anchors: &Embeddings,
    corpus: &Embeddings,
    k: usize,
    chunk: usize,
) -> candle_core::Result<Vec<Vec<(f32, usize)>>> {
    top_k_on(&candle_core::Device::Cpu, anchors, corpus, k, chunk)
}

/// [`top_k`] with the score matrix products on `dev` (the model's device when mining).
pub fn top_k_on(
    dev: &candle_core::Device,
    anchors: &Embeddings,
    corpus: &Embeddings,
    k: usize,
    chunk: usize,
) -> candle_core::Result<Vec<Vec<(f32, usize)>>> {
    #[derive(PartialEq)]
    struct MinItem(f32, usize);
    impl Eq for MinItem {}
    impl PartialOrd for MinItem {
        fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(o))
        }
    }
    impl Ord for MinItem {
        fn cmp(&self, o: &Self) -> std::cmp::Ordering {
            // Reversed: the heap's top is the smallest score (ties: larger index first out).
            o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
        }
    }
    let mut heaps: Vec<BinaryHeap<MinItem>> = (0..anchors.len())
        .map(|_| BinaryHeap::with_capacity(k + 1))
        .collect();
    let d = anchors.dim;
    const ANCHOR_CHUNK: usize = 1024;
    for start in (0..corpus.len()).step_by(chunk.max(1)) {
        let end = (start + chunk).min(corpus.len());
        // Scores of an anchor chunk against a corpus chunk as one matrix product (memory:
        // ANCHOR_CHUNK × chunk floats).
        let c = candle_core::Tensor::from_slice(
            &corpus.data[start * d..end * d],
            (end - start, d),
            dev,
        )?
        .t()?;
        for a0 in (0..anchors.len()).step_by(ANCHOR_CHUNK) {
            let a1 = (a0 + ANCHOR_CHUNK).min(anchors.len());
            let a =
                candle_core::Tensor::from_slice(&anchors.data[a0 * d..a1 * d], (a1 - a0, d), dev)?;
            let scores: Vec<Vec<f32>> = a.matmul(&c)?.to_vec2()?;
            for (i, row) in scores.into_iter().enumerate() {
                let heap = &mut heaps[a0 + i];
                for (off, s) in row.into_iter().enumerate() {
                    let j = start + off;
                    if heap.len() < k {
                        heap.push(MinItem(s, j));
                    } else if heap.peek().is_some_and(|m| s > m.0) {
                        heap.pop();
                        heap.push(MinItem(s, j));
                    }
                }
            }
        }
    }
    Ok(heaps
        .into_iter()
        .map(|h| {
            let mut v: Vec<(f32, usize)> = h.into_iter().map(|m| (m.0, m.1)).collect();
            v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            v
        })
        .collect())
}

fn mine(model: &SentenceEncoder, g: &Grouped, cfg: &PairsConfig) -> Result<Vec<Vec<usize>>> {
    let o = &cfg.negatives;
    let mut enc = cfg.encode.clone();
    enc.normalize = true;
    let a_refs: Vec<&str> = g.anchors.iter().map(|s| s.as_str()).collect();
    let c_refs: Vec<&str> = g.corpus.iter().map(|s| s.as_str()).collect();
    let ae = encode(model, &a_refs, &enc)?;
    let ce = encode(model, &c_refs, &enc)?;
    let max_pos = g.positives.iter().map(|p| p.len()).max().unwrap_or(1);
    let filtered = o.margin.is_some() || o.relative_margin.is_some() || o.max_score.is_some();
    let range_max = o
        .range_max
        .unwrap_or(o.range_min + if filtered { 10 } else { 1 } * o.num_negatives + max_pos);
    if o.range_min >= range_max || o.num_negatives > range_max - o.range_min {
        bail!(
            "--range-min {} / --range-max {range_max} leave no room for {} negatives",
            o.range_min,
            o.num_negatives
        );
    }
    let k = (range_max + max_pos + 1).min(ce.len());
    let cands = top_k_on(model.device(), &ae, &ce, k, 4096)?;
    let dot = |i: usize, j: usize| -> f64 {
        ae.row(i)
            .iter()
            .zip(ce.row(j))
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum()
    };
    let mut out = Vec::with_capacity(g.anchors.len());
    for (i, list) in cands.into_iter().enumerate() {
        let pos = g.positives[i]
            .iter()
            .map(|&p| dot(i, p))
            .fold(f64::INFINITY, f64::min);
        let survivors: Vec<usize> = list
            .into_iter()
            .filter(|&(s, j)| {
                let s = s as f64;
                !g.positives[i].contains(&j)
                    && g.corpus[j] != g.anchors[i]
                    && o.margin.is_none_or(|m| s + m <= pos)
                    && o.relative_margin.is_none_or(|m| s <= pos - pos.abs() * m)
                    && o.max_score.is_none_or(|m| s <= m)
                    && o.min_score.is_none_or(|m| s >= m)
            })
            .map(|(_, j)| j)
            .take(range_max)
            .skip(o.range_min)
            .take(o.num_negatives)
            .collect();
        out.push(survivors);
    }
    Ok(out)
}

/// Lays the negatives out as rows (one per original (anchor, positive) row).
fn layout(
    g: &Grouped,
    negs: &[Vec<usize>],
    n: usize,
    format: NegativeFormat,
    report: &mut PairsReport,
) -> Rows {
    let aindex: HashMap<&str, usize> = g
        .anchors
        .iter()
        .enumerate()
        .map(|(i, a)| (a.as_str(), i))
        .collect();
    let mut rows = match format {
        NegativeFormat::Triplet => Rows::new(&["anchor", "positive", "negative"]),
        NegativeFormat::LabeledPair => Rows::new(&["sentence1", "sentence2", "label"]),
        NegativeFormat::NTuple => {
            let mut cols = vec!["anchor".to_string(), "positive".to_string()];
            cols.extend((1..=n).map(|k| format!("negative_{k}")));
            Rows {
                columns: cols,
                rows: Vec::new(),
            }
        }
    };
    for (a, p) in &g.rows {
        let ns = &negs[aindex[a.as_str()]];
        if ns.is_empty() {
            *report
                .skipped
                .entry("no negative found".into())
                .or_default() += 1;
            continue;
        }
        match format {
            NegativeFormat::Triplet => {
                for &j in ns {
                    rows.push(vec![json!(a), json!(p), json!(g.corpus[j])]);
                }
            }
            NegativeFormat::LabeledPair => {
                rows.push(vec![json!(a), json!(p), json!(1)]);
                for &j in ns {
                    rows.push(vec![json!(a), json!(g.corpus[j]), json!(0)]);
                }
            }
            NegativeFormat::NTuple => {
                if ns.len() < n {
                    *report
                        .skipped
                        .entry("fewer negatives than --num-negatives".into())
                        .or_default() += 1;
                    continue;
                }
                let mut r = vec![json!(a), json!(p)];
                r.extend(ns.iter().map(|&j| json!(g.corpus[j])));
                rows.push(r);
            }
        }
    }
    rows
}
