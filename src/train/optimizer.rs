//! Our AdamW (candle's decays every parameter, cannot save its moments and allocates ~10
//! temporaries per parameter per step — DESIGN.md). torch.optim.AdamW semantics: decoupled weight
//! decay `p ← p·(1 − lr·wd)`, moments with bias correction, `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
//! Two groups as HF/sentence-transformers: no decay for biases and LayerNorm weights. The update
//! runs in place on each parameter's storage (a candle in-place op), threaded over chunks.
//! Moments save to / load from safetensors for exact resume.

use anyhow::{bail, Context, Result};
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// HF's no-decay rule: names containing "bias" or "LayerNorm.weight" (also `.gamma`/`.beta`).
pub fn decays(name: &str) -> bool {
    !(name.contains("bias")
        || name.contains("LayerNorm.weight")
        || name.contains("LayerNorm.gamma"))
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Mutex<Vec<f32>>,
    v: Mutex<Vec<f32>>,
}

pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Completed updates.
    pub t: u64,
}

struct Update<'a> {
    slot: &'a Slot,
    lr: f32,
    wd: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    bc1: f32,
    bc2_sqrt: f32,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }
    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("adamw: parameters and gradients must be f32 on CPU");
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("adamw: non-contiguous parameter or gradient");
        };
        let p = &mut p[p0..p1];
        let g = &g[g0..g1];
        let mut m = self.slot.m.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = self.slot.v.lock().unwrap_or_else(|e| e.into_inner());
        let decay = if self.slot.decay {
            1.0 - self.lr * self.wd
        } else {
            1.0
        };
        let step = self.lr / self.bc1;
        let (b1, b2, eps, bc2s) = (self.b1, self.b2, self.eps, self.bc2_sqrt);
        const CHUNK: usize = 1 << 16;
        let work = |(((p, g), m), v): (((&mut [f32], &[f32]), &mut [f32]), &mut [f32])| {
            for i in 0..p.len() {
                let gi = g[i];
                let mi = b1 * m[i] + (1.0 - b1) * gi;
                let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
                m[i] = mi;
                v[i] = vi;
                p[i] = p[i] * decay - step * mi / (vi.sqrt() / bc2s + eps);
            }
        };
        use rayon::prelude::*;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(work);
        Ok(())
    }
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let mut slots = Vec::new();
        for (name, var) in params {
            if var.dtype() != DType::F32 || !matches!(var.device(), Device::Cpu) {
                bail!("AdamW: parameter {name} must be f32 on the CPU");
            }
            let n = var.elem_count();
            slots.push(Slot {
                decay: decays(&name),
                name,
                var,
                m: Mutex::new(vec![0.0; n]),
                v: Mutex::new(vec![0.0; n]),
            });
        }
        Ok(Self { cfg, slots, t: 0 })
    }

    /// One update with learning rate `lr`; `grads[i]` is the gradient of parameter i (None: skip).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.cfg.beta1.powi(t);
        let bc2 = 1.0 - self.cfg.beta2.powi(t);
        for (slot, g) in self.slots.iter().zip(grads) {
            let Some(g) = g else { continue };
            let g = g.contiguous()?;
            let up = Update {
                slot,
                lr: lr as f32,
                wd: self.cfg.weight_decay as f32,
                b1: self.cfg.beta1 as f32,
                b2: self.cfg.beta2 as f32,
                eps: self.cfg.eps as f32,
                bc1: bc1 as f32,
                bc2_sqrt: bc2.sqrt() as f32,
            };
            slot.var
                .as_tensor()
                .inplace_op2(&g, &up)
                .with_context(|| format!("AdamW update of {}", slot.name))?;
        }
        Ok(())
    }

    pub fn param_names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// Moments as safetensors (`m.<name>`, `v.<name>`); `t` goes in the trainer state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for s in &self.slots {
            let shape = s.var.shape().clone();
            let m = s.m.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let v = s.v.lock().unwrap_or_else(|e| e.into_inner()).clone();
            tensors.push((
                format!("m.{}", s.name),
                Tensor::from_vec(m, shape.clone(), &Device::Cpu)?,
            ));
            tensors.push((
                format!("v.{}", s.name),
                Tensor::from_vec(v, shape, &Device::Cpu)?,
            ));
        }
        crate::model::weights::save_safetensors(&tensors, path)
    }

    pub fn load(&mut self, path: &Path, t: u64) -> Result<()> {
        let mut map: HashMap<String, Tensor> =
            candle_core::safetensors::load(path, &Device::Cpu)
                .with_context(|| format!("{}: unreadable optimizer state", path.display()))?;
        for s in &self.slots {
            for (key, store) in [
                (format!("m.{}", s.name), &s.m),
                (format!("v.{}", s.name), &s.v),
            ] {
                let t = map
                    .remove(&key)
                    .with_context(|| format!("{}: missing {key}", path.display()))?;
                if t.dims() != s.var.dims() {
                    bail!(
                        "{}: {key} has shape {:?}, parameter has {:?}",
                        path.display(),
                        t.dims(),
                        s.var.dims()
                    );
                }
                *store.lock().unwrap_or_else(|e| e.into_inner()) = t.flatten_all()?.to_vec1()?;
            }
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step against a hand computation of torch.optim.AdamW.
    #[test]
    fn matches_torch_adamw_formula() {
        let w = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f32], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("l.weight".into(), w.clone()), ("l.bias".into(), b.clone())],
            AdamWConfig::default(),
        )
        .unwrap();
        let gw = Tensor::new(&[0.1f32, -0.3], &Device::Cpu).unwrap();
        let gb = Tensor::new(&[2.0f32], &Device::Cpu).unwrap();
        opt.step(&[Some(gw), Some(gb)], 1e-3).unwrap();
        // t=1: m̂ = g, v̂ = g², update = lr·g/(|g|+eps) ≈ lr·sign(g); decay only for the weight.
        let got: Vec<f32> = w.as_tensor().to_vec1().unwrap();
        let exp = |p: f64, g: f64| p * (1.0 - 1e-3 * 0.01) - 1e-3 * g / (g.abs() + 1e-8);
        assert!((got[0] as f64 - exp(1.0, 0.1)).abs() < 1e-6, "{got:?}");
        assert!((got[1] as f64 - exp(-2.0, -0.3)).abs() < 1e-6, "{got:?}");
        let gotb: Vec<f32> = b.as_tensor().to_vec1().unwrap();
        assert!((gotb[0] as f64 - (0.5 - 1e-3)).abs() < 1e-6, "{gotb:?}");
    }

    #[test]
    fn no_decay_groups_follow_hf() {
        assert!(decays("encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("embeddings.LayerNorm.weight"));
        assert!(decays("embeddings.word_embeddings.weight"));
    }
}
