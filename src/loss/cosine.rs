//! CosineSimilarityLoss — data: (sentence1, sentence2) + float score (e.g. 0..1).
//! Loss = mean((cos(u, v) − score)²), as sentence-transformers (MSELoss).

use super::{expect_columns, need_labels, pairwise_cosine, InputShape, LabelKind, Loss};
use candle_core::Tensor;

pub struct CosineSimilarity;

impl Loss for CosineSimilarity {
    fn name(&self) -> &'static str {
        "cosine"
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
        let y = need_labels(self.name(), labels)?.to_dtype(e[0].dtype())?;
        (pairwise_cosine(&e[0], &e[1])? - y)?.sqr()?.mean_all()
    }
}
