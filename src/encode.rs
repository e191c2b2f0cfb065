//! Batched inference: texts → embeddings `[N, D]` in input order. Like sentence-transformers'
//! `encode`, texts are sorted by length (longest first; here by token count) so each batch pads
//! little, then restored to input order. A batch holds at most `batch_size` texts and at most
//! a token budget of computed tokens ([`batches`]; by default [`PACKED_TOKEN_BUDGET`] for
//! packed batches). Used by `embed`, `eval` (also during training), retrieval, mining,
//! `similarity`, `bench encode` and `check-device`.

use crate::model::SentenceEncoder;
use crate::progress::Progress;
use anyhow::Result;

/// Options of one encoding job.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EncodeOptions {
    /// Texts per forward pass (default 32, as sentence-transformers).
    pub batch_size: usize,
    /// At most this many tokens computed per forward pass as well (`--max-tokens-per-batch`;
    /// packed batches: the texts' tokens, padded: texts × the longest); None: the default of
    /// [`token_budget`]; Some(0): no budget, texts only.
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// L2-normalise outputs even if the model has no Normalize module.
    pub normalize: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Prepended to every text (`Some("")`: no prompt); `None`: the model's default prompt, as
    /// sentence-transformers' `encode` does. With the model's `include_prompt: false` the
    /// prompt's tokens are left out of pooling.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Keep the first this many dimensions (`--truncate-dim`; Matryoshka models), as
    /// sentence-transformers' `truncate_dim`: cut after the model's own Normalize, normalised
    /// again only when `normalize` asks for it.
    #[serde(default)]
    pub truncate_dim: Option<usize>,
    /// Several data-parallel ranks share the work (evaluation during training): each embeds
    /// every world-th batch of the length-sorted order, and a sum over the ranks (each row is
    /// one rank's, zeros elsewhere, so the sum is exact) gives every rank all the embeddings —
    /// the same bytes as one device, whose batches are the same.
    #[serde(skip)]
    pub shard: Shard,
}

/// The ranks of a sharded encoding (`None`: one device).
#[derive(Clone, Default)]
pub struct Shard(pub Option<std::sync::Arc<dyn crate::dist::Collective>>);

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(c) => write!(f, "Shard(rank {} of {})", c.rank(), c.world()),
            None => write!(f, "Shard(none)"),
        }
    }
}

impl EncodeOptions {
    /// The dimension of the embeddings these options give with `model`.
    pub fn out_dim(&self, model: &SentenceEncoder) -> usize {
        self.truncate_dim
            .map_or(model.dim(), |d| d.min(model.dim()))
    }
}

/// `--truncate-dim` against the model: at most its embedding dimension.
pub fn check_truncate_dim(opts: &EncodeOptions, model: &SentenceEncoder) -> Result<()> {
    match opts.truncate_dim {
        Some(0) => anyhow::bail!("--truncate-dim must be at least 1"),
        Some(d) if d > model.dim() => anyhow::bail!(
            "--truncate-dim {d} is larger than the model's embedding dimension {}",
            model.dim()
        ),
        _ => Ok(()),
    }
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_tokens: None,
            normalize: false,
            progress: false,
            prompt: None,
            truncate_dim: None,
            shard: Shard::default(),
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

/// Encodes `texts` in eval mode (no dropout), each with the prompt of `opts` prepended.
pub fn encode(model: &SentenceEncoder, texts: &[&str], opts: &EncodeOptions) -> Result<Embeddings> {
    check_truncate_dim(opts, model)?;
    let dim = opts.out_dim(model);
    let cut = dim < model.dim();
    let bs = opts.batch_size.max(1);
    let prompt = model.prompt_for(opts.prompt.as_deref())?;
    let (toks, prompt_len) = match &prompt {
        None => (model.tokenizer.tokenize(texts)?, 0),
        Some(p) => {
            let joined: Vec<String> = texts.iter().map(|t| format!("{p}{t}")).collect();
            let refs: Vec<&str> = joined.iter().map(String::as_str).collect();
            let len = crate::model::prompts::prompt_length(&model.tokenizer, p)?;
            (model.tokenizer.tokenize(&refs)?, len)
        }
    };
    let truncated = toks.iter().filter(|t| t.truncated).count();
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(toks[i].ids.len()));
    let mut data = vec![0f32; texts.len() * dim];
    let mut bar = Progress::new("encoding", texts.len() as u64, opts.progress);
    let ranks = opts.shard.0.as_ref().map(|c| (c.rank(), c.world()));
    let lens: Vec<usize> = order.iter().map(|&i| toks[i].ids.len()).collect();
    let spans = batches(
        &lens,
        bs,
        token_budget(opts.max_tokens, model.packs() && model.device().is_cpu()),
        model.packs(),
    );
    for (k, span) in spans.into_iter().enumerate() {
        let chunk = &order[span];
        if ranks.is_some_and(|(r, w)| k % w != r) {
            bar.inc(chunk.len() as u64);
            continue;
        }
        let ids: Vec<&[u32]> = chunk.iter().map(|&i| toks[i].ids.as_slice()).collect();
        let mut batch = model.batch(&ids, model.device())?;
        batch.prompt_len = prompt_len;
        let mut emb = model.embed_inference(&batch)?;
        if cut {
            emb = emb.narrow(1, 0, dim)?;
        }
        if opts.normalize && (!model.normalize || cut) {
            emb = crate::model::pooling::l2_normalize(&emb)?;
        }
        let rows: Vec<Vec<f32>> = emb.to_dtype(candle_core::DType::F32)?.to_vec2()?;
        for (&i, row) in chunk.iter().zip(rows) {
            data[i * dim..(i + 1) * dim].copy_from_slice(&row);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    if let Some(c) = &opts.shard.0 {
        c.all_reduce_sum(&mut data)?;
    }
    Ok(Embeddings {
        data,
        dim,
        truncated,
    })
}

/// The token budget when `--max-tokens-per-batch` is not given: 2048 tokens for packed batches
/// on the CPU, chosen by `scripts/bench_token_budget.py` (results/token-budget.md): with it
/// `embed` of all-MiniLM-L6-v2 stays at the model's floor of peak RSS (182 MiB against 262 MiB
/// for passages at batch 32 and 560 MiB at 128) and is as fast or faster (passages at batch 128:
/// 74.5 against 66.4 sentences/s). None for padded batches and on GPUs (packed there too): GPUs
/// want large batches and were not measured here.
pub const PACKED_TOKEN_BUDGET: usize = 2048;

/// The budget a job uses: the one given (0: none), else [`PACKED_TOKEN_BUDGET`] for packed
/// batches on the CPU (`packed_cpu`).
pub fn token_budget(given: Option<usize>, packed_cpu: bool) -> Option<usize> {
    match given {
        Some(0) => None,
        Some(m) => Some(m),
        None => packed_cpu.then_some(PACKED_TOKEN_BUDGET),
    }
}

/// Consecutive batches of texts of `lens` tokens (sorted longest first): at most `bs` texts
/// each and, with `max_tokens`, at most that many tokens computed — the texts' own tokens when
/// `packed` (and the batch's longest text is shorter than `attention_long::LONG`, as
/// `SentenceEncoder::packs_items` packs), else texts × the first (longest) one's; a text over the
/// budget goes alone.
pub fn batches(
    lens: &[usize],
    bs: usize,
    max_tokens: Option<usize>,
    packed: bool,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lens.len() {
        let mut end = start + 1;
        let mut tokens = lens[start];
        // Longest first: the first text decides whether the batch will be packed.
        let packs = packed && lens[start] < crate::ops::cpu::attention_long::LONG;
        while end < lens.len() && end - start < bs.max(1) {
            let next = if packs {
                tokens + lens[end]
            } else {
                (end - start + 1) * lens[start]
            };
            if max_tokens.is_some_and(|m| next > m) {
                break;
            }
            tokens = next;
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::batches;

    #[test]
    fn batches_keep_to_the_text_count_and_the_token_budget() {
        let lens = [10, 8, 8, 5, 3, 3, 1];
        assert_eq!(batches(&lens, 3, None, true), [0..3, 3..6, 6..7]);
        // Packed: 10 + 8 = 18 ≤ 20, + 8 is over; 8 + 5 + 3 + 3 + 1 = 20.
        assert_eq!(batches(&lens, 32, Some(20), true), [0..2, 2..7]);
        // Padded: 2 × 10 = 20, a third is over (30); 2 × 8 = 16, a third is over (24); 3 × 3.
        assert_eq!(batches(&lens, 32, Some(20), false), [0..2, 2..4, 4..7]);
        // A text over the budget goes alone.
        assert_eq!(batches(&[30, 2], 32, Some(20), true), [0..1, 1..2]);
        assert!(batches(&[], 32, Some(20), true).is_empty());
        // Texts as long as attention_long::LONG are padded, so they count as padded.
        let long = crate::ops::cpu::attention_long::LONG;
        assert_eq!(batches(&[long, 2], 32, Some(long + 2), true), [0..1, 1..2]);
        assert_eq!(batches(&[long - 1, 2], 32, Some(long + 1), true), [0..2]);
        // The default: 2048 for packed batches, none for padded ones; 0 turns it off.
        use super::token_budget;
        assert_eq!(token_budget(None, true), Some(2048));
        assert_eq!(token_budget(None, false), None);
        assert_eq!(token_budget(Some(0), true), None);
        assert_eq!(token_budget(Some(512), false), Some(512));
    }
}
