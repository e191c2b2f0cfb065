//! Batched inference: texts → embeddings `[N, D]` in input order. Like sentence-transformers'
//! `encode`, texts are sorted by length (longest first; here by token count) so each batch pads
//! little, then restored to input order. Used by `embed`, `eval` and mining.

use crate::model::SentenceEncoder;
use crate::progress::Progress;
use anyhow::Result;

/// Options of one encoding job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EncodeOptions {
    /// Texts per forward pass (default 32, as sentence-transformers).
    pub batch_size: usize,
    /// L2-normalise outputs even if the model has no Normalize module.
    pub normalize: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            normalize: false,
            progress: false,
        }
    }
}

/// Row-major embeddings of `n` texts, `dim` floats each.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub data: Vec<f32>,
    pub dim: usize,
    /// Texts longer than max_seq_length, truncated.
    pub truncated: usize,
}

impl Embeddings {
    pub fn len(&self) -> usize {
        if self.dim == 0 {
            0
        } else {
            self.data.len() / self.dim
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Encodes `texts` in eval mode (no dropout).
pub fn encode(model: &SentenceEncoder, texts: &[&str], opts: &EncodeOptions) -> Result<Embeddings> {
    let dim = model.dim();
    let bs = opts.batch_size.max(1);
    let toks = model.tokenizer.tokenize(texts)?;
    let truncated = toks.iter().filter(|t| t.truncated).count();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(toks[i].ids.len()));
    let mut data = vec![0f32; texts.len() * dim];
    let mut bar = Progress::new("encoding", texts.len() as u64, opts.progress);
    for chunk in order.chunks(bs) {
        let ids: Vec<&[u32]> = chunk.iter().map(|&i| toks[i].ids.as_slice()).collect();
        let batch = model.tokenizer.pad(&ids, model.device())?;
        let mut emb = model.embed_inference(&batch)?;
        if opts.normalize && !model.normalize {
            emb = crate::model::pooling::l2_normalize(&emb)?;
        }
        let rows: Vec<Vec<f32>> = emb.to_dtype(candle_core::DType::F32)?.to_vec2()?;
        for (&i, row) in chunk.iter().zip(rows) {
            data[i * dim..(i + 1) * dim].copy_from_slice(&row);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(Embeddings {
        data,
        dim,
        truncated,
    })
}
