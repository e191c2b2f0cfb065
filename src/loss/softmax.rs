//! SoftmaxLoss, the original SBERT objective for NLI — data: (sentence1, sentence2) + a class
//! label (ids 0…K−1 or class names). A linear classifier on `[u, v, |u − v|]` (3·D → K, as
//! sentence-transformers' defaults: rep and difference concatenated, no product) trained with
//! cross-entropy. The classifier is the loss's (`head.rs`): not saved into the model, as ST.

use super::head::{cross_entropy, HeadInit, LinearHead};
use super::{expect_columns, need_labels, InputShape, LabelKind, Loss};
use candle_core::{Tensor, Var};
use std::sync::OnceLock;

#[derive(Default)]
pub struct Softmax {
    classifier: OnceLock<LinearHead>,
}

impl Softmax {
    /// With a given classifier (`[K, 3·D]`, `[K]`) instead of one made by [`Loss::init`].
    pub fn with_classifier(head: LinearHead) -> Self {
        let s = Self::default();
        let _ = s.classifier.set(head);
        s
    }
    fn head(&self) -> candle_core::Result<&LinearHead> {
        self.classifier
            .get()
            .ok_or_else(|| candle_core::Error::Msg("softmax: the classifier was not set up".into()))
    }
}

impl Loss for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn input_shape(&self) -> InputShape {
        InputShape {
            min_texts: 2,
            max_texts: Some(2),
            label: LabelKind::Class,
        }
    }
    fn init(&self, h: &HeadInit) -> anyhow::Result<()> {
        let head = LinearHead::new(3 * h.dim, h.num_classes, h.device, h.seed)?;
        let _ = self.classifier.set(head);
        Ok(())
    }
    fn params(&self) -> Vec<(String, Var)> {
        self.classifier
            .get()
            .map(|h| h.named("classifier"))
            .unwrap_or_default()
    }
    fn compute(&self, e: &[Tensor], labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 2)?;
        let y = need_labels(self.name(), labels)?;
        let (u, v) = (&e[0], &e[1]);
        let features = Tensor::cat(&[u, v, &(u - v)?.abs()?], 1)?;
        cross_entropy(&self.head()?.forward(&features)?, y)
    }
}
