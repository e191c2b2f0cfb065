//! Rotary position embeddings (RoPE) on every path, in the "rotate half" form that ModernBERT,
//! NomicBERT (`rotary_emb_interleaved: false`) and GTE use: within each head, the first `dim`
//! features are split into halves `(x₁, x₂)` and rotated by the angle `pos·θᵢ` of their pair,
//! `(x₁·cos − x₂·sin, x₂·cos + x₁·sin)`; features past `dim` (a partial rotary fraction) pass
//! unchanged. [`Rotary`] holds the tables of one sequence length; positions count 0, 1, … from
//! each row's start (rows are right-padded). The tables are computed in f32 as transformers does
//! (`inv_freq = 1 / base^(2i/dim)`, `freqs = pos · inv_freq`), so angles agree bit for bit up
//! to the cos/sin rounding. Depends on candle and the path modules.

use super::{cpu, Exec};
use candle_core::{DType, Device, Result, Tensor};
use std::sync::Arc;

/// cos and sin of every (position, pair) for one sequence length.
#[derive(Debug, Clone)]
pub struct Rotary {
    /// Rotated features per head (even, ≤ head dim).
    pub dim: usize,
    pub seq: usize,
    /// `[S·dim/2]` row-major, host copies (CPU fused path).
    pub cos: Arc<Vec<f32>>,
    pub sin: Arc<Vec<f32>>,
    /// The `[S, dim]` f32 tables on a device, once made ([`Rotary::with_device_tables`]), for
    /// the paths that rotate the heads layout.
    device_tables: Option<(Tensor, Tensor)>,
}

impl Rotary {
    /// Tables for positions `0..seq` with `base` (θ) over `dim` rotated features.
    pub fn new(seq: usize, dim: usize, base: f64) -> Result<Self> {
        Self::from_inv_freq(seq, default_inv_freq(dim, base)?)
    }

    /// Tables for positions `0..seq` from the pair frequencies `inv` (`dim/2` of them):
    /// angle = `pos · inv[i]` in f32, as transformers computes `freqs`.
    pub fn from_inv_freq(seq: usize, inv: Vec<f32>) -> Result<Self> {
        let half = inv.len();
        if half == 0 {
            candle_core::bail!("rotary: no rotated features");
        }
        let mut cos = Vec::with_capacity(seq * half);
        let mut sin = Vec::with_capacity(seq * half);
        for p in 0..seq {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self {
            dim: 2 * half,
            seq,
            cos: Arc::new(cos),
            sin: Arc::new(sin),
            device_tables: None,
        })
    }

    /// The same tables, also as `[S, dim]` tensors on `device`, made once here instead of at
    /// every rotation (each layer's q and k).
    pub fn with_device_tables(mut self, device: &Device) -> Result<Self> {
        self.device_tables = Some(self.tables(DType::F32, device)?);
        Ok(self)
    }

    /// The tables as `[S, dim]` tensors (each half repeated, as `rotate_half` pairs them).
    fn tables(&self, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        if let Some((c, s)) = &self.device_tables {
            if c.device().same_device(device) {
                return Ok((c.to_dtype(dtype)?, s.to_dtype(dtype)?));
            }
        }
        let half = self.dim / 2;
        let t = |v: &Arc<Vec<f32>>| -> Result<Tensor> {
            let t = Tensor::from_slice(v.as_slice(), (self.seq, half), device)?;
            Tensor::cat(&[&t, &t], 1)?.to_dtype(dtype)
        };
        Ok((t(&self.cos)?, t(&self.sin)?))
    }
}

/// RoPE's pair frequencies `1 / base^(2i/dim)`, `i < dim/2`, in f32 as transformers computes
/// them (`1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))`).
pub fn default_inv_freq(dim: usize, base: f64) -> Result<Vec<f32>> {
    if dim == 0 || dim % 2 != 0 || base <= 1.0 || !base.is_finite() {
        candle_core::bail!(
            "rotary: {dim} rotated features with base {base} (need an even dim > 0, base > 1)"
        );
    }
    Ok((0..dim / 2)
        .map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / dim as f32))
        .collect())
}

/// Rotates `x: [B, heads, S, hd]` (q or k in the heads layout; any dtype) on the composed ops,
/// which all have a backward. Used by every path that has the heads layout (Composed,
/// CudaFused); the CPU fused path rotates the packed projections instead ([`rotary_packed`]).
pub fn rotary_heads(x: &Tensor, r: &Rotary) -> Result<Tensor> {
    let (_, _, s, hd) = x.dims4()?;
    if s != r.seq || r.dim > hd {
        candle_core::bail!(
            "rotary: tables for {} positions × {} features, input {:?}",
            r.seq,
            r.dim,
            x.dims()
        );
    }
    let (cos, sin) = r.tables(x.dtype(), x.device())?;
    let half = r.dim / 2;
    let rot = x.narrow(3, 0, r.dim)?;
    let (x1, x2) = (rot.narrow(3, 0, half)?, rot.narrow(3, half, half)?);
    let turned = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    let y = (rot.broadcast_mul(&cos)? + turned.broadcast_mul(&sin)?)?;
    if r.dim == hd {
        Ok(y)
    } else {
        Tensor::cat(&[&y, &x.narrow(3, r.dim, hd - r.dim)?], 3)
    }
}

/// Rotates the q and k parts of packed projections `qkv: [B, S, 3H]` (`[q | k | v]`, `heads`
/// heads each): the CPU fused op on that path, the composed ops on the others.
pub fn rotary_packed(exec: Exec, qkv: &Tensor, r: &Rotary, heads: usize) -> Result<Tensor> {
    if exec == Exec::CpuFused {
        return cpu::rotary(qkv, r, heads, None);
    }
    let (b, s, h3) = qkv.dims3()?;
    let (h, hd) = (h3 / 3, h3 / 3 / heads.max(1));
    let part = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * h, h)?
            .reshape((b, s, heads, hd))?
            .transpose(1, 2)
    };
    let back = |t: Tensor| -> Result<Tensor> { t.transpose(1, 2)?.reshape((b, s, h)) };
    let q = back(rotary_heads(&part(0)?.contiguous()?, r)?)?;
    let k = back(rotary_heads(&part(1)?.contiguous()?, r)?)?;
    Tensor::cat(&[&q, &k, &qkv.narrow(2, 2 * h, h)?], 2)
}

/// Rotates the q and k parts of a packed batch's projections `qkv: [1, T, 3H]` by each row's
/// position in its sequence (`positions [T]`, `ops::Packed::positions`) on the composed ops
/// (the CUDA path over packed batches; they have a backward): the tables' rows gathered per row.
pub fn rotary_packed_rows(
    qkv: &Tensor,
    r: &Rotary,
    heads: usize,
    positions: &[u32],
) -> Result<Tensor> {
    let (one, t, h3) = qkv.dims3()?;
    let (h, hd) = (h3 / 3, h3 / 3 / heads.max(1));
    if one != 1
        || t != positions.len()
        || r.dim > hd
        || positions.iter().any(|&p| p as usize >= r.seq)
    {
        candle_core::bail!(
            "rotary: tables for {} positions × {} features, packed input {:?}",
            r.seq,
            r.dim,
            qkv.dims()
        );
    }
    let idx = Tensor::from_slice(positions, t, qkv.device())?;
    let (cos, sin) = r.tables(qkv.dtype(), qkv.device())?;
    // [T, 1, dim]: one row per token, broadcast over the heads.
    let (cos, sin) = (
        cos.index_select(&idx, 0)?.unsqueeze(1)?,
        sin.index_select(&idx, 0)?.unsqueeze(1)?,
    );
    let half = r.dim / 2;
    let turn = |i: usize| -> Result<Tensor> {
        let x = qkv.narrow(2, i * h, h)?.reshape((t, heads, hd))?;
        let rot = x.narrow(2, 0, r.dim)?;
        let (x1, x2) = (rot.narrow(2, 0, half)?, rot.narrow(2, half, half)?);
        let turned = Tensor::cat(&[&x2.neg()?, &x1], 2)?;
        let y = (rot.broadcast_mul(&cos)? + turned.broadcast_mul(&sin)?)?;
        let y = if r.dim == hd {
            y
        } else {
            Tensor::cat(&[&y, &x.narrow(2, r.dim, hd - r.dim)?], 2)?
        };
        y.reshape((1, t, h))
    };
    Tensor::cat(&[&turn(0)?, &turn(1)?, &qkv.narrow(2, 2 * h, h)?], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The angle of pair i at position p is p / base^(2i/dim): position 0 is the identity, a
    /// rotation keeps each pair's norm, and position 1, pair 0 turns by one radian.
    #[test]
    fn tables_follow_the_rope_formula() {
        let r = Rotary::new(3, 4, 10_000.0).unwrap();
        assert_eq!(&r.cos[..2], &[1.0, 1.0]);
        assert_eq!(&r.sin[..2], &[0.0, 0.0]);
        assert!((r.cos[2] - 1f32.cos()).abs() < 1e-7);
        assert!((r.sin[3] - 0.01f32.sin()).abs() < 1e-7, "{}", r.sin[3]);
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 3, 4))
            .unwrap();
        let y = rotary_heads(&x, &r).unwrap();
        let pair_norms = |t: &Tensor| {
            let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            v.chunks(4)
                .map(|c| (c[0] * c[0] + c[2] * c[2], c[1] * c[1] + c[3] * c[3]))
                .collect::<Vec<_>>()
        };
        for (a, b) in pair_norms(&x).iter().zip(pair_norms(&y)) {
            assert!((a.0 - b.0).abs() < 1e-3 && (a.1 - b.1).abs() < 1e-3);
        }
        let v: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(&v[..4], &[0.0, 1.0, 2.0, 3.0]);
        assert!(Rotary::new(3, 5, 1e4).is_err());
    }
}
