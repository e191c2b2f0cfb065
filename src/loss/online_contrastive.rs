//! OnlineContrastiveLoss — data: (sentence1, sentence2) + 0/1 label.
//! Only hard pairs count: negatives closer than the farthest positive, positives farther than the
//! closest negative (with sentence-transformers' fallbacks to the mean when a side has ≤ 1 pair).
//! loss = Σ d(pos)² + Σ relu(margin − d(neg))² — a SUM, as sentence-transformers.

use super::{
    expect_columns, need_labels, pairwise_distance, Distance, InputShape, LabelKind, Loss,
};
use candle_core::Tensor;

pub struct OnlineContrastive {
    pub margin: f64,
    pub distance: Distance,
}

impl Loss for OnlineContrastive {
    fn name(&self) -> &'static str {
        "online-contrastive"
    }
    fn input_shape(&self) -> InputShape {
        InputShape {
            min_texts: 2,
            max_texts: Some(2),
            label: LabelKind::Binary,
        }
    }
    fn compute(&self, e: &[Tensor], labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 2)?;
        let y: Vec<f32> = need_labels(self.name(), labels)?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1()?;
        let d = pairwise_distance(self.distance, &e[0], &e[1])?;
        let dv: Vec<f64> = d.to_dtype(candle_core::DType::F64)?.to_vec1()?;
        let pos: Vec<usize> = (0..y.len()).filter(|&i| y[i] == 1.0).collect();
        let neg: Vec<usize> = (0..y.len()).filter(|&i| y[i] != 1.0).collect();
        let mean = |ix: &[usize]| ix.iter().map(|&i| dv[i]).sum::<f64>() / ix.len().max(1) as f64;
        let neg_cut = if pos.len() > 1 {
            pos.iter().map(|&i| dv[i]).fold(f64::MIN, f64::max)
        } else {
            mean(&neg)
        };
        let pos_cut = if neg.len() > 1 {
            neg.iter().map(|&i| dv[i]).fold(f64::MAX, f64::min)
        } else {
            mean(&pos)
        };
        let hard_neg: Vec<u32> = neg
            .iter()
            .filter(|&&i| dv[i] < neg_cut)
            .map(|&i| i as u32)
            .collect();
        let hard_pos: Vec<u32> = pos
            .iter()
            .filter(|&&i| dv[i] > pos_cut)
            .map(|&i| i as u32)
            .collect();
        let mut total = d.zeros_like()?.sum_all()?;
        if !hard_pos.is_empty() {
            let idx = Tensor::new(hard_pos.as_slice(), d.device())?;
            total = (total + d.index_select(&idx, 0)?.sqr()?.sum_all()?)?;
        }
        if !hard_neg.is_empty() {
            let idx = Tensor::new(hard_neg.as_slice(), d.device())?;
            total = (total
                + d.index_select(&idx, 0)?
                    .affine(-1.0, self.margin)?
                    .relu()?
                    .sqr()?
                    .sum_all()?)?;
        }
        Ok(total)
    }
}
