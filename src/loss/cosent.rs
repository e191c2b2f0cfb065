//! CoSENTLoss and AnglELoss — data: (sentence1, sentence2) + float score.
//! With s = scale·sim(u, v): loss = log(1 + Σ_{(i,j): yᵢ < yⱼ} exp(sᵢ − sⱼ)), scale 20 — as
//! sentence-transformers (logsumexp over the masked pairwise differences with a leading 0).
//! sim is cosine (CoSENT) or AnglE's angle similarity (`pairwise_angle`; AnglELoss is CoSENT
//! with that similarity in sentence-transformers too).

use super::{
    expect_columns, need_labels, pairwise_angle, pairwise_cosine, InputShape, LabelKind, Loss,
};
use candle_core::{Tensor, D};

pub struct Cosent {
    pub scale: f64,
    /// AnglE's angle similarity instead of cosine (AnglELoss).
    pub angle: bool,
}

impl Loss for Cosent {
    fn name(&self) -> &'static str {
        if self.angle {
            "angle"
        } else {
            "cosent"
        }
    }
    fn input_shape(&self) -> InputShape {
        InputShape {
            min_texts: 2,
            max_texts: Some(2),
            label: LabelKind::Score,
        }
    }
    fn compute(&self, e: &[Tensor], labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 2)?;
        let y = need_labels(self.name(), labels)?.to_dtype(candle_core::DType::F32)?;
        let sim = if self.angle {
            pairwise_angle(&e[0], &e[1])?
        } else {
            pairwise_cosine(&e[0], &e[1])?
        };
        let s = (sim * self.scale)?; // [B]
                                     // diff[i, j] = s_i - s_j, kept where y_i < y_j (the mask is built on the device: no
                                     // copy of the labels to the host, so a GPU step never waits here).
        let diff = s.unsqueeze(1)?.broadcast_sub(&s.unsqueeze(0)?)?;
        let mask = y
            .unsqueeze(1)?
            .broadcast_lt(&y.unsqueeze(0)?)?
            .to_dtype(s.dtype())?;
        // Masked-out entries get −1e12, as sentence-transformers; exp underflows to exactly 0.
        let masked = (diff.broadcast_mul(&mask)? + ((mask.ones_like()? - &mask)? * -1e12)?)?
            .flatten_all()?;
        let all = Tensor::cat(&[masked.zeros_like()?.narrow(0, 0, 1)?, masked], 0)?;
        logsumexp(&all)
    }
}

/// Stable log Σ exp over a vector (the max is a constant for the gradient).
pub(crate) fn logsumexp(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    (x.broadcast_sub(&m)?.exp()?.sum_keepdim(D::Minus1)?.log()? + m)?.squeeze(0)
}
