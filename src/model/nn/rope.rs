//! Which rotary positions a layer uses: the rotated features per head, the base θ and the
//! scaling, turned into an `ops::Rotary` table for a batch's sequence length. Scalings as
//! transformers 5.24's `rope_type`s: `linear` (frequencies ÷ factor; GTE's Hub "ntk" is this with
//! θ·f and f^(2/d), see `family::gte`) and `dynamic` (NomicBERT's `rotary_scaling_factor`: θ
//! grows once a sequence is longer than the trained positions). Depends on `ops::rotary`.

use crate::ops::rotary::{default_inv_freq, Rotary};
use candle_core::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    None,
    /// `inv_freq / factor` at every length.
    Linear {
        factor: f64,
    },
    /// For `S > original`: `θ' = θ·(f·S/original − (f − 1))^(d/(d−2))` (transformers'
    /// `_compute_dynamic_ntk_parameters`, with S = the longest position + 1).
    Dynamic {
        factor: f64,
        original: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeSpec {
    /// Rotated features per head (even; the head dim unless a partial fraction).
    pub dim: usize,
    pub base: f64,
    pub scaling: RopeScaling,
}

impl RopeSpec {
    /// The table for positions `0..seq`.
    pub fn table(&self, seq: usize) -> Result<Rotary> {
        let d = self.dim as f64;
        let inv = match self.scaling {
            RopeScaling::None => default_inv_freq(self.dim, self.base)?,
            RopeScaling::Linear { factor } => default_inv_freq(self.dim, self.base)?
                .into_iter()
                .map(|f| f / factor as f32)
                .collect(),
            RopeScaling::Dynamic { factor, original } => {
                let base = if seq > original {
                    self.base
                        * ((factor * seq as f64 / original as f64) - (factor - 1.0))
                            .powf(d / (d - 2.0))
                } else {
                    self.base
                };
                default_inv_freq(self.dim, base)?
            }
        };
        Rotary::from_inv_freq(seq, inv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linear scaling divides every frequency; dynamic scaling leaves short sequences alone and
    /// raises θ for longer ones (so the lowest frequency shrinks).
    #[test]
    fn scalings_change_the_frequencies_as_transformers_does() {
        let plain = RopeSpec {
            dim: 8,
            base: 1000.0,
            scaling: RopeScaling::None,
        };
        let lin = RopeSpec {
            scaling: RopeScaling::Linear { factor: 2.0 },
            ..plain
        };
        let (a, b) = (plain.table(3).unwrap(), lin.table(3).unwrap());
        // position 1, pair 0: angle 1 vs 0.5.
        assert!((a.sin[4] - 1f32.sin()).abs() < 1e-7);
        assert!((b.sin[4] - 0.5f32.sin()).abs() < 1e-7);
        let dynamic = RopeSpec {
            scaling: RopeScaling::Dynamic {
                factor: 2.0,
                original: 4,
            },
            ..plain
        };
        assert_eq!(dynamic.table(4).unwrap().sin, plain.table(4).unwrap().sin);
        let (long, base) = (dynamic.table(8).unwrap(), plain.table(8).unwrap());
        // θ' = 1000·(2·8/4 − 1)^(8/6) = 1000·3^(4/3); pair 3's angle at position 1 is 1/θ'^(6/8).
        let theta = 1000.0f64 * 3f64.powf(4.0 / 3.0);
        let want = (1.0 / (theta as f32).powf(0.75)).sin();
        assert!(
            (long.sin[4 + 3] - want).abs() < 1e-7,
            "{} vs {want}",
            long.sin[7]
        );
        assert!(long.sin[7] < base.sin[7]);
    }
}
