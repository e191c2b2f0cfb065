//! Our AdamW (candle's decays every parameter, cannot save its moments and allocates ~10
//! temporaries per parameter per step — DESIGN.md). torch.optim.AdamW semantics: decoupled weight
//! decay `p ← p·(1 − lr·wd)`, moments with bias correction, `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
//! Two groups as HF/sentence-transformers: no decay for biases and LayerNorm weights. The update
//! runs in place on each parameter's storage (a candle in-place op), threaded over chunks on the
//! CPU; on CUDA it is one fused kernel per parameter with the moments in GPU memory
//! (`ops::cuda::launch`). Gradient clipping folds into the update as a gradient scale.
//! Moments save to / load from safetensors for exact resume (the same file from either device).
//! On the CPU a page of moments that has only ever seen zero gradients is never written (its
//! update is the weight decay alone, bitwise what the full update gives there): the moments of
//! a word-embedding table's unused rows stay untouched zero pages, which take no memory.

use crate::ops::cpu::kernels::AdamWStep;
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

/// The factor every gradient is multiplied by before the update (global-norm clipping).
#[derive(Debug, Clone, Copy)]
pub enum GradScale<'a> {
    Host(f64),
    /// A one-element f32 tensor on the parameters' device.
    Device(&'a Tensor),
}

/// A parameter's moments: host vectors (CPU parameters) or GPU buffers (CUDA parameters).
enum Moments {
    Host {
        m: Mutex<Vec<f32>>,
        v: Mutex<Vec<f32>>,
        /// Per [`PAGE`] of elements: whether its moments may be nonzero (a gradient there was).
        live: Mutex<Vec<bool>>,
    },
    #[cfg(feature = "cuda")]
    Cuda(Mutex<crate::ops::cuda::launch::DeviceMoments>),
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    moments: Moments,
}

impl Slot {
    fn host_moments(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        match &self.moments {
            Moments::Host { m, v, .. } => Ok((
                m.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                v.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            )),
            #[cfg(feature = "cuda")]
            Moments::Cuda(d) => Ok(d
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .to_host(self.var.as_tensor())?),
        }
    }

    fn set_host_moments(&self, mv: Vec<f32>, vv: Vec<f32>) -> Result<()> {
        match &self.moments {
            Moments::Host { m, v, live } => {
                // Loaded moments count as live (their full update is exact either way).
                live.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter_mut()
                    .for_each(|l| *l = true);
                *m.lock().unwrap_or_else(|e| e.into_inner()) = mv;
                *v.lock().unwrap_or_else(|e| e.into_inner()) = vv;
            }
            #[cfg(feature = "cuda")]
            Moments::Cuda(d) => {
                d.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .load(self.var.as_tensor(), &mv, &vv)?
            }
        }
        Ok(())
    }
}

pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Completed updates.
    pub t: u64,
}

/// Elements per flag of [`Moments::Host`]'s `live` (a 4 KiB page of f32).
const PAGE: usize = 1024;

struct Update<'a> {
    m: &'a Mutex<Vec<f32>>,
    v: &'a Mutex<Vec<f32>>,
    live: &'a Mutex<Vec<bool>>,
    c: AdamWStep,
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
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = self.v.lock().unwrap_or_else(|e| e.into_inner());
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() != p.len() || v.len() != p.len() || live.len() != p.len().div_ceil(PAGE) {
            candle_core::bail!(
                "adamw: moments of {} for a parameter of {}",
                m.len(),
                p.len()
            );
        }
        let c = self.c;
        const CHUNK: usize = 64 * PAGE;
        use rayon::prelude::*;
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(live.par_chunks_mut(CHUNK / PAGE))
            .for_each(|((((p, g), m), v), live)| {
                let pages = p
                    .chunks_mut(PAGE)
                    .zip(g.chunks(PAGE))
                    .zip(m.chunks_mut(PAGE))
                    .zip(v.chunks_mut(PAGE))
                    .zip(live.iter_mut());
                for ((((p, g), m), v), live) in pages {
                    if !*live && g.iter().all(|&x| x == 0.0) {
                        // m = v = 0 stay 0 and the step is p·decay − 0: skip the moments.
                        if c.decay != 1.0 {
                            p.iter_mut().for_each(|x| *x *= c.decay);
                        }
                        continue;
                    }
                    *live = true;
                    crate::ops::cpu::kernels::adamw(p, g, m, v, c);
                }
            });
        Ok(())
    }
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let mut slots = Vec::new();
        for (name, var) in params {
            if var.dtype() != DType::F32 {
                bail!("AdamW: parameter {name} must be f32 (master weights)");
            }
            let n = var.elem_count();
            let moments = match var.device() {
                // Zeroed allocations: untouched pages until a gradient reaches them.
                Device::Cpu => Moments::Host {
                    m: Mutex::new(vec![0.0; n]),
                    v: Mutex::new(vec![0.0; n]),
                    live: Mutex::new(vec![false; n.div_ceil(PAGE)]),
                },
                #[cfg(feature = "cuda")]
                Device::Cuda(_) => Moments::Cuda(Mutex::new(
                    crate::ops::cuda::launch::DeviceMoments::zeros(var.as_tensor())?,
                )),
                #[allow(unreachable_patterns)]
                _ => bail!("AdamW: parameter {name} is on an unsupported device"),
            };
            slots.push(Slot {
                decay: decays(&name),
                name,
                var,
                moments,
            });
        }
        Ok(Self { cfg, slots, t: 0 })
    }

    /// One update with learning rate `lr`; `grads[i]` is the gradient of parameter i (None: skip).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.step_scaled(grads, lr, 1.0)
    }

    /// [`AdamW::step`] with every gradient multiplied by `gscale` first (global-norm clipping).
    pub fn step_scaled(&mut self, grads: &[Option<Tensor>], lr: f64, gscale: f64) -> Result<()> {
        self.step_with(grads, lr, GradScale::Host(gscale))
    }

    /// One update; the gradient scale is a host number or (GPU) a one-element f32 tensor on the
    /// device, so that clipping computed there needs no copy to the host.
    pub fn step_with(&mut self, grads: &[Option<Tensor>], lr: f64, scale: GradScale) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - self.cfg.beta1.powi(t);
        let bc2 = 1.0 - self.cfg.beta2.powi(t);
        let mut host_scale = None;
        #[cfg(feature = "cuda")]
        let mut dev_scale: Option<Tensor> = None;
        for (slot, g) in self.slots.iter().zip(grads) {
            let Some(g) = g else { continue };
            let (m, v, live) = match &slot.moments {
                Moments::Host { m, v, live } => (m, v, live),
                #[cfg(feature = "cuda")]
                Moments::Cuda(mom) => {
                    let sc = match (&dev_scale, scale) {
                        (Some(t), _) => t.clone(),
                        (None, GradScale::Device(t)) => t.clone(),
                        (None, GradScale::Host(x)) => {
                            let t = Tensor::new(&[x as f32], g.device())?;
                            dev_scale = Some(t.clone());
                            t
                        }
                    };
                    // The kernel reads the gradient scale from `sc` (device memory).
                    let s = self.constants(slot.decay, lr, bc1, bc2, 1.0);
                    crate::ops::cuda::launch::adamw_update(slot.var.as_tensor(), g, mom, s, &sc)
                        .with_context(|| format!("AdamW update of {}", slot.name))?;
                    continue;
                }
            };
            let gscale = match (host_scale, scale) {
                (Some(x), _) | (None, GradScale::Host(x)) => x,
                (None, GradScale::Device(t)) => {
                    let x = t.flatten_all()?.to_vec1::<f32>()?[0] as f64;
                    host_scale = Some(x);
                    x
                }
            };
            let g = g.contiguous()?;
            let up = Update {
                m,
                v,
                live,
                c: self.constants(slot.decay, lr, bc1, bc2, gscale),
            };
            slot.var
                .as_tensor()
                .inplace_op2(&g, &up)
                .with_context(|| format!("AdamW update of {}", slot.name))?;
        }
        Ok(())
    }

    /// The per-step constants of the update, in f32 as both the CPU and the CUDA kernel use
    /// them (`bc1`, `bc2`: the bias corrections 1 − βᵗ).
    fn constants(&self, decay: bool, lr: f64, bc1: f64, bc2: f64, gscale: f64) -> AdamWStep {
        let lr = lr as f32;
        AdamWStep {
            gscale: gscale as f32,
            decay: if decay {
                1.0 - lr * self.cfg.weight_decay as f32
            } else {
                1.0
            },
            step: lr / bc1 as f32,
            b1: self.cfg.beta1 as f32,
            b2: self.cfg.beta2 as f32,
            eps: self.cfg.eps as f32,
            bc2_sqrt: bc2.sqrt() as f32,
        }
    }

    pub fn param_names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// Moments as safetensors (`m.<name>`, `v.<name>`); `t` goes in the trainer state. Host
    /// moments are written from where they are (no copy: a checkpoint of all-mpnet-base-v2
    /// would otherwise hold 2 × 418 MB more while it saves); GPU ones are copied to the host.
    pub fn save(&self, path: &Path) -> Result<()> {
        use crate::model::weights::{save_entries, SaveData};
        enum Held<'a> {
            Host(
                std::sync::MutexGuard<'a, Vec<f32>>,
                std::sync::MutexGuard<'a, Vec<f32>>,
            ),
            Copied(Vec<f32>, Vec<f32>),
        }
        let mut held = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            held.push(match &s.moments {
                Moments::Host { m, v, .. } => Held::Host(
                    m.lock().unwrap_or_else(|e| e.into_inner()),
                    v.lock().unwrap_or_else(|e| e.into_inner()),
                ),
                #[allow(unreachable_patterns)]
                _ => {
                    let (m, v) = s.host_moments()?;
                    Held::Copied(m, v)
                }
            });
        }
        let names: Vec<(String, String)> = self
            .slots
            .iter()
            .map(|s| (format!("m.{}", s.name), format!("v.{}", s.name)))
            .collect();
        let mut entries = Vec::with_capacity(2 * self.slots.len());
        for ((s, h), (mn, vn)) in self.slots.iter().zip(&held).zip(&names) {
            let (m, v): (&[f32], &[f32]) = match h {
                Held::Host(m, v) => (m, v),
                Held::Copied(m, v) => (m, v),
            };
            let shape = s.var.dims().to_vec();
            entries.push((mn.as_str(), SaveData::F32(m, shape.clone())));
            entries.push((vn.as_str(), SaveData::F32(v, shape)));
        }
        save_entries(&entries, path)
    }

    /// The values of the parameters whose names start with `prefix`, as safetensors (no file
    /// when there are none).
    pub fn save_values(&self, path: &Path, prefix: &str) -> Result<()> {
        let mut tensors = Vec::new();
        for s in self.slots.iter().filter(|s| s.name.starts_with(prefix)) {
            tensors.push((s.name.clone(), s.var.as_tensor().to_device(&Device::Cpu)?));
        }
        if tensors.is_empty() {
            return Ok(());
        }
        crate::model::weights::save_safetensors(&tensors, path)
    }

    /// Sets the parameters whose names start with `prefix` to the values saved by
    /// [`Self::save_values`]; every one must be there.
    pub fn load_values(&mut self, path: &Path, prefix: &str) -> Result<()> {
        let wanted: Vec<_> = self
            .slots
            .iter()
            .filter(|s| s.name.starts_with(prefix))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let map = crate::model::st_read::load(path)
            .with_context(|| format!("{}: unreadable loss parameters", path.display()))?;
        for s in wanted {
            let t = map
                .get(&s.name)
                .with_context(|| format!("{}: missing {}", path.display(), s.name))?;
            if t.dims() != s.var.dims() {
                bail!(
                    "{}: {} has shape {:?}, parameter has {:?}",
                    path.display(),
                    s.name,
                    t.dims(),
                    s.var.dims()
                );
            }
            s.var
                .set(&t.to_device(s.var.device())?.to_dtype(s.var.dtype())?)?;
        }
        Ok(())
    }

    pub fn load(&mut self, path: &Path, t: u64) -> Result<()> {
        let mut map: HashMap<String, Tensor> = crate::model::st_read::load(path)
            .with_context(|| format!("{}: unreadable optimizer state", path.display()))?;
        for s in &self.slots {
            let mut mv = Vec::with_capacity(2);
            for key in [format!("m.{}", s.name), format!("v.{}", s.name)] {
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
                mv.push(t.flatten_all()?.to_vec1::<f32>()?);
            }
            let v = mv.pop().unwrap_or_default();
            let m = mv.pop().unwrap_or_default();
            s.set_host_moments(m, v)?;
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

    /// Clipping folded into the update (`step_scaled`) is bitwise the same as scaling the
    /// gradient tensors first, as the training loop used to do.
    #[test]
    fn scaled_step_equals_scaling_gradients_first() {
        let init = [0.3f32, -1.2, 2.5, 0.0, 7.0];
        let g = [0.7f32, -0.01, 3.0, 1e-6, -2.0];
        let coef = 0.37f64;
        let run = |scaled_inside: bool| -> Vec<f32> {
            let w = Var::from_tensor(&Tensor::new(&init, &Device::Cpu).unwrap()).unwrap();
            let mut opt =
                AdamW::new(vec![("w.weight".into(), w.clone())], AdamWConfig::default()).unwrap();
            for _ in 0..3 {
                let gt = Tensor::new(&g, &Device::Cpu).unwrap();
                if scaled_inside {
                    opt.step_scaled(&[Some(gt)], 1e-2, coef).unwrap();
                } else {
                    opt.step(&[Some((gt * coef).unwrap())], 1e-2).unwrap();
                }
            }
            w.as_tensor().to_vec1().unwrap()
        };
        let (a, b) = (run(true), run(false));
        assert_eq!(a, b);
        assert_ne!(a, init.to_vec());
    }

    /// A table whose gradient reaches a few pages: the update is bitwise the full update of every
    /// element (the kernel over the whole table), and only the reached pages' moments are written.
    #[test]
    fn moments_of_pages_without_gradients_are_never_written() {
        let n = 10 * PAGE + 17;
        let init: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let w = Var::from_tensor(&Tensor::new(init.as_slice(), &Device::Cpu).unwrap()).unwrap();
        let mut opt =
            AdamW::new(vec![("t.weight".into(), w.clone())], AdamWConfig::default()).unwrap();
        let (mut p, mut m, mut v) = (init.clone(), vec![0f32; n], vec![0f32; n]);
        for step in 0..4 {
            let mut g = vec![0f32; n];
            // Page 3 every step, page 7 from the third step, the short last page once.
            g[3 * PAGE + 5] = 0.5 - step as f32 * 0.1;
            if step >= 2 {
                g[7 * PAGE] = -1.5;
            }
            if step == 1 {
                g[n - 1] = 2.0;
            }
            opt.step(
                &[Some(Tensor::new(g.as_slice(), &Device::Cpu).unwrap())],
                1e-2,
            )
            .unwrap();
            let c = opt.constants(
                true,
                1e-2,
                1.0 - 0.9f64.powi(step + 1),
                1.0 - 0.999f64.powi(step + 1),
                1.0,
            );
            crate::ops::cpu::kernels::adamw(&mut p, &g, &mut m, &mut v, c);
            let got: Vec<f32> = w.as_tensor().to_vec1().unwrap();
            assert!(got == p, "step {step}: differs from the full update");
        }
        // Refutable only with the cuda feature (its device moments).
        #[allow(irrefutable_let_patterns)]
        let Moments::Host { m: om, v: ov, live } = &opt.slots[0].moments
        else {
            panic!("CPU moments")
        };
        let live = live.lock().unwrap().clone();
        let written: Vec<usize> = (0..live.len()).filter(|&i| live[i]).collect();
        assert_eq!(written, vec![3, 7, 10]);
        assert!(*om.lock().unwrap() == m && *ov.lock().unwrap() == v);
    }

    #[test]
    fn no_decay_groups_follow_hf() {
        assert!(decays("encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("encoder.layer.0.attention.self.query.bias"));
        assert!(!decays("embeddings.LayerNorm.weight"));
        assert!(decays("embeddings.word_embeddings.weight"));
    }
}
