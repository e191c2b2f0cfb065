//! GISTEmbedLoss — data: (anchor, positive, [negatives…]), no label. As sentence-transformers'
//! defaults (absolute margin 0, anchors and positives contrasted): with cosine matrices of the
//! trained model — anchor×positive, anchor×anchor, positive×positive, anchor×each negative column
//! — every candidate that the frozen guide model scores above the guide's own anchor–positive
//! cosine (minus the margin) is set to −∞ (a likely false negative; the positive itself is kept),
//! the blocks are concatenated, divided by the temperature (0.01), and the loss is the
//! cross-entropy with target i. sentence-transformers takes one negative column; more are
//! taken here the same way.

use super::mnrl::diagonal_cross_entropy;
use super::{cosine_matrix, expect_columns, InputShape, LabelKind, Loss};
use candle_core::{DType, Tensor};

pub struct Gist {
    pub temperature: f64,
    pub margin: f64,
}

impl Gist {
    /// `sim` with −∞ where the guide's `guided` score beats the threshold (`keep_diagonal`: the
    /// positive pair stays).
    fn masked(
        sim: &Tensor,
        guided: &Tensor,
        threshold: &Tensor,
        keep_diagonal: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, c) = guided.dims2()?;
        let mut mask = guided.broadcast_gt(threshold)?; // u8 [B, C]
        if keep_diagonal {
            let off: Vec<u8> = (0..b * c).map(|k| u8::from(k / c != k % c)).collect();
            mask = (mask * Tensor::from_vec(off, (b, c), sim.device())?)?;
        }
        let neg = Tensor::full(f32::NEG_INFINITY, (b, c), sim.device())?.to_dtype(sim.dtype())?;
        mask.where_cond(&neg, sim)
    }
}

impl Loss for Gist {
    fn name(&self) -> &'static str {
        "gist"
    }
    fn input_shape(&self) -> InputShape {
        InputShape {
            min_texts: 2,
            max_texts: None,
            label: LabelKind::None,
        }
    }
    fn compute(&self, _e: &[Tensor], _labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        candle_core::bail!("gist: needs the guide model's embeddings (--guide-model)")
    }
    fn needs_guide(&self) -> bool {
        true
    }
    fn compute_guided(
        &self,
        e: &[Tensor],
        g: &[Tensor],
        _labels: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 2)?;
        if g.len() != e.len() {
            candle_core::bail!("gist: {} guide columns for {} columns", g.len(), e.len());
        }
        let g: Vec<Tensor> = g
            .iter()
            .map(|t| t.detach().to_dtype(DType::F32))
            .collect::<candle_core::Result<_>>()?;
        let guided_ap = cosine_matrix(&g[0], &g[1])?;
        let b = guided_ap.dim(0)?;
        // The guide's anchor–positive cosine of each row, minus the margin.
        let eye: Vec<f32> = (0..b * b).map(|k| f32::from(k / b == k % b)).collect();
        let eye = Tensor::from_vec(eye, (b, b), guided_ap.device())?;
        let threshold = ((&guided_ap * eye)?.sum_keepdim(1)? - self.margin)?; // [B, 1]
        let mut blocks = vec![Self::masked(
            &cosine_matrix(&e[0], &e[1])?,
            &guided_ap,
            &threshold,
            true,
        )?];
        blocks.push(Self::masked(
            &cosine_matrix(&e[0], &e[0])?,
            &cosine_matrix(&g[0], &g[0])?,
            &threshold,
            false,
        )?);
        blocks.push(Self::masked(
            &cosine_matrix(&e[1], &e[1])?,
            &cosine_matrix(&g[1], &g[1])?,
            &threshold,
            false,
        )?);
        for c in 2..e.len() {
            blocks.push(Self::masked(
                &cosine_matrix(&e[0], &e[c])?,
                &cosine_matrix(&g[0], &g[c])?,
                &threshold,
                false,
            )?);
        }
        let scores = (Tensor::cat(&blocks, 1)? / self.temperature)?;
        diagonal_cross_entropy(&scores)
    }
}
