//! Exact top-k by chunked matrix products: the best `k` corpus rows per anchor (cosine of
//! L2-normalised embeddings = dot), fed a run of corpus rows at a time, so memory holds the
//! heaps and one chunk of scores, never the full score matrix. Ties go to the lower corpus
//! index. Used by mining and the retrieval evaluator. Depends on candle and `encode::Embeddings`.

use crate::encode::Embeddings;
use std::collections::BinaryHeap;

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
    let mut t = TopK::new(anchors.len(), k);
    for start in (0..corpus.len()).step_by(chunk.max(1)) {
        let end = (start + chunk).min(corpus.len());
        let d = corpus.dim;
        t.add(dev, anchors, &corpus.data[start * d..end * d], start)?;
    }
    Ok(t.finish())
}

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

/// The best `k` corpus rows per anchor, fed a run of corpus rows at a time.
pub struct TopK {
    heaps: Vec<BinaryHeap<MinItem>>,
    k: usize,
}

impl TopK {
    pub fn new(anchors: usize, k: usize) -> Self {
        Self {
            // Reserved up to a bound: a large k on a small corpus must not reserve k per anchor.
            heaps: (0..anchors)
                .map(|_| BinaryHeap::with_capacity(k.min(1024) + 1))
                .collect(),
            k,
        }
    }

    /// Scores corpus rows `rows` (row-major, the anchors' width; the first is corpus index
    /// `first`) against every anchor. Embeddings must be L2-normalised (cosine = dot).
    pub fn add(
        &mut self,
        dev: &candle_core::Device,
        anchors: &Embeddings,
        rows: &[f32],
        first: usize,
    ) -> candle_core::Result<()> {
        let d = anchors.dim;
        let n = rows.len() / d.max(1);
        if n == 0 {
            return Ok(());
        }
        const ANCHOR_CHUNK: usize = 1024;
        // Scores of an anchor chunk against the rows as one matrix product (memory:
        // ANCHOR_CHUNK × rows floats).
        let c = candle_core::Tensor::from_slice(rows, (n, d), dev)?.t()?;
        for a0 in (0..anchors.len()).step_by(ANCHOR_CHUNK) {
            let a1 = (a0 + ANCHOR_CHUNK).min(anchors.len());
            let a =
                candle_core::Tensor::from_slice(&anchors.data[a0 * d..a1 * d], (a1 - a0, d), dev)?;
            let scores: Vec<Vec<f32>> = a.matmul(&c)?.to_vec2()?;
            for (i, row) in scores.into_iter().enumerate() {
                let heap = &mut self.heaps[a0 + i];
                for (off, s) in row.into_iter().enumerate() {
                    let j = first + off;
                    if heap.len() < self.k {
                        heap.push(MinItem(s, j));
                    } else if heap.peek().is_some_and(|m| s > m.0) {
                        heap.pop();
                        heap.push(MinItem(s, j));
                    }
                }
            }
        }
        Ok(())
    }

    /// Each anchor's list, best first (ties by corpus index).
    pub fn finish(self) -> Vec<Vec<(f32, usize)>> {
        self.heaps
            .into_iter()
            .map(|h| {
                let mut v: Vec<(f32, usize)> = h.into_iter().map(|m| (m.0, m.1)).collect();
                v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                v
            })
            .collect()
    }
}
