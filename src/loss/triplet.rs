//! TripletLoss — data: (anchor, positive, negative), no label.
//! loss = mean(relu(d(a, p) − d(a, n) + margin)); euclidean with margin 5 by default (cosine or
//! manhattan on request) — as sentence-transformers.

use super::{expect_columns, pairwise_distance, Distance, InputShape, LabelKind, Loss};
use candle_core::Tensor;

pub struct Triplet {
    pub margin: f64,
    pub distance: Distance,
}

impl Loss for Triplet {
    fn name(&self) -> &'static str {
        "triplet"
    }
    fn input_shape(&self) -> InputShape {
        InputShape {
            min_texts: 3,
            max_texts: Some(3),
            label: LabelKind::None,
        }
    }
    fn compute(&self, e: &[Tensor], _labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 3)?;
        let dp = pairwise_distance(self.distance, &e[0], &e[1])?;
        let dn = pairwise_distance(self.distance, &e[0], &e[2])?;
        ((dp - dn)? + self.margin)?.relu()?.mean_all()
    }
}
