//! OUR trainable BERT encoder: every weight is a candle `Var`, train/eval mode is an explicit
//! argument of [`BertModel::forward_t`], and dropout (hidden states and attention probabilities,
//! rates from config.json) is real, driven by the seeded [`Rng`] held by the model.
//! candle-transformers' BertModel gets no gradients and stubs dropout (DESIGN.md), hence this file.
//! Depends on `config`, `weights`, `ops`, `tokenize::TokenBatch`.

use super::config::{BertConfig, HiddenAct};
use super::ops;
use super::weights::{expected_shapes, CheckedWeights};
use crate::rng::{Rng, RngState};
use crate::tokenize::TokenBatch;
use candle_core::{DType, Device, Result, Tensor, Var};
use std::sync::Mutex;

/// A parameter as a tensor in the compute dtype: tracked for autograd, or detached (inference:
/// no graph is kept, so activations are freed as soon as they are used). Master weights stay f32;
/// the cast is part of the graph, so gradients come back to them in f32 (mixed precision).
fn param(v: &Var, grad: bool, dtype: DType) -> Result<Tensor> {
    let t = if grad {
        v.as_tensor().clone()
    } else {
        v.as_detached_tensor()
    };
    if t.dtype() == dtype {
        Ok(t)
    } else {
        t.to_dtype(dtype)
    }
}

/// `y = x · Wᵀ + b` on the last dim; `weight: [out, in]`, `bias: [out]`.
#[derive(Clone)]
struct Linear {
    weight: Var,
    bias: Var,
}

impl Linear {
    fn forward(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let y = self.product(x, grad)?;
        y.broadcast_add(&param(&self.bias, grad, x.dtype())?)
    }

    /// `x · Wᵀ` without the bias (the fused CUDA ops add it).
    fn product(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let dt = x.dtype();
        let dims = x.dims().to_vec();
        let last = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / last.max(1);
        let y = x
            .reshape((rows, last))?
            .matmul(&param(&self.weight, grad, dt)?.t()?)?;
        let mut out = dims;
        if let Some(l) = out.last_mut() {
            *l = self.weight.dim(0)?;
        }
        y.reshape(out)
    }
}

#[derive(Clone)]
struct LayerNorm {
    weight: Var,
    bias: Var,
    eps: f64,
}

impl LayerNorm {
    /// `x` in the compute dtype; statistics in f32 (see `ops::layer_norm`). On CUDA
    /// (`cuda_path`) one fused kernel: candle's for inference, ours with a hand-written backward
    /// for training (`fused.rs`); the CPU fast path uses `add_forward`, else the composed version.
    fn forward(&self, x: &Tensor, grad: bool, cuda_path: bool) -> Result<Tensor> {
        let dt = x.dtype();
        if cuda_path {
            let w = param(&self.weight, grad, DType::F32)?;
            let b = param(&self.bias, grad, DType::F32)?;
            let x32 = x.to_dtype(DType::F32)?;
            let y = if !grad {
                candle_nn::ops::layer_norm(&x32, &w, &b, self.eps as f32)?
            } else if crate::device::fast_cuda_kernels() {
                super::fused::layer_norm(&x32, &w, &b, self.eps)?
            } else {
                ops::layer_norm(&x32, &w, &b, self.eps)?
            };
            return y.to_dtype(dt);
        }
        ops::layer_norm(
            x,
            &param(&self.weight, grad, dt)?,
            &param(&self.bias, grad, dt)?,
            self.eps,
        )
    }
}

impl LayerNorm {
    /// `LayerNorm(a + r)` in one op on the CPU fast path.
    fn add_forward(&self, a: &Tensor, r: &Tensor, grad: bool) -> Result<Tensor> {
        super::cpu_ops::add_layer_norm(
            a,
            r,
            &param(&self.weight, grad, DType::F32)?,
            &param(&self.bias, grad, DType::F32)?,
            self.eps,
        )
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_ln: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_ln: LayerNorm,
}

/// Dropout rates in effect (config.json's unless overridden with [`BertModel::set_dropout`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutRates {
    pub hidden: f64,
    pub attention: f64,
}

/// The encoder. `forward_t` maps a [`TokenBatch`] `[B, S]` to hidden states `[B, S, H]`.
pub struct BertModel {
    cfg: BertConfig,
    /// Every trainable parameter by HF name (no prefix), in checkpoint order.
    params: Vec<(String, Var)>,
    /// Tensors carried through for saving but unused by the encoder (e.g. `pooler.*`).
    extra: Vec<(String, Tensor)>,
    word: Var,
    position: Var,
    token_type: Var,
    emb_ln: LayerNorm,
    layers: Vec<Layer>,
    dropout: DropoutRates,
    seed: u64,
    rng: Mutex<Rng>,
    /// Dtype of the stored (master) weights: f32 for loaded models.
    dtype: DType,
    /// Dtype the encoder computes in (`--dtype`); the output is in the weights' dtype.
    compute: DType,
    device: Device,
    /// Takes the CUDA path's ops (fused LayerNorm, attention softmax, bias + GELU, bias + dropout +
    /// residual + LayerNorm, hash dropout): on a CUDA device, or on the CPU for checks
    /// ([`Self::use_cuda_path_on_cpu`]).
    cuda_path: bool,
}

impl BertModel {
    /// Builds the model from checked weights (see `weights::load_checked`).
    pub fn from_weights(cfg: BertConfig, w: CheckedWeights) -> Result<Self> {
        let dtype = w
            .required
            .first()
            .map(|(_, t)| t.dtype())
            .unwrap_or(DType::F32);
        let device = w
            .required
            .first()
            .map(|(_, t)| t.device().clone())
            .unwrap_or(Device::Cpu);
        let params: Vec<(String, Var)> = w
            .required
            .into_iter()
            .map(|(n, t)| Ok((n, Var::from_tensor(&t)?)))
            .collect::<Result<_>>()?;
        Self::assemble(cfg, params, w.optional, dtype, device)
    }

    /// A randomly initialised model (normal(0, 0.02) weights, unit LayerNorm), as HF initialises
    /// BERT. For unit tests on tiny configs only; never a quality claim.
    pub fn random(cfg: BertConfig, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let mut rng = Rng::with_stream(seed, 99);
        let mut params = Vec::new();
        for (name, shape) in expected_shapes(&cfg) {
            let n: usize = shape.iter().product();
            let vals: Vec<f32> = if name.ends_with("LayerNorm.weight") {
                vec![1.0; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                (0..n).map(|_| (normal(&mut rng) * 0.02) as f32).collect()
            };
            let t = Tensor::from_vec(vals, shape, device)?.to_dtype(dtype)?;
            params.push((name, Var::from_tensor(&t)?));
        }
        Self::assemble(cfg, params, Vec::new(), dtype, device.clone())
    }

    fn assemble(
        cfg: BertConfig,
        params: Vec<(String, Var)>,
        extra: Vec<(String, Tensor)>,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        let get = |name: &str| -> Result<Var> {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!("internal: parameter {name} not loaded"))
                })
        };
        let lin = |p: &str| -> Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{p}.weight"))?,
                bias: get(&format!("{p}.bias"))?,
            })
        };
        let ln = |p: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: get(&format!("{p}.weight"))?,
                bias: get(&format!("{p}.bias"))?,
                eps: cfg.layer_norm_eps,
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(Layer {
                query: lin(&format!("{p}.attention.self.query"))?,
                key: lin(&format!("{p}.attention.self.key"))?,
                value: lin(&format!("{p}.attention.self.value"))?,
                attn_out: lin(&format!("{p}.attention.output.dense"))?,
                attn_ln: ln(&format!("{p}.attention.output.LayerNorm"))?,
                intermediate: lin(&format!("{p}.intermediate.dense"))?,
                output: lin(&format!("{p}.output.dense"))?,
                out_ln: ln(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let dropout = DropoutRates {
            hidden: cfg.hidden_dropout_prob,
            attention: cfg.attention_probs_dropout_prob,
        };
        Ok(Self {
            word: get("embeddings.word_embeddings.weight")?,
            position: get("embeddings.position_embeddings.weight")?,
            token_type: get("embeddings.token_type_embeddings.weight")?,
            emb_ln: ln("embeddings.LayerNorm")?,
            layers,
            params,
            extra,
            cfg,
            dropout,
            seed: 0,
            rng: Mutex::new(Rng::with_stream(0, 1)),
            dtype,
            compute: dtype,
            cuda_path: device.is_cuda(),
            device,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.cfg
    }
    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The dtype the encoder computes in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }
    /// Computes in `dtype` (bf16/f16 mixed precision: weights stay in their stored dtype and are
    /// cast on the fly, LayerNorm and softmax run in f32, the output is f32).
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
    }
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the CUDA path's choice of ops on the CPU (the composed layers with embtune's fused
    /// LayerNorm, softmax, sublayer ops and hash dropout, as `--device cuda` trains): for
    /// `check-device`'s harness and tests, which compare it with the CPU fast path — so the
    /// wiring of the GPU path is checked on machines without a GPU.
    pub fn use_cuda_path_on_cpu(&mut self) {
        self.cuda_path = true;
    }

    /// Trainable parameters by HF name (no prefix).
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.params
    }

    /// Everything that goes into `model.safetensors`, HF names, parameters first.
    pub fn tensors_for_save(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(n, var)| (n.clone(), var.as_detached_tensor()))
            .collect();
        v.extend(self.extra.iter().cloned());
        v
    }

    /// Overrides both dropout rates (0 disables dropout, for reproducible checks).
    pub fn set_dropout(&mut self, p: f64) {
        self.dropout = DropoutRates {
            hidden: p,
            attention: p,
        };
    }
    pub fn dropout_rates(&self) -> DropoutRates {
        self.dropout
    }

    /// Restarts the dropout RNG from `seed`: the same seed gives the same masks.
    pub fn seed_dropout(&mut self, seed: u64) {
        self.seed = seed;
        *self.rng.get_mut().unwrap_or_else(|e| e.into_inner()) = Rng::with_stream(seed, 1);
    }
    pub fn dropout_state(&self) -> RngState {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state(self.seed)
    }
    pub fn restore_dropout_state(&mut self, s: RngState) {
        self.seed = s.seed;
        *self.rng.get_mut().unwrap_or_else(|e| e.into_inner()) = Rng::from_state(s);
    }

    /// The CPU fast path (`cpu_ops.rs`): f32 weights and compute on the CPU, unless
    /// `EMBTUNE_CPU_FUSED=0`.
    fn cpu_fast(&self) -> bool {
        matches!(self.device, Device::Cpu)
            && !self.cuda_path
            && self.dtype == DType::F32
            && self.compute == DType::F32
            && super::cpu_ops::enabled()
    }

    /// A dropout seed from the model's RNG (masks made from it by a counter-based hash).
    fn next_seed(&self) -> u64 {
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_u64()
    }

    fn drop(&self, x: &Tensor, p: f64, train: bool) -> Result<Tensor> {
        if !train || p <= 0.0 {
            return Ok(x.clone());
        }
        if self.cpu_fast() {
            return super::cpu_ops::dropout(x, p, self.next_seed());
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        if self.cuda_path {
            // The mask is made on the GPU from one seed drawn from our seeded RNG: reproducible
            // from the run's seed, and the RNG state in a checkpoint resumes the sequence. With
            // embtune's kernels it is the CPU fast path's hash mask (same seed, same mask).
            let seed = rng.next_u64();
            drop(rng);
            if crate::device::fast_cuda_kernels() {
                return super::cpu_ops::dropout(x, p, seed);
            }
            return ops::dropout_on_device(x, p, seed);
        }
        ops::dropout(x, p, &mut rng)
    }

    /// Hidden states `[B, S, H]` of the last layer, tracked for autograd. `train` turns dropout on.
    pub fn forward_t(&self, batch: &TokenBatch, train: bool) -> Result<Tensor> {
        self.forward_pass(batch, train, true)
    }

    /// Eval-mode hidden states without an autograd graph (inference: less memory, less work).
    pub fn forward_inference(&self, batch: &TokenBatch) -> Result<Tensor> {
        self.forward_pass(batch, false, false)
    }

    fn forward_pass(&self, batch: &TokenBatch, train: bool, grad: bool) -> Result<Tensor> {
        let (b, s) = batch.input_ids.dims2()?;
        if s > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "sequence length {s} exceeds max_position_embeddings {}",
                self.cfg.max_position_embeddings
            );
        }
        let h = self.cfg.hidden_size;
        let dt = self.dtype;
        let cuda = self.cuda_path;
        // Embedding sums in the stored dtype (f32): gathering rows is cheap, and the embedding
        // LayerNorm then hands the compute dtype to the layers.
        let fast = self.cpu_fast();
        let word_table = param(&self.word, grad, dt)?;
        let words = if fast {
            super::cpu_ops::embedding(&word_table, &batch.input_ids)?
        } else {
            ops::embedding_rows(&word_table, &batch.input_ids)?
        }
        .reshape((b, s, h))?;
        let x = if cuda && crate::device::fast_cuda_kernels() {
            // Same values as the gathers below, with cheap backwards on the GPU: positions
            // 0..s are a narrow; single-segment token types are row 0, broadcast.
            let x = words.broadcast_add(&param(&self.position, grad, dt)?.narrow(0, 0, s)?)?;
            if batch.single_segment {
                x.broadcast_add(&param(&self.token_type, grad, dt)?.narrow(0, 0, 1)?)?
            } else {
                let tt = ops::embedding_rows(
                    &param(&self.token_type, grad, dt)?,
                    &batch.token_type_ids,
                )?;
                x.add(&tt.reshape((b, s, h))?)?
            }
        } else {
            let pos_ids = Tensor::arange(0u32, s as u32, &self.device)?;
            let pos = param(&self.position, grad, dt)?.index_select(&pos_ids, 0)?;
            let tt = param(&self.token_type, grad, dt)?
                .index_select(&batch.token_type_ids.flatten_all()?, 0)?
                .reshape((b, s, h))?;
            if fast {
                // (words + positions) + token types, and the norm, in one op.
                self.emb_ln
                    .add_forward(&words.broadcast_add(&pos)?, &tt, grad)?
            } else {
                words.broadcast_add(&pos)?.add(&tt)?
            }
        };
        let x = if fast {
            x
        } else {
            self.emb_ln
                .forward(&x, grad, self.cuda_path)?
                .to_dtype(self.compute)?
        };
        let mut x = self.drop(&x, self.dropout.hidden, train)?;
        let mask = if fast {
            let keep = batch
                .attention_mask
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            AttnMask::Keep(std::sync::Arc::new(keep))
        } else {
            AttnMask::Additive(ops::additive_attention_mask(
                &batch.attention_mask,
                self.compute,
            )?)
        };
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, &mask, train, grad)?;
        }
        // Back to the weights' dtype (f32; f64 for the gradient-check model).
        x.to_dtype(self.dtype)
    }

    fn layer_forward(
        &self,
        l: &Layer,
        x: &Tensor,
        mask: &AttnMask,
        train: bool,
        grad: bool,
    ) -> Result<Tensor> {
        let mask = match mask {
            AttnMask::Keep(keep) => return self.layer_forward_cpu(l, x, keep, train, grad),
            AttnMask::Additive(m) => m,
        };
        let (b, s, h) = x.dims3()?;
        let nh = self.cfg.num_attention_heads;
        let hd = self.cfg.head_dim();
        let raw_and_v = if self.fused_training(grad) {
            // Bias + heads layout in one node each; keys come out transposed for the product.
            let heads = |m: &Linear, kt: bool| -> Result<Tensor> {
                let y = m.product(x, grad)?;
                super::fused_attention::bias_heads(&y, &param(&m.bias, grad, y.dtype())?, nh, kt)
            };
            let (q, kt, v) = (
                heads(&l.query, false)?,
                heads(&l.key, true)?,
                heads(&l.value, false)?,
            );
            (q.matmul(&kt)?, v)
        } else {
            let heads = |t: Tensor| -> Result<Tensor> {
                t.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()
            };
            let q = heads(l.query.forward(x, grad)?)?;
            let k = heads(l.key.forward(x, grad)?)?;
            let v = heads(l.value.forward(x, grad)?)?;
            (q.matmul(&k.t()?.contiguous()?)?, v)
        };
        let (raw, v) = raw_and_v;
        let scale = 1.0 / (hd as f64).sqrt();
        let probs = if self.fused_training(grad) {
            // Scale, mask, softmax and dropout as one op (same mask as `drop` would draw).
            let p = self.dropout.attention;
            let drop =
                (train && p > 0.0).then(|| super::cpu_kernels::Dropout::new(p, self.next_seed()));
            super::fused_attention::attention_probs(&raw, mask, scale, drop)?
                .to_dtype(raw.dtype())?
        } else {
            let scores = (raw * scale)?.broadcast_add(mask)?;
            self.drop(
                &softmax(&scores, grad, self.cuda_path)?,
                self.dropout.attention,
                train,
            )?
        };
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, h))?;
        let x = self.sublayer_end(&l.attn_out, &ctx, x, &l.attn_ln, train, grad)?;
        let inter = match self.cfg.hidden_act {
            // Training on CUDA: bias + GELU in one node with a one-kernel backward (candle's
            // autograd of gelu_erf is ~12 kernels).
            HiddenAct::Gelu if self.fused_training(grad) => {
                let y = l.intermediate.product(&x, grad)?;
                super::fused_layer::gelu_bias(&y, &param(&l.intermediate.bias, grad, y.dtype())?)?
            }
            HiddenAct::Gelu => l.intermediate.forward(&x, grad)?.gelu_erf()?,
            HiddenAct::GeluTanh => l.intermediate.forward(&x, grad)?.gelu()?,
            HiddenAct::Relu => l.intermediate.forward(&x, grad)?.relu()?,
        };
        self.sublayer_end(&l.output, &inter, &x, &l.out_ln, train, grad)
    }

    /// Whether the CUDA path's fused training ops apply (building a graph, embtune's kernels).
    fn fused_training(&self, grad: bool) -> bool {
        grad && self.cuda_path && crate::device::fast_cuda_kernels()
    }

    /// `LayerNorm(dropout(lin(inp)) + res)`, the end of each sublayer: on the CUDA training path
    /// the bias, dropout, residual and norm are one op (`fused_layer`), whose mask is the one
    /// `drop` would draw (same seed order, same hash, same element order).
    fn sublayer_end(
        &self,
        lin: &Linear,
        inp: &Tensor,
        res: &Tensor,
        ln: &LayerNorm,
        train: bool,
        grad: bool,
    ) -> Result<Tensor> {
        if self.fused_training(grad) {
            let p = self.dropout.hidden;
            let drop =
                (train && p > 0.0).then(|| super::cpu_kernels::Dropout::new(p, self.next_seed()));
            let y = super::fused_layer::bias_dropout_add_ln(
                &lin.product(inp, grad)?,
                &param(&lin.bias, grad, DType::F32)?,
                res,
                &param(&ln.weight, grad, DType::F32)?,
                &param(&ln.bias, grad, DType::F32)?,
                ln.eps,
                drop,
            )?;
            return y.to_dtype(self.compute);
        }
        let out = self.drop(&lin.forward(inp, grad)?, self.dropout.hidden, train)?;
        ln.forward(&(out + res)?, grad, self.cuda_path)
    }

    /// One layer on the CPU fast path: the same computation with the attention core, bias +
    /// GELU, LayerNorm and dropout as single ops with hand-written backwards (`cpu_ops.rs`).
    fn layer_forward_cpu(
        &self,
        l: &Layer,
        x: &Tensor,
        keep: &std::sync::Arc<Vec<f32>>,
        train: bool,
        grad: bool,
    ) -> Result<Tensor> {
        use super::cpu_ops;
        let lin = |m: &Linear, x: &Tensor| {
            cpu_ops::linear(
                x,
                &param(&m.weight, grad, DType::F32)?,
                &param(&m.bias, grad, DType::F32)?,
            )
        };
        // q, k and v in one product: x is packed once and the product is 3× wider.
        let w = |m: &Linear| param(&m.weight, grad, DType::F32);
        let b = |m: &Linear| param(&m.bias, grad, DType::F32);
        let (q, k, v) = (&l.query, &l.key, &l.value);
        let qkv = cpu_ops::linear(
            x,
            &Tensor::cat(&[w(q)?, w(k)?, w(v)?], 0)?,
            &Tensor::cat(&[b(q)?, b(k)?, b(v)?], 0)?,
        )?;
        let p_att = self.dropout.attention;
        let drop = (train && p_att > 0.0).then(|| (p_att, self.next_seed()));
        let heads = self.cfg.num_attention_heads;
        let ctx = cpu_ops::attention(&qkv, keep.clone(), heads, drop)?;
        let attn = self.drop(&lin(&l.attn_out, &ctx)?, self.dropout.hidden, train)?;
        let x = l.attn_ln.add_forward(&attn, x, grad)?;
        let inter = match self.cfg.hidden_act {
            HiddenAct::Gelu => cpu_ops::gelu(&lin(&l.intermediate, &x)?)?,
            HiddenAct::GeluTanh => lin(&l.intermediate, &x)?.gelu()?,
            HiddenAct::Relu => lin(&l.intermediate, &x)?.relu()?,
        };
        let out = self.drop(&lin(&l.output, &inter)?, self.dropout.hidden, train)?;
        l.out_ln.add_forward(&out, &x, grad)
    }

    /// Hidden size of the last dim of `forward_t`'s output.
    pub fn output_dim(&self) -> usize {
        self.cfg.hidden_size
    }
}

/// The attention mask as each path wants it: 1/0 per token for the CPU fast path, additive
/// `[B, 1, 1, S]` for the composed one.
enum AttnMask {
    Keep(std::sync::Arc<Vec<f32>>),
    Additive(Tensor),
}

/// Softmax over the last dim in f32 (half precision inputs are cast up and the result cast
/// back). On CUDA inference candle's fused kernel (training there uses `fused_attention`); else
/// the composed version, which has a backward.
fn softmax(x: &Tensor, grad: bool, cuda_path: bool) -> Result<Tensor> {
    let dt = x.dtype();
    let x32 = match dt {
        DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
        _ => x.clone(),
    };
    let y = match (cuda_path, grad) {
        (true, false) => candle_nn::ops::softmax_last_dim(&x32)?,
        _ => ops::softmax_last_dim(&x32)?,
    };
    y.to_dtype(dt)
}

/// Standard normal by Box–Muller.
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.next_f64().max(1e-300);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
