//! Rotary position embeddings on the CPU fused path: one op over the packed projections
//! `[B, S, 3H]` (`[q | k | v]`) that rotates each head of q and k in place of a copy (rotate-half
//! form, `dim` features per head, position = the token's index in its row, or in its sequence
//! on a packed batch `[1, T, 3H]`) and copies v. The
//! rotation is orthogonal, so the backward is the rotation by the opposite angle on the q and k
//! gradients (v's passes through). Depends on candle, rayon and `ops::rotary::Rotary`.

use super::{slice, with_data};
use crate::ops::rotary::Rotary;
use crate::ops::Packed;
use candle_core::{bail, CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

struct Rope {
    r: Rotary,
    heads: usize,
    /// A packed batch's row positions (`[T]`; none: rows of `S`, position = row mod S).
    positions: Option<Arc<Packed>>,
}

impl Rope {
    fn check(&self, dims: &[usize]) -> Result<(usize, usize)> {
        let &[_, s, h3] = dims else {
            bail!("rotary: expected [B, S, 3H], got {dims:?}");
        };
        let h = h3 / 3;
        if h3 % 3 != 0 || self.heads == 0 || h % self.heads != 0 {
            bail!("rotary: [.., {h3}] is not 3 × {} heads", self.heads);
        }
        let seq_ok = match &self.positions {
            None => s == self.r.seq,
            Some(p) => dims[0] == 1 && s == p.tokens() && p.seq() <= self.r.seq,
        };
        if !seq_ok || self.r.dim > h / self.heads {
            bail!(
                "rotary: tables for {} positions × {} features, input {dims:?}",
                self.r.seq,
                self.r.dim
            );
        }
        Ok((s, h))
    }

    /// Rotates q and k of every token by `sign`·angle (1 forward, −1 backward).
    fn apply(&self, x: &[f32], s: usize, h: usize, sign: f32) -> Vec<f32> {
        let mut y = x.to_vec();
        let (hd, half) = (h / self.heads, self.r.dim / 2);
        let packed = self.positions.as_ref().map(|p| p.positions());
        y.par_chunks_mut(3 * h).enumerate().for_each(|(row, t)| {
            let pos = packed.map_or(row % s, |p| p[row] as usize);
            let cos = &self.r.cos[pos * half..(pos + 1) * half];
            let sin = &self.r.sin[pos * half..(pos + 1) * half];
            for head in t[..2 * h].chunks_mut(hd) {
                let (x1, x2) = head[..2 * half].split_at_mut(half);
                for i in 0..half {
                    let (a, b, c, sn) = (x1[i], x2[i], cos[i], sign * sin[i]);
                    x1[i] = a * c - b * sn;
                    x2[i] = b * c + a * sn;
                }
            }
        });
        y
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "embtune-cpu-rotary"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        let (s, h) = self.check(l1.dims())?;
        let y = self.apply(slice(s1, l1, "rotary")?, s, h, 1.0);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (s, h) = self.check(x.dims())?;
        let dx = with_data(
            &[g],
            "rotary backward",
            |d| Ok(self.apply(d[0], s, h, -1.0)),
        )?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), &Device::Cpu)?))
    }
}

/// `qkv: [B, S, 3H]` with q and k rotated by `r` (`heads` heads each); f32. A packed batch
/// (`packed`: `qkv` is `[1, T, 3H]`) rotates each row by its position in its sequence.
pub fn rotary(
    qkv: &Tensor,
    r: &Rotary,
    heads: usize,
    packed: Option<Arc<Packed>>,
) -> Result<Tensor> {
    // The tables are shared `Arc`s: the clone the op keeps in the graph is cheap.
    qkv.contiguous()?.apply_op1(Rope {
        r: r.clone(),
        heads,
        positions: packed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::testing::check;
    use crate::ops::rotary::rotary_packed;
    use crate::ops::test_util::randn;
    use crate::ops::Exec;
    use candle_core::Var;

    /// The fused op and the composed rotation agree in value and gradient, full and partial
    /// (half the head dim rotated), and v passes unchanged.
    #[test]
    fn rotary_matches_the_composed_rotation() {
        let (b, s, heads, hd) = (2, 7, 3, 8);
        for dim in [8, 4] {
            let r = Rotary::new(s, dim, 10_000.0).unwrap();
            let x = Var::from_tensor(&randn(&[b, s, 3 * heads * hd], 3, 1.0)).unwrap();
            let fused = rotary(x.as_tensor(), &r, heads, None).unwrap();
            let composed = rotary_packed(Exec::Composed, x.as_tensor(), &r, heads).unwrap();
            check(&[("qkv", &x)], &fused, &composed, 1e-6, 1e-6);
            let h = heads * hd;
            let v = |t: &Tensor| t.narrow(2, 2 * h, h).unwrap();
            assert_eq!(
                crate::ops::test_util::max_diff(&v(&fused), &v(x.as_tensor())),
                0.0
            );
        }
    }
}
