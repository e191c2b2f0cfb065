//! The token batches a [`SentenceEncoder`] computes: padded (`[B, S]`) or packed (the sequences
//! back to back, `[1, T]`, no padding: `ops::packed`), per text column or all columns joint, and
//! the way back from a packed pass's hidden states to the padded rows pooling reads. A batch is
//! packed where the encoder takes it on its execution path (`Encoder::packs`) unless packing
//! was turned off (`--no-packing`). Depends on `ops`, `tokenize` and the encoder.

use super::SentenceEncoder;
use crate::ops::{self, Exec};
use crate::tokenize::TokenBatch;
use anyhow::Result;
use candle_core::{Device, Tensor};

/// A training batch's text columns (see [`SentenceEncoder::column_batches`]).
pub struct ColumnBatches {
    pub batches: Vec<TokenBatch>,
    /// `Some((columns, rows))` when all columns share one batch, column by column.
    pub joint_rows: Option<(usize, usize)>,
}

impl SentenceEncoder {
    /// Turns packing on (the default) or off (`--no-packing`: every batch padded).
    pub fn set_packing(&mut self, on: bool) {
        self.packing = on;
    }

    /// Whether this model's batches are packed (packing on, and the encoder takes packed
    /// batches on its execution path).
    pub fn packs(&self) -> bool {
        self.packing && self.encoder.packs(self.exec)
    }

    /// Whether a pass over these token id lists is packed: [`Self::packs`], and no text as
    /// long as `ops::cpu::attention_long::LONG` tokens — sentences that long attend faster
    /// through the padded path's blocked products than row by row, and length-sorted batches of
    /// them pad little.
    pub fn packs_items<'a>(&self, items: impl IntoIterator<Item = &'a [u32]>) -> bool {
        self.packs()
            && items
                .into_iter()
                .all(|i| i.len() < crate::ops::cpu::attention_long::LONG)
    }

    /// One batch of token id lists: packed when [`Self::packs_items`], else right-padded.
    pub fn batch(&self, items: &[&[u32]], device: &Device) -> Result<TokenBatch> {
        if self.packs_items(items.iter().copied()) {
            self.tokenizer.pack(items, device)
        } else {
            self.tokenizer.pad(items, device)
        }
    }

    /// The batches of a training step's text columns (`columns[c][i]`: row i of column c;
    /// `prompt_lens[c]`: column c's leading prompt tokens, see `TokenBatch::prompt_len`): one
    /// batch per column, or with `joint` all columns in one batch (one forward pass instead of
    /// one per column — fewer, larger kernels — at the cost, when padded, of padding every
    /// column to the longest text of all; not when pooling must leave out prompts of different
    /// lengths).
    pub fn column_batches(
        &self,
        columns: &[Vec<&[u32]>],
        prompt_lens: &[usize],
        joint: bool,
        device: &Device,
    ) -> Result<ColumnBatches> {
        let plen = |c: usize| prompt_lens.get(c).copied().unwrap_or(0);
        let same_prompts =
            self.pooling.include_prompt || (0..columns.len()).all(|c| plen(c) == plen(0));
        if joint && columns.len() > 1 && same_prompts {
            let rows = columns[0].len();
            if columns.iter().any(|c| c.len() != rows) {
                anyhow::bail!("internal: text columns of different lengths in one batch");
            }
            let all: Vec<&[u32]> = columns.iter().flatten().copied().collect();
            let mut batch = self.batch(&all, device)?;
            batch.prompt_len = plen(0);
            Ok(ColumnBatches {
                batches: vec![batch],
                joint_rows: Some((columns.len(), rows)),
            })
        } else {
            Ok(ColumnBatches {
                batches: columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let mut b = self.batch(c, device)?;
                        b.prompt_len = plen(i);
                        Ok(b)
                    })
                    .collect::<Result<_>>()?,
                joint_rows: None,
            })
        }
    }

    /// Embeddings `[B, D]` of each text column of [`Self::column_batches`]' batches, tracked for
    /// autograd (a joint batch is split back into its columns).
    pub fn embed_columns(
        &self,
        b: &ColumnBatches,
        train: bool,
    ) -> candle_core::Result<Vec<Tensor>> {
        split_columns(b, |x| self.embed_batch(x, train))
    }

    /// Train-mode embeddings of each text column without a graph (GradCache's first pass; see
    /// `embed_batch_no_graph`).
    pub fn embed_columns_no_graph(&self, b: &ColumnBatches) -> candle_core::Result<Vec<Tensor>> {
        split_columns(b, |x| self.embed_batch_no_graph(x))
    }
}

/// `embed` of each batch, a joint one split back into its columns.
fn split_columns(
    b: &ColumnBatches,
    embed: impl Fn(&TokenBatch) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Vec<Tensor>> {
    match b.joint_rows {
        Some((cols, rows)) => {
            let e = embed(&b.batches[0])?;
            (0..cols).map(|c| e.narrow(0, c * rows, rows)).collect()
        }
        None => b.batches.iter().map(embed).collect(),
    }
}

/// The hidden states of `batch` as padded `[B, S, H]`: a packed pass's `[1, T, H]` rows
/// gathered into their padded places (zeros in the padding; the gather's backward adds the
/// gradient back into the packed rows), a padded pass's unchanged.
pub(crate) fn unpacked(
    exec: Exec,
    hidden: &Tensor,
    batch: &TokenBatch,
) -> candle_core::Result<Tensor> {
    let Some(p) = &batch.packed else {
        return Ok(hidden.clone());
    };
    let (_, t, h) = hidden.dims3()?;
    if t != p.tokens() {
        candle_core::bail!(
            "hidden states of {t} rows for a packed batch of {}",
            p.tokens()
        );
    }
    let rows = Tensor::cat(
        &[
            &hidden.reshape((t, h))?,
            &Tensor::zeros((1, h), hidden.dtype(), hidden.device())?,
        ],
        0,
    )?;
    let index: Vec<u32> = p
        .padded_rows()
        .iter()
        .map(|r| r.unwrap_or(t) as u32)
        .collect();
    let index = Tensor::from_vec(index, p.batch() * p.seq(), hidden.device())?;
    ops::embedding(exec, &rows, &index)?.reshape((p.batch(), p.seq(), h))
}
