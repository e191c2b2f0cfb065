//! LoRA adapters (`train --lora-rank`): for each targeted linear weight `W [out, in]` two small
//! trainable matrices `A [r, in]` and `B [out, r]`, the layer computing with
//! `W + (α/r)·B·A` while `W` stays frozen — PEFT's LoRA with `lora_dropout 0`, `bias "none"`.
//! The effective weights are made once per forward pass ([`Lora::effective`]) and handed out by
//! `Fwd::param`, so every family and every execution path (fused or composed) gets them without
//! knowing about adapters; `x·(W + sBA)ᵀ` equals PEFT's `x·Wᵀ + s·(x·Aᵀ)·Bᵀ` (its only
//! difference is float reassociation). Init as PEFT: A uniform in ±1/√in (kaiming-uniform,
//! a = √5), B zero, so training starts at the base model. A module is targeted when the last
//! component of its name is in the targets (PEFT's suffix match). Saving: merged into the weights
//! (a plain sentence-transformers folder) and, on request, as a PEFT adapter
//! (`adapter_config.json` + `adapter_model.safetensors`, keys
//! `base_model.model.<module>.lora_A.weight`, as PEFT writes for a transformers model).
//! Depends on candle, rng.

use crate::rng::Rng;
use anyhow::{bail, Result};
use candle_core::{Tensor, TensorId, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `--lora-rank`, `--lora-alpha`, `--lora-targets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    /// Scaling numerator: the update is (alpha / rank)·B·A [default: PEFT's 8].
    pub alpha: f64,
    /// Module name suffixes [default: the family's query and value projections, PEFT's
    /// defaults].
    pub targets: Vec<String>,
}

/// PEFT's default LoRA targets per model type (its `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES
/// _MAPPING`); the fused-q|k|v families name their one projection.
pub fn default_targets(family: &str) -> Option<Vec<String>> {
    let t: &[&str] = match family {
        "bert" | "roberta" | "xlm-roberta" => &["query", "value"],
        "distilbert" => &["q_lin", "v_lin"],
        "mpnet" => &["q", "v"],
        "modernbert" | "nomic_bert" => &["Wqkv"],
        "gte" | "new" => &["qkv_proj"],
        _ => return None,
    };
    Some(t.iter().map(|s| s.to_string()).collect())
}

/// One adapted weight.
pub struct Adapter {
    /// The module's name (`encoder.layer.0.attention.self.query`).
    pub module: String,
    pub base: Var,
    pub a: Var,
    pub b: Var,
}

/// The adapters of a model.
pub struct Lora {
    pub config: LoraConfig,
    pub adapters: Vec<Adapter>,
}

impl Lora {
    /// Adapters for every 2-D `<module>.weight` of `vars` whose module ends in a target; an
    /// error when no module matches (naming the model's linear layers).
    pub fn attach(vars: &[(String, Var)], config: LoraConfig, seed: u64) -> Result<Self> {
        if config.rank == 0 {
            bail!("--lora-rank must be at least 1");
        }
        let mut rng = Rng::with_stream(seed, 91);
        let mut adapters = Vec::new();
        let mut linear: Vec<String> = Vec::new();
        for (name, var) in vars {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            let dims = var.as_tensor().dims();
            if dims.len() != 2 || module.contains("embeddings") {
                continue;
            }
            let last = module.rsplit('.').next().unwrap_or(module);
            if !linear.iter().any(|l| l == last) {
                linear.push(last.to_string());
            }
            if !config.targets.iter().any(|t| t == last) {
                continue;
            }
            let (out, inp) = (dims[0], dims[1]);
            let t = var.as_tensor();
            let bound = 1.0 / (inp as f64).sqrt();
            let a: Vec<f32> = (0..config.rank * inp)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect();
            let a = Tensor::from_vec(a, (config.rank, inp), t.device())?.to_dtype(t.dtype())?;
            let b = Tensor::zeros((out, config.rank), t.dtype(), t.device())?;
            adapters.push(Adapter {
                module: module.to_string(),
                base: var.clone(),
                a: Var::from_tensor(&a)?,
                b: Var::from_tensor(&b)?,
            });
        }
        if adapters.is_empty() {
            bail!(
                "--lora-targets {}: no linear layer of this model is named so; its linear layers are {}",
                config.targets.join(","),
                linear.join(", ")
            );
        }
        Ok(Self { config, adapters })
    }

    pub fn scale(&self) -> f64 {
        self.config.alpha / self.config.rank as f64
    }

    /// `W + s·B·A` of every adapted weight, keyed by `W`'s tensor id (`grad`: tracked for
    /// autograd through A and B; else detached).
    pub fn effective(&self, grad: bool) -> candle_core::Result<HashMap<TensorId, Tensor>> {
        let s = self.scale();
        self.adapters
            .iter()
            .map(|ad| {
                let (a, b) = if grad {
                    (ad.a.as_tensor().clone(), ad.b.as_tensor().clone())
                } else {
                    (ad.a.as_detached_tensor(), ad.b.as_detached_tensor())
                };
                let w = ad.base.as_detached_tensor();
                Ok((ad.base.as_tensor().id(), (w + (b.matmul(&a)? * s)?)?))
            })
            .collect()
    }

    /// The trainable matrices, named `lora.<module>.lora_A.weight` / `lora_B` (the optimizer's
    /// and checkpoints' names).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.adapters
            .iter()
            .flat_map(|ad| {
                [
                    (format!("lora.{}.lora_A.weight", ad.module), ad.a.clone()),
                    (format!("lora.{}.lora_B.weight", ad.module), ad.b.clone()),
                ]
            })
            .collect()
    }

    /// Each adapted weight merged (`<module>.weight` → `W + s·B·A`), detached.
    pub fn merged(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        let eff = self.effective(false)?;
        Ok(self
            .adapters
            .iter()
            .filter_map(|ad| {
                eff.get(&ad.base.as_tensor().id())
                    .map(|t| (format!("{}.weight", ad.module), t.clone()))
            })
            .collect())
    }

    /// The adapter as PEFT saves it for a transformers model: tensors and adapter_config.json.
    /// `untrained`: the other weights (name, tensor) of the checkpoint, such as BERT's
    /// `pooler.dense`, which PEFT adapts too when a target matches them: they get zero
    /// adapters (no change), so PEFT finds every key it expects.
    pub fn peft_files(
        &self,
        base_model: &str,
        untrained: &[(String, Tensor)],
    ) -> candle_core::Result<(Vec<(String, Tensor)>, serde_json::Value)> {
        let mut tensors = Vec::new();
        for ad in &self.adapters {
            let key = |m: &str| format!("base_model.model.{}.{m}.weight", ad.module);
            tensors.push((key("lora_A"), ad.a.as_detached_tensor()));
            tensors.push((key("lora_B"), ad.b.as_detached_tensor()));
        }
        let r = self.config.rank;
        for (name, w) in untrained {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            let last = module.rsplit('.').next().unwrap_or(module);
            let adapted = self.adapters.iter().any(|a| a.module == module);
            if adapted || w.rank() != 2 || !self.config.targets.iter().any(|t| t == last) {
                continue;
            }
            let (out, inp) = (w.dim(0)?, w.dim(1)?);
            let key = |m: &str| format!("base_model.model.{module}.{m}.weight");
            tensors.push((
                key("lora_A"),
                Tensor::zeros((r, inp), w.dtype(), w.device())?,
            ));
            tensors.push((
                key("lora_B"),
                Tensor::zeros((out, r), w.dtype(), w.device())?,
            ));
        }
        let config = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "FEATURE_EXTRACTION",
            "base_model_name_or_path": base_model,
            "r": self.config.rank,
            "lora_alpha": self.config.alpha,
            "target_modules": self.config.targets,
            "lora_dropout": 0.0,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "use_rslora": false,
            "use_dora": false,
        });
        Ok((tensors, config))
    }
}

impl super::SentenceEncoder {
    /// Attaches LoRA adapters to the weights `config` targets (the base weights then stay as
    /// loaded: train [`Self::lora_vars`] only).
    pub fn attach_lora(&mut self, config: LoraConfig, seed: u64) -> Result<()> {
        let vars = self.encoder.vars().to_vec();
        self.lora = Some(Lora::attach(&vars, config, seed)?);
        Ok(())
    }

    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// The adapters' trainable matrices (empty without LoRA).
    pub fn lora_vars(&self) -> Vec<(String, Var)> {
        self.lora.as_ref().map(Lora::named_vars).unwrap_or_default()
    }

    /// The effective weights of this pass (None without LoRA).
    pub(super) fn lora_weights(
        &self,
        grad: bool,
    ) -> candle_core::Result<Option<HashMap<TensorId, Tensor>>> {
        self.lora.as_ref().map(|l| l.effective(grad)).transpose()
    }

    /// The encoder's tensors as saved: with LoRA, the adapted weights merged.
    pub(super) fn tensors_to_save(&self) -> candle_core::Result<Vec<(String, Tensor)>> {
        self.encoder.base().read_all_rows()?;
        let mut t = self.encoder.tensors_for_save();
        if let Some(l) = &self.lora {
            let merged: HashMap<String, Tensor> = l.merged()?.into_iter().collect();
            for (name, x) in t.iter_mut() {
                if let Some(m) = merged.get(name) {
                    *x = m.clone();
                }
            }
        }
        Ok(t)
    }

    /// Writes the adapter as PEFT does (`adapter_config.json`, `adapter_model.safetensors`) into
    /// `dir`; an error without LoRA.
    pub fn save_peft_adapter(&self, dir: &std::path::Path, base_model: &str) -> Result<()> {
        let Some(l) = &self.lora else {
            bail!("internal: no LoRA adapter to save");
        };
        let (tensors, config) = l.peft_files(base_model, &self.encoder.tensors_for_save())?;
        super::weights::save_safetensors(&tensors, &dir.join("adapter_model.safetensors"))?;
        crate::fsutil::write_atomic(
            &dir.join("adapter_config.json"),
            &serde_json::to_vec_pretty(&config)?,
        )?;
        Ok(())
    }
}
