//! Learning-rate schedules as pure functions of the optimizer step (HF transformers' semantics:
//! update t, counted from 0, uses `lr · factor(t)`; during warmup factor = t / W, so the very first
//! update has learning rate 0, as in the Python reference runs).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Warmup, then linear decay to 0 at the last step.
    Linear,
    /// Warmup, then half a cosine wave down to 0.
    Cosine,
    /// Warmup, then constant.
    Constant,
}

/// Learning rate for update `step` (0-based) of `total`, with `warmup` warmup steps.
pub fn lr_at(schedule: Schedule, base_lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base_lr * step as f64 / warmup.max(1) as f64;
    }
    let after = (step - warmup) as f64;
    let span = total.saturating_sub(warmup).max(1) as f64;
    let factor = match schedule {
        Schedule::Linear => ((total as f64 - step as f64) / span).max(0.0),
        Schedule::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * after / span).cos())).max(0.0),
        Schedule::Constant => 1.0,
    };
    base_lr * factor
}

/// Warmup steps: explicit, else ceil(ratio · total) (HF's `get_warmup_steps`).
pub fn warmup_steps(total: usize, ratio: f64, explicit: Option<usize>) -> usize {
    explicit.unwrap_or_else(|| (total as f64 * ratio).ceil() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_warmup_then_decay_matches_hf() {
        let (lr, w, t) = (2e-5, 36, 360);
        assert_eq!(lr_at(Schedule::Linear, lr, 0, w, t), 0.0);
        assert!((lr_at(Schedule::Linear, lr, 18, w, t) - 1e-5).abs() < 1e-18);
        assert!((lr_at(Schedule::Linear, lr, 36, w, t) - 2e-5).abs() < 1e-18);
        assert!((lr_at(Schedule::Linear, lr, 198, w, t) - 1e-5).abs() < 1e-18);
        assert_eq!(lr_at(Schedule::Linear, lr, 360, w, t), 0.0);
        assert_eq!(warmup_steps(360, 0.1, None), 36);
        assert_eq!(warmup_steps(44, 0.1, None), 5);
    }

    #[test]
    fn cosine_and_constant() {
        assert!((lr_at(Schedule::Cosine, 1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(Schedule::Constant, 1.0, 99, 10, 100), 1.0);
        assert_eq!(lr_at(Schedule::Constant, 1.0, 5, 10, 100), 0.5);
    }
}
