//! MatryoshkaLoss — wraps any loss: the embeddings truncated to each of several dimensions
//! (largest first) and L2-normalised, as sentence-transformers' `shrink` does, the inner loss
//! computed at each, and their weighted sum returned (weights default 1). The model then keeps
//! most of its quality when its embeddings are cut to a prefix (`--truncate-dim`).

use super::{normalize_rows, InputShape, Loss};
use candle_core::Tensor;

pub struct Matryoshka {
    inner: Box<dyn Loss>,
    /// (dimension, weight), largest dimension first.
    dims: Vec<(usize, f64)>,
}

impl Matryoshka {
    pub fn new(inner: Box<dyn Loss>, dims: &[usize], weights: &[f64]) -> Self {
        let mut d: Vec<(usize, f64)> = dims
            .iter()
            .enumerate()
            .map(|(i, &d)| (d, weights.get(i).copied().unwrap_or(1.0)))
            .collect();
        d.sort_by_key(|x| std::cmp::Reverse(x.0));
        Self { inner, dims: d }
    }

    fn each_dim(
        &self,
        embeddings: &[Tensor],
        f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
    ) -> candle_core::Result<Tensor> {
        let mut total: Option<Tensor> = None;
        for &(d, w) in &self.dims {
            let cut: Vec<Tensor> = embeddings
                .iter()
                .map(|e| {
                    let full = e.dim(1)?;
                    if d > full {
                        candle_core::bail!(
                            "matryoshka: dimension {d} is larger than the embeddings' {full}"
                        );
                    }
                    normalize_rows(&e.narrow(1, 0, d)?)
                })
                .collect::<candle_core::Result<_>>()?;
            let l = (f(&cut)? * w)?;
            total = Some(match total {
                Some(t) => (t + l)?,
                None => l,
            });
        }
        total.ok_or_else(|| candle_core::Error::Msg("matryoshka: no dimensions".into()))
    }
}

impl Loss for Matryoshka {
    fn name(&self) -> &'static str {
        "matryoshka"
    }
    fn input_shape(&self) -> InputShape {
        self.inner.input_shape()
    }
    fn compute(&self, e: &[Tensor], labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        self.each_dim(e, |cut| self.inner.compute(cut, labels))
    }
    fn needs_guide(&self) -> bool {
        self.inner.needs_guide()
    }
    fn compute_guided(
        &self,
        e: &[Tensor],
        guide: &[Tensor],
        labels: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        // The guide is another model: its embeddings are not truncated (as sentence-transformers).
        self.each_dim(e, |cut| self.inner.compute_guided(cut, guide, labels))
    }
}
