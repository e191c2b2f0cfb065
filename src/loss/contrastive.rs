//! ContrastiveLoss — data: (sentence1, sentence2) + 0/1 label.
//! loss = mean(½·[y·d² + (1−y)·relu(margin − d)²]); distance cosine (1 − cos, margin 0.5) by
//! default, or euclidean / manhattan — as sentence-transformers (size_average=True).

use super::{
    expect_columns, need_labels, pairwise_distance, Distance, InputShape, LabelKind, Loss,
};
use candle_core::Tensor;

pub struct Contrastive {
    pub margin: f64,
    pub distance: Distance,
}

impl Loss for Contrastive {
    fn name(&self) -> &'static str {
        "contrastive"
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
        let y = need_labels(self.name(), labels)?.to_dtype(e[0].dtype())?;
        let d = pairwise_distance(self.distance, &e[0], &e[1])?;
        let pos = (&y * d.sqr()?)?;
        let neg = ((y.ones_like()? - &y)? * d.affine(-1.0, self.margin)?.relu()?.sqr()?)?;
        ((pos + neg)? * 0.5)?.mean_all()
    }
}
