//! The embedding block: word rows + absolute position rows + token-type rows (when the family
//! has them), summed and LayerNorm-ed (dropout is the caller's). Positions either count from 0
//! (BERT, DistilBERT) or follow RoBERTa/MPNet: a token's position is `padding_idx` + its rank
//! among the non-padding ids of its row, and padding ids keep `padding_idx` (HF's
//! `create_position_ids_from_input_ids`). Depends on `ops`, `nn`, `model::weights`,
//! `tokenize::TokenBatch`.

use super::{LayerNorm, ParamStore};
use crate::model::encoder::Fwd;
use crate::model::weights::{Init, WeightSpec};
use crate::ops;
use crate::tokenize::TokenBatch;
use candle_core::{Result, Tensor, Var};

/// How position ids are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// 0, 1, …, S−1 for every row.
    Range,
    /// RoBERTa / XLM-R / CamemBERT / MPNet: from the ids, after `padding_idx`.
    AfterPadding { padding_idx: u32 },
}

impl Positions {
    /// Position rows a sequence of `n` tokens needs (the table must have at least this many).
    pub fn rows_needed(self, n: usize) -> usize {
        match self {
            Positions::Range => n,
            Positions::AfterPadding { padding_idx } => n + padding_idx as usize + 1,
        }
    }

    /// Host position ids `[T]` of sequences packed back to back (`lengths[i]` ids each): what
    /// each token has in its own sequence, as [`Self::ids`] gives it in a padded row.
    pub fn ids_packed(self, ids: &[u32], lengths: &[usize]) -> Vec<u32> {
        let mut out = Vec::with_capacity(ids.len());
        let mut start = 0;
        for &l in lengths {
            let row = &ids[start..start + l];
            out.extend(self.ids(row, l.max(1)).into_iter().take(l));
            start += l;
        }
        out
    }

    /// Host position ids `[B·S]` of right-padded rows `ids` (row-major, `s` per row).
    pub fn ids(self, ids: &[u32], s: usize) -> Vec<u32> {
        match self {
            Positions::Range => (0..ids.len()).map(|i| (i % s.max(1)) as u32).collect(),
            Positions::AfterPadding { padding_idx } => {
                let mut out = Vec::with_capacity(ids.len());
                for row in ids.chunks(s.max(1)) {
                    let mut rank = 0;
                    out.extend(row.iter().map(|&t| {
                        if t == padding_idx {
                            padding_idx
                        } else {
                            rank += 1;
                            padding_idx + rank
                        }
                    }));
                }
                out
            }
        }
    }
}

pub struct Embeddings {
    pub word: Var,
    pub position: Var,
    pub positions: Positions,
    pub token_type: Option<Var>,
    pub norm: LayerNorm,
    pub hidden: usize,
}

impl Embeddings {
    /// Adds the block's tensors to `spec` in checkpoint order: word `[vocab, H]`, position
    /// `[positions, H]`, token type `[types, H]` (when the family has them), LayerNorm.
    pub fn spec(
        spec: &mut WeightSpec,
        vocab: usize,
        positions: usize,
        hidden: usize,
        types: Option<usize>,
    ) {
        spec.tensor(
            "embeddings.word_embeddings.weight",
            vec![vocab, hidden],
            Init::Normal,
        );
        spec.tensor(
            "embeddings.position_embeddings.weight",
            vec![positions, hidden],
            Init::Normal,
        );
        if let Some(t) = types {
            spec.tensor(
                "embeddings.token_type_embeddings.weight",
                vec![t, hidden],
                Init::Normal,
            );
        }
        spec.norm("embeddings.LayerNorm", hidden);
    }

    /// `embeddings.{word,position,token_type}_embeddings.weight` and `embeddings.LayerNorm`.
    pub fn load(
        store: &ParamStore,
        positions: Positions,
        token_types: bool,
        hidden: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            word: store.var("embeddings.word_embeddings.weight")?,
            position: store.var("embeddings.position_embeddings.weight")?,
            positions,
            token_type: token_types
                .then(|| store.var("embeddings.token_type_embeddings.weight"))
                .transpose()?,
            norm: LayerNorm::load(store, "embeddings.LayerNorm", eps)?,
            hidden,
        })
    }

    /// `LayerNorm(words + positions + token types)`: `[B, S, H]` in the compute dtype. Sums are
    /// in the weights' dtype (gathering rows is cheap); the norm hands on the compute dtype.
    pub fn forward(&self, batch: &TokenBatch, fwd: &Fwd) -> Result<Tensor> {
        let (b, s) = batch.input_ids.dims2()?;
        let (exec, h) = (fwd.exec, self.hidden);
        let words =
            ops::embedding(exec, &fwd.param(&self.word), &batch.input_ids)?.reshape((b, s, h))?;
        let table = fwd.param(&self.position);
        let pos = match (self.positions, &batch.packed) {
            // The rows 0..S, broadcast over the batch: a narrow, whose backward is cheap.
            (Positions::Range, None) => table.narrow(0, 0, s)?,
            (_, Some(p)) => {
                let ids = self.positions.ids_packed(&batch.ids, &batch.lengths);
                let ids = Tensor::from_vec(ids, p.tokens(), table.device())?;
                ops::embedding(exec, &table, &ids)?.reshape((b, s, h))?
            }
            (Positions::AfterPadding { .. }, None) => {
                let ids =
                    Tensor::from_vec(self.positions.ids(&batch.ids, s), b * s, table.device())?;
                ops::embedding(exec, &table, &ids)?.reshape((b, s, h))?
            }
        };
        let mut parts = vec![words, pos];
        if let Some(tt) = &self.token_type {
            let tt = fwd.param(tt);
            parts.push(if batch.single_segment {
                // Every type id is 0: row 0, broadcast.
                tt.narrow(0, 0, 1)?
            } else {
                ops::embedding(exec, &tt, &batch.token_type_ids)?.reshape((b, s, h))?
            });
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        let (w, bias, eps) = self.norm.get(fwd)?;
        let x = ops::sum_layer_norm(exec, &refs, &w, &bias, eps, fwd.grad)?;
        if x.dtype() == fwd.compute {
            Ok(x)
        } else {
            x.to_dtype(fwd.compute)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HF's `create_position_ids_from_input_ids`: [[0,5,6,7,2,1,1]] with padding_idx 1 →
    /// [2,3,4,5,6,1,1]; a padding id inside a row keeps padding_idx and later tokens continue.
    #[test]
    fn roberta_positions_follow_the_padding_index() {
        let p = Positions::AfterPadding { padding_idx: 1 };
        assert_eq!(p.ids(&[0, 5, 6, 7, 2, 1, 1], 7), vec![2, 3, 4, 5, 6, 1, 1]);
        assert_eq!(
            p.ids(&[0, 1, 6, 2, 9, 9, 2, 1], 4),
            vec![2, 1, 3, 4, 2, 3, 4, 1]
        );
        assert_eq!(
            Positions::Range.ids(&[4, 4, 4, 0, 0, 0], 3),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(p.rows_needed(512), 514);
        // Packed: each sequence as its own row, without the padding.
        assert_eq!(
            p.ids_packed(&[0, 5, 2, 0, 7, 8, 2], &[3, 4]),
            vec![2, 3, 4, 2, 3, 4, 5]
        );
        assert_eq!(
            Positions::Range.ids_packed(&[4, 4, 4, 4], &[1, 3]),
            vec![0, 0, 1, 2]
        );
    }
}
