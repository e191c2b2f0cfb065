//! The sentence-transformers Dense module (`N_Dense/config.json` + `model.safetensors` with
//! `linear.weight [out, in]` and `linear.bias [out]`), activation Identity or Tanh. Trainable.

use super::hub::ModelSource;
use super::st_format::{file_in, DenseConfig};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Identity,
    Tanh,
}

pub struct Dense {
    cfg: DenseConfig,
    act: Activation,
    weight: Var,
    bias: Option<Var>,
}

impl Dense {
    pub fn load(src: &ModelSource, dir: &str, device: &Device) -> Result<Self> {
        let cfg_path = src.required(&file_in(dir, "config.json"))?;
        let text = std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}", cfg_path.display()))?;
        let cfg: DenseConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a Dense module config", cfg_path.display()))?;
        let act = match cfg.activation_function.rsplit('.').next().unwrap_or("") {
            "Identity" => Activation::Identity,
            "Tanh" => Activation::Tanh,
            other => bail!(
                "{}: activation_function {other:?} is not supported (Identity or Tanh)",
                cfg_path.display()
            ),
        };
        let wpath = src.required(&file_in(dir, "model.safetensors"))?;
        let mut t = candle_core::safetensors::load(&wpath, &Device::Cpu)
            .with_context(|| format!("{}: not a readable safetensors file", wpath.display()))?;
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let x = t
                .remove(name)
                .with_context(|| format!("{}: missing tensor {name}", wpath.display()))?;
            if x.dims() != shape {
                bail!(
                    "{}: tensor-shape mismatch for {name}: expected {shape:?}, file has {:?}",
                    wpath.display(),
                    x.dims()
                );
            }
            Ok(x.to_dtype(DType::F32)?.to_device(device)?)
        };
        let weight = Var::from_tensor(&take(
            "linear.weight",
            &[cfg.out_features, cfg.in_features],
        )?)?;
        let bias = if cfg.bias {
            Some(Var::from_tensor(&take(
                "linear.bias",
                &[cfg.out_features],
            )?)?)
        } else {
            None
        };
        Ok(Self {
            cfg,
            act,
            weight,
            bias,
        })
    }

    pub fn in_features(&self) -> usize {
        self.cfg.in_features
    }
    pub fn out_features(&self) -> usize {
        self.cfg.out_features
    }

    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v = vec![("linear.weight".to_string(), self.weight.clone())];
        if let Some(b) = &self.bias {
            v.push(("linear.bias".into(), b.clone()));
        }
        v
    }

    /// `[B, in] → [B, out]`.
    /// `grad` false uses detached weights (inference, no autograd graph).
    pub fn forward(&self, x: &Tensor, grad: bool) -> candle_core::Result<Tensor> {
        let t = |v: &Var| {
            if grad {
                v.as_tensor().clone()
            } else {
                v.as_detached_tensor()
            }
        };
        let mut y = x.matmul(&t(&self.weight).t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&t(b))?;
        }
        match self.act {
            Activation::Identity => Ok(y),
            Activation::Tanh => y.tanh(),
        }
    }

    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let cfg = serde_json::to_vec_pretty(&self.cfg)?;
        crate::fsutil::write_file_synced(&dir.join("config.json"), &cfg)?;
        let tensors: Vec<(String, Tensor)> = self
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_detached_tensor()))
            .collect();
        super::weights::save_safetensors(&tensors, &dir.join("model.safetensors"))
    }
}
