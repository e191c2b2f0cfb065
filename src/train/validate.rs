//! The checks of a [`TrainConfig`] that need no file (`TrainConfig::validate`): ranges and
//! combinations of settings, each a one-line error naming the flag — run once the command line
//! is resolved, and again on each `--devices` worker. Depends on `train` (its config types) and
//! `loss`.

use super::*;

impl TrainConfig {
    /// Value checks that need no file.
    pub fn validate(&self) -> Result<()> {
        let pos = |name: &str, v: usize| {
            if v == 0 {
                bail!("{name} must be at least 1")
            } else {
                Ok(())
            }
        };
        pos("--batch-size", self.batch_size)?;
        pos("--grad-accum", self.grad_accum)?;
        pos("--log-steps", self.log_steps)?;
        if self.max_steps.is_none() {
            pos("--epochs", self.epochs)?;
        }
        if let Some(s) = self.max_steps {
            pos("--max-steps", s)?;
        }
        for (name, v) in [
            ("--eval-steps", self.eval_steps),
            ("--save-steps", self.save_steps),
            ("--save-total-limit", self.save_total_limit),
        ] {
            if let Some(v) = v {
                pos(name, v)?;
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            bail!(
                "--warmup-ratio must be in [0, 1], got {}",
                self.warmup_ratio
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("--weight-decay must be ≥ 0, got {}", self.weight_decay);
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            bail!(
                "--max-grad-norm must be ≥ 0 (0 disables clipping), got {}",
                self.max_grad_norm
            );
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                bail!("--dropout must be in [0, 1), got {p}");
            }
        }
        if self.save_best && self.eval.is_empty() {
            bail!("--save-best needs --eval-data");
        }
        if self.mini_batch_size == Some(0) {
            bail!("--mini-batch-size must be at least 1");
        }
        if let Some(m) = &self.matryoshka {
            if m.dims.is_empty() || m.dims.contains(&0) {
                bail!("--matryoshka-dims: give positive sizes, e.g. 384,256,128,64");
            }
            if !m.weights.is_empty() && m.weights.len() != m.dims.len() {
                bail!(
                    "--matryoshka-weights: {} weights for {} dimensions; give one per dimension",
                    m.weights.len(),
                    m.dims.len()
                );
            }
            if let Some(w) = m.weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
                bail!("--matryoshka-weights: {w} is not a non-negative number");
            }
        }
        if self.lora.is_some() && !self.freeze.is_none() {
            bail!("--freeze-embeddings/--freeze-layers do not combine with --lora-rank: LoRA trains only its adapters");
        }
        if let Some(l) = &self.lora {
            if l.rank == 0 {
                bail!("--lora-rank must be at least 1");
            }
            if !(l.alpha.is_finite() && l.alpha > 0.0) {
                bail!("--lora-alpha must be > 0, got {}", l.alpha);
            }
        }
        if self.ranks == 0 {
            bail!("--test-thread-ranks must be at least 1");
        }
        if self.worker.as_ref().is_some_and(|w| w.world != self.ranks) {
            bail!("internal: a worker's world size differs from its ranks");
        }
        let parts = self.parts();
        if self.gather_across_devices {
            if let Some(p) = parts.iter().find(|p| !(p.loss.in_batch_negatives())) {
                bail!("--gather-across-devices is for mnrl, cached-mnrl, gist and cached-gist (their in-batch negatives); {} computes its loss per rank", p.name);
            }
        }
        if self.teacher.is_some() && !parts.iter().any(|p| p.loss.distills()) {
            bail!("--teacher is for the distillation losses (--loss mse, margin-mse)");
        }
        if self.teacher_projection && !parts.iter().any(|p| p.loss == LossKind::Mse) {
            bail!("--teacher-projection is for --loss mse (a projection into the teacher's embeddings)");
        }
        let mut names: Vec<&str> = Vec::new();
        for p in &parts {
            if names.contains(&p.name.as_str()) {
                bail!(
                    "--dataset: two datasets are named {:?}; give each its own name=…",
                    p.name
                );
            }
            names.push(&p.name);
            let flag = serde_json::to_value(p.loss)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            if p.loss == LossKind::Mse && self.teacher.is_none() {
                bail!("--loss mse needs --teacher: a model (Hub id or directory) whose embeddings the student learns, or a .npy/.safetensors file of them, one row per training row");
            }
            if self.matryoshka.is_some() && matches!(p.loss, LossKind::Mse | LossKind::Softmax) {
                bail!("--matryoshka-dims does not combine with --loss mse or softmax (their targets and classifier have the full dimension)");
            }
            if p.loss.guided() && self.guide.is_none() {
                bail!("--loss {flag} needs --guide-model (the frozen model that spots false negatives, e.g. the model you start from)");
            }
        }
        if parts.len() > 1 && matches!(self.teacher, Some(teacher::Teacher::File(_))) {
            bail!("--teacher FILE: a labels file is aligned with one dataset's rows; with several --dataset give a teacher model");
        }
        Ok(())
    }
}
