//! Trainable parameters that belong to a loss, not to the model: SoftmaxLoss's classifier and
//! MSE distillation's projection into a wider teacher space. sentence-transformers keeps them on
//! the loss module and does not save them with the model; so do we — they are trained with the
//! model, kept in checkpoints (`loss_params.safetensors`, for exact resume) and left out of the
//! saved model. [`LinearHead`] is `x·Wᵀ + b` initialised as torch's `nn.Linear` (uniform in
//! ±1/√fan_in, our RNG). Depends on candle and rng.

use crate::rng::Rng;
use candle_core::{DType, Device, Tensor, Var};

/// What a loss learns about the model and data once they are loaded.
pub struct HeadInit<'a> {
    /// The model's embedding size.
    pub dim: usize,
    /// Classes in the data (SoftmaxLoss).
    pub num_classes: usize,
    /// The last dimension of the teacher labels (MSE distillation).
    pub teacher_dim: usize,
    /// MSE: a teacher of another dimension gets a trained projection (`--teacher-projection`);
    /// without it, an error.
    pub teacher_projection: bool,
    pub device: &'a Device,
    pub seed: u64,
}

/// A linear layer owned by a loss.
pub struct LinearHead {
    pub weight: Var,
    pub bias: Var,
}

impl LinearHead {
    /// `[out, in]` weight and `[out]` bias, both uniform in ±1/√in (torch's nn.Linear).
    pub fn new(input: usize, out: usize, device: &Device, seed: u64) -> candle_core::Result<Self> {
        let mut rng = Rng::with_stream(seed, 77);
        let bound = 1.0 / (input as f64).sqrt();
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                .collect()
        };
        let w = Tensor::from_vec(draw(out * input), (out, input), device)?;
        let b = Tensor::from_vec(draw(out), out, device)?;
        Ok(Self {
            weight: Var::from_tensor(&w)?,
            bias: Var::from_tensor(&b)?,
        })
    }
    /// A head with given weights (tests against sentence-transformers' fixed classifiers).
    pub fn from_tensors(weight: &Tensor, bias: &Tensor) -> candle_core::Result<Self> {
        Ok(Self {
            weight: Var::from_tensor(weight)?,
            bias: Var::from_tensor(bias)?,
        })
    }
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let w = self.weight.as_tensor().to_dtype(x.dtype())?;
        let b = self.bias.as_tensor().to_dtype(x.dtype())?;
        x.matmul(&w.t()?)?.broadcast_add(&b)
    }
    /// Named for the optimizer and checkpoints (`loss.<name>.weight` / `.bias`).
    pub fn named(&self, name: &str) -> Vec<(String, Var)> {
        vec![
            (format!("loss.{name}.weight"), self.weight.clone()),
            (format!("loss.{name}.bias"), self.bias.clone()),
        ]
    }
}

/// Mean cross-entropy of `logits [B, K]` against class ids `[B]` (f32 holding integers).
pub fn cross_entropy(logits: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(&logits, 1)?;
    let idx = ids.to_dtype(DType::U32)?.unsqueeze(1)?;
    logp.gather(&idx, 1)?.mean_all()?.neg()
}
