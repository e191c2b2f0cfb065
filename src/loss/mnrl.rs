//! MultipleNegativesRankingLoss (InfoNCE) — data: (anchor, positive, [hard negatives…]), no label.
//! scores = scale·cos(anchorᵢ, candidateⱼ) over candidates = all positives then all negatives of
//! the batch; loss = cross-entropy with target i (in-batch negatives). `symmetric` adds the
//! positive→anchor direction and averages the two (MultipleNegativesSymmetricRankingLoss).
//! A single text column trains SimCSE-style: the caller passes the same texts twice.

use super::{cosine_matrix, expect_columns, InputShape, LabelKind, Loss};
use candle_core::{Tensor, D};

pub struct Mnrl {
    pub scale: f64,
    pub symmetric: bool,
}

/// Mean cross-entropy of `logits [B, C]` with targets 0..B (the diagonal).
pub(crate) fn diagonal_cross_entropy(logits: &Tensor) -> candle_core::Result<Tensor> {
    let (b, _) = logits.dims2()?;
    let m = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&m)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &m)?
        .squeeze(1)?; // [B]
    let targets = Tensor::arange(0u32, b as u32, logits.device())?.unsqueeze(1)?;
    let picked = logits.gather(&targets, 1)?.squeeze(1)?; // [B]
    (lse - picked)?.mean_all()
}

impl Loss for Mnrl {
    fn name(&self) -> &'static str {
        "mnrl"
    }
    fn input_shape(&self) -> InputShape {
        InputShape {
            min_texts: 2,
            max_texts: None,
            label: LabelKind::None,
        }
    }
    fn compute(&self, e: &[Tensor], _labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 2)?;
        let candidates = Tensor::cat(&e[1..], 0)?;
        let scores = (cosine_matrix(&e[0], &candidates)? * self.scale)?; // [B, B·(k+1)]
        let forward = diagonal_cross_entropy(&scores)?;
        if !self.symmetric {
            return Ok(forward);
        }
        let b = e[0].dim(0)?;
        let backward = diagonal_cross_entropy(&scores.narrow(1, 0, b)?.t()?.contiguous()?)?;
        (forward + backward)? * 0.5
    }
}

/// MNRL whose candidates are every rank's (`--gather-across-devices`): each column of
/// candidates is gathered across ranks (`dist::gather::gather_rows`, whose backward returns each
/// rank the gradient of every rank's loss for its rows) and rotated so this rank's rows come
/// first — the positive of local anchor i stays at column i, and a cross-entropy over a
/// permuted candidate set is the same. The symmetric term ranks every rank's anchors for each
/// local positive. Each rank's loss is the mean over its own anchors; the data-parallel mean of
/// the ranks' gradients is then the gradient of one device with the global batch.
pub struct GatheredMnrl {
    pub inner: Mnrl,
    pub comm: std::sync::Arc<dyn crate::dist::Collective>,
}

impl GatheredMnrl {
    fn all_rows(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::dist::gather::gather_rows_own_first(x, self.comm.clone())
    }
}

impl Loss for GatheredMnrl {
    fn name(&self) -> &'static str {
        "mnrl"
    }
    fn input_shape(&self) -> InputShape {
        self.inner.input_shape()
    }
    fn compute(&self, e: &[Tensor], _labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 2)?;
        let cols: Vec<Tensor> = e[1..]
            .iter()
            .map(|c| self.all_rows(c))
            .collect::<candle_core::Result<_>>()?;
        let candidates = Tensor::cat(&cols, 0)?;
        let scores = (cosine_matrix(&e[0], &candidates)? * self.inner.scale)?;
        let forward = diagonal_cross_entropy(&scores)?;
        if !self.inner.symmetric {
            return Ok(forward);
        }
        let anchors = self.all_rows(&e[0])?;
        let back = (cosine_matrix(&e[1], &anchors)? * self.inner.scale)?;
        (forward + diagonal_cross_entropy(&back)?)? * 0.5
    }
}
