//! MPNet's relative position bias: a `[buckets, heads]` table (`encoder.relative_attention_bias`,
//! shared by all layers) looked up by the bucket of each (query i, key j) offset `j − i` and added
//! to every layer's attention scores as `[heads, S, S]`. Buckets as HF's
//! `MPNetEncoder.relative_position_bucket` (T5's bidirectional scheme: half the buckets per
//! direction, exact below 8, logarithmic up to `max_distance` 128). Depends on `ops`, `nn`.

use crate::model::encoder::Fwd;
use crate::ops;
use candle_core::{Result, Tensor, Var};

pub struct RelativeBias {
    /// `[buckets, heads]`.
    pub table: Var,
    pub buckets: usize,
    pub max_distance: usize,
}

impl RelativeBias {
    /// `[heads, S, S]`: entry (h, i, j) = table[bucket(j − i), h].
    pub fn forward(&self, s: usize, fwd: &Fwd) -> Result<Tensor> {
        let table = fwd.param(&self.table);
        let heads = table.dim(1)?;
        let ids: Vec<u32> = (0..s * s)
            .map(|k| {
                bucket(
                    (k % s) as i64 - (k / s) as i64,
                    self.buckets,
                    self.max_distance,
                )
            })
            .collect();
        let ids = Tensor::from_vec(ids, s * s, table.device())?;
        ops::embedding(fwd.exec, &table, &ids)?
            .reshape((s, s, heads))?
            .permute((2, 0, 1))?
            .contiguous()
    }
}

/// The bucket of relative position `rel` = key − query (HF: `relative_position_bucket` with
/// num_buckets 32, max_distance 128, computed in f32 as torch does so the log boundaries agree).
pub fn bucket(rel: i64, num_buckets: usize, max_distance: usize) -> u32 {
    let half = (num_buckets / 2) as i64;
    let n = -rel;
    let mut ret = if n < 0 { half } else { 0 };
    let n = n.abs();
    let max_exact = half / 2;
    if n < max_exact {
        return (ret + n) as u32;
    }
    let large = max_exact
        + ((n as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32)
            * (half - max_exact) as f32) as i64;
    ret += large.min(half - 1);
    ret as u32
}

#[cfg(test)]
mod tests {
    use super::bucket;

    /// Values read off HF's implementation (transformers 5.24) for num_buckets 32, distance 128.
    #[test]
    fn buckets_match_mpnets() {
        let b = |rel| bucket(rel, 32, 128);
        assert_eq!(b(0), 0);
        assert_eq!(
            (1..8).map(|r| b(-r)).collect::<Vec<_>>(),
            (1..8).collect::<Vec<_>>()
        );
        assert_eq!(
            [b(-8), b(-11), b(-20), b(-100), b(-1000)],
            [8, 8, 10, 15, 15]
        );
        assert_eq!(
            (1..8).map(b).collect::<Vec<_>>(),
            (17..24).collect::<Vec<_>>()
        );
        assert_eq!([b(8), b(11), b(20), b(100), b(5000)], [24, 24, 26, 31, 31]);
    }
}
