//! GISTEmbedLoss — data: (anchor, positive, [negatives…]), no label. As sentence-transformers'
//! defaults (absolute margin 0, anchors and positives contrasted): with cosine matrices of the
//! trained model — anchor×positive, anchor×anchor, positive×positive, anchor×each negative column
//! — every candidate that the frozen guide model scores above the guide's own anchor–positive
//! cosine (minus the margin) is set to −∞ (a likely false negative; the positive itself is kept),
//! the blocks are concatenated, divided by the temperature (0.01), and the loss is the
//! cross-entropy with target i. sentence-transformers takes one negative column; more are
//! taken here the same way. With `comm` (`--gather-across-devices`) the positives and negatives
//! of every rank are candidates, as sentence-transformers' `gather_across_devices`: they and
//! their guide embeddings are gathered with this rank's rows first
//! (`dist::gather::gather_rows_own_first`), the anchors stay local (so the anchor×anchor block
//! is this rank's), and the positive×positive block is this rank's positives against all.

use super::mnrl::diagonal_cross_entropy;
use super::{cosine_matrix, expect_columns, InputShape, LabelKind, Loss};
use candle_core::{DType, Tensor};

pub struct Gist {
    pub temperature: f64,
    pub margin: f64,
    pub comm: Option<std::sync::Arc<dyn crate::dist::Collective>>,
}

impl Gist {
    /// Every rank's rows of a candidate column, this rank's first (itself without `comm`).
    fn all(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.comm {
            Some(c) => crate::dist::gather::gather_rows_own_first(x, c.clone()),
            None => Ok(x.clone()),
        }
    }

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
        let (pos, guide_pos) = (self.all(&e[1])?, self.all(&g[1])?);
        let guided_ap = cosine_matrix(&g[0], &guide_pos)?;
        let (b, c) = guided_ap.dims2()?;
        // The guide's anchor–positive cosine of each row (column i: this rank's rows come
        // first), minus the margin.
        let eye: Vec<f32> = (0..b * c).map(|k| f32::from(k / c == k % c)).collect();
        let eye = Tensor::from_vec(eye, (b, c), guided_ap.device())?;
        let threshold = ((&guided_ap * eye)?.sum_keepdim(1)? - self.margin)?; // [B, 1]
        let mut blocks = vec![Self::masked(
            &cosine_matrix(&e[0], &pos)?,
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
            &cosine_matrix(&e[1], &pos)?,
            &cosine_matrix(&g[1], &guide_pos)?,
            &threshold,
            false,
        )?);
        for c in 2..e.len() {
            blocks.push(Self::masked(
                &cosine_matrix(&e[0], &self.all(&e[c])?)?,
                &cosine_matrix(&g[0], &self.all(&g[c])?)?,
                &threshold,
                false,
            )?);
        }
        let scores = (Tensor::cat(&blocks, 1)? / self.temperature)?;
        diagonal_cross_entropy(&scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::{threads, Collective};
    use candle_core::{Device, Var, D};
    use std::sync::Arc;

    fn rows(seed: u64, n: usize, d: usize) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n * d)
            .map(|_| r.next_f64() as f32 * 2.0 - 1.0)
            .collect()
    }

    fn t(v: &[f32], n: usize, d: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), (n, d), &Device::Cpu).unwrap()
    }

    /// sentence-transformers' GISTEmbedLoss with gather_across_devices for rank `r`, written
    /// as it is there (not with this module's rotation): this rank's anchors against every
    /// rank's positives and negatives, its anchor×anchor block, its positives against all
    /// positives; the positive of anchor i at column r·b + i. Returns the loss and how many
    /// candidates the guide masked.
    #[allow(clippy::too_many_arguments)]
    fn st_rank_loss(
        r: usize,
        b: usize,
        (a, p, n): (&Tensor, &Tensor, &Tensor),
        (ga, gp, gn): (&Tensor, &Tensor, &Tensor),
        temperature: f64,
    ) -> (Tensor, usize) {
        let off = r * b;
        let own = |x: &Tensor| x.narrow(0, off, b).unwrap();
        let cos = |x: &Tensor, y: &Tensor| crate::loss::cosine_matrix(x, y).unwrap();
        let gap = cos(&own(ga), gp).to_vec2::<f32>().unwrap();
        let thr: Vec<f32> = (0..b).map(|i| gap[i][off + i]).collect();
        let mut masked = 0;
        let mut block = |sim: Tensor, guide: Tensor, protect: bool| {
            let g = guide.to_vec2::<f32>().unwrap();
            let (rows, cols) = (g.len(), g[0].len());
            let add: Vec<f32> = (0..rows * cols)
                .map(|k| {
                    let (i, j) = (k / cols, k % cols);
                    if g[i][j] > thr[i] && !(protect && j == off + i) {
                        masked += 1;
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            (sim + Tensor::from_vec(add, (rows, cols), &Device::Cpu).unwrap()).unwrap()
        };
        let blocks = vec![
            block(cos(&own(a), p), cos(&own(ga), gp), true),
            block(cos(&own(a), &own(a)), cos(&own(ga), &own(ga)), false),
            block(cos(&own(p), p), cos(&own(gp), gp), false),
            block(cos(&own(a), n), cos(&own(ga), gn), false),
        ];
        let scores = (Tensor::cat(&blocks, 1).unwrap() / temperature).unwrap();
        let logp = candle_nn::ops::log_softmax(&scores, D::Minus1).unwrap();
        let idx: Vec<u32> = (0..b as u32).map(|i| i + off as u32).collect();
        let idx = Tensor::from_vec(idx, (b, 1), &Device::Cpu).unwrap();
        let loss = logp
            .gather(&idx, 1)
            .unwrap()
            .mean_all()
            .unwrap()
            .neg()
            .unwrap();
        (loss, masked)
    }

    /// GIST with gathering on 2 ranks: every rank's rows get the gradient of the sum of the
    /// ranks' losses, sentence-transformers' formula (≤ 1e-5), with some candidates masked by
    /// the guide and some not.
    #[test]
    fn gathered_gist_equals_sentence_transformers_gathered_loss() {
        let (world, b, d, temp) = (2usize, 4usize, 6usize, 0.05);
        let col = |s| rows(s, world * b, d);
        let (a, p, n) = (col(1), col(2), col(3));
        // The guide: the same texts seen a little differently.
        let noisy = |v: &[f32], s| -> Vec<f32> {
            v.iter()
                .zip(rows(s, world * b, d))
                .map(|(x, e)| x + 0.6 * e)
                .collect()
        };
        let (ga, gp, gn) = (noisy(&a, 4), noisy(&p, 5), noisy(&n, 6));
        // The reference: one process, all rows, the sum of both ranks' losses.
        let vars: Vec<Var> = [&a, &p, &n]
            .iter()
            .map(|v| Var::from_vec(v.to_vec(), (world * b, d), &Device::Cpu).unwrap())
            .collect();
        let guides = (
            t(&ga, world * b, d),
            t(&gp, world * b, d),
            t(&gn, world * b, d),
        );
        let mut total = Tensor::new(0f32, &Device::Cpu).unwrap();
        let mut masked = 0;
        for r in 0..world {
            let (l, m) = st_rank_loss(
                r,
                b,
                (
                    vars[0].as_tensor(),
                    vars[1].as_tensor(),
                    vars[2].as_tensor(),
                ),
                (&guides.0, &guides.1, &guides.2),
                temp,
            );
            total = (total + l).unwrap();
            masked += m;
        }
        let cells = world * (b * world * b + b * b + b * world * b + b * world * b);
        assert!(
            masked > 0 && masked < cells / 2,
            "masked {masked} of {cells}"
        );
        let g = total.backward().unwrap();
        let want: Vec<Vec<f32>> = vars
            .iter()
            .map(|v| {
                g.get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        let cols = [a, p, n, ga, gp, gn];
        let handles: Vec<_> = threads::group(world)
            .into_iter()
            .map(|c| {
                let cols = cols.clone();
                std::thread::spawn(move || {
                    let r = c.rank();
                    let comm: Arc<dyn Collective> = Arc::new(c);
                    let mine = |v: &[f32]| v[r * b * d..(r + 1) * b * d].to_vec();
                    let e: Vec<Var> = cols[..3]
                        .iter()
                        .map(|v| Var::from_vec(mine(v), (b, d), &Device::Cpu).unwrap())
                        .collect();
                    let guide: Vec<Tensor> = cols[3..].iter().map(|v| t(&mine(v), b, d)).collect();
                    let loss = Gist {
                        temperature: temp,
                        margin: 0.0,
                        comm: Some(comm),
                    };
                    let et: Vec<Tensor> = e.iter().map(|v| v.as_tensor().clone()).collect();
                    let l = loss.compute_guided(&et, &guide, None).unwrap();
                    let g = l.backward().unwrap();
                    e.iter()
                        .map(|v| {
                            g.get(v.as_tensor())
                                .unwrap()
                                .flatten_all()
                                .unwrap()
                                .to_vec1::<f32>()
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let got: Vec<Vec<Vec<f32>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (c, name) in ["anchors", "positives", "negatives"].iter().enumerate() {
            let ours: Vec<f32> = got.iter().flat_map(|rank| rank[c].clone()).collect();
            let worst = ours
                .iter()
                .zip(&want[c])
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-5, "{name}: {worst}");
            assert!(
                want[c].iter().any(|x| x.abs() > 1e-2),
                "{name}: a gradient to compare"
            );
        }
    }
}
