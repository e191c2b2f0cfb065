//! `SentenceEncoder` = a family's transformer (`Box<dyn Encoder>`) + pooling + optional Dense +
//! optional Normalize, loaded from a local directory or Hub id in the sentence-transformers layout
//! (`load`) and saved back in it. It holds the model's execution path ([`Exec`], resolved once at
//! load) and the dropout RNG (one seed per forward call, saved in checkpoints). Submodules:
//! `encoder` (the trait and per-call `Fwd`), `batches` (token batches: padded or packed, per text
//! column or joint), `load` and `save` (the folder in and out), `family` (config + weight names per model_type, the
//! registry), `nn` (shared blocks), `weights`, `config`, `hub`, `st_format`, `st_read` (safetensors read tensor
//! by tensor), `pooling`, `prompts`, `dense`.
//! Nothing outside `model/` touches a family's internals.

mod batches;
pub mod config;
pub mod dense;
pub mod encoder;
pub mod family;
pub mod hub;
pub mod lazy_rows;
mod load;
pub mod lora;
pub mod nn;
pub mod pooling;
mod pooling_packed;
pub mod prompts;
mod save;
pub mod st_format;
pub mod st_read;
pub mod st_write;
pub mod weights;

use crate::ops::Exec;
use crate::rng::{Rng, RngState};
use crate::tokenize::{TextTokenizer, TokenBatch};
use anyhow::{Context, Result};
pub use batches::ColumnBatches;
use candle_core::{DType, Device, Tensor, Var};
use dense::Dense;
use encoder::{DropoutRates, Encoder, Fwd};
use hub::HubOptions;
use pooling::{Pooling, PoolingConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Mutex;

/// What to load and how: resolved once from command-line flags.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Hub id (`org/name`) or local directory.
    pub model: String,
    pub hub: HubOptions,
    /// Overrides the model's pooling modes.
    pub pooling: Option<Vec<Pooling>>,
    /// Overrides the model's max_seq_length (tokens, special tokens included).
    pub max_seq_length: Option<usize>,
    /// Device, compute precision and TF32 (`--device`, `--dtype`, `--tf32`).
    #[serde(default)]
    pub compute: crate::device::ComputeSpec,
}

/// Default when neither the model nor the user sets max_seq_length (BERT's position limit
/// caps it further), matching sentence-transformers' fallback to the tokenizer's model_max_length.
pub const FALLBACK_MAX_SEQ_LENGTH: usize = 512;

/// The full sentence encoder.
pub struct SentenceEncoder {
    encoder: Box<dyn Encoder>,
    /// The execution path (see [`SentenceEncoder::set_exec`]).
    exec: Exec,
    exec_forced: bool,
    /// Dtype the encoder computes in (`--dtype`); outputs are in the weights' dtype.
    compute: DType,
    /// The seed the dropout RNG was started from, and the RNG (one draw per dropout site).
    dropout_seed: u64,
    dropout_rng: Mutex<Rng>,
    pub tokenizer: TextTokenizer,
    pub pooling: PoolingConfig,
    pub dense: Vec<Dense>,
    pub normalize: bool,
    /// The raw config.json (written back unchanged on save).
    config_json: Value,
    st_config: Option<Value>,
    /// The model's prompts (`config_sentence_transformers.json`), written back on save.
    pub prompts: prompts::Prompts,
    /// Tokenizer files to write on save: (file name, contents), read at load — the directory
    /// loaded from may be gone by then (e.g. a checkpoint pruned after a resume).
    tokenizer_files: Vec<(String, Vec<u8>)>,
    /// Where the model came from (for messages and saved configs).
    pub source: String,
    /// Notices for the user (e.g. "no modules.json: mean pooling").
    pub notices: Vec<String>,
    /// The weights file this model was loaded from, its size and modification time (caches key
    /// on it); None for a model built in memory.
    weights_file: Option<String>,
    /// Set once the trainable parameters were handed out (`named_vars`): the weights may have
    /// changed since, so nothing is cached for them.
    weights_exposed: std::sync::atomic::AtomicBool,
    /// LoRA adapters, when training with them (`lora.rs`): passes use the effective weights,
    /// saving merges them.
    lora: Option<lora::Lora>,
    /// Whether batches are packed where the encoder takes them (`--no-packing`: false).
    packing: bool,
}

impl SentenceEncoder {
    /// Assembles an encoder from parts (e.g. a randomly initialised encoder from
    /// [`family::random`] for tests or a new model). `config_json` is written as config.json on
    /// save.
    pub fn from_parts(
        encoder: Box<dyn Encoder>,
        tokenizer: TextTokenizer,
        pooling: PoolingConfig,
        normalize: bool,
        config_json: Value,
        tokenizer_json: PathBuf,
    ) -> Result<Self> {
        let bytes = std::fs::read(&tokenizer_json)
            .with_context(|| format!("reading {}", tokenizer_json.display()))?;
        Ok(Self::assemble(
            encoder,
            tokenizer,
            pooling,
            Vec::new(),
            normalize,
            (config_json, None),
            vec![("tokenizer.json".into(), bytes)],
            "(in memory)".into(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        encoder: Box<dyn Encoder>,
        tokenizer: TextTokenizer,
        pooling: PoolingConfig,
        dense: Vec<Dense>,
        normalize: bool,
        (config_json, st_config): (Value, Option<Value>),
        tokenizer_files: Vec<(String, Vec<u8>)>,
        source: String,
    ) -> Self {
        let dtype = encoder.dtype();
        Self {
            exec: Exec::resolve(encoder.device(), dtype, dtype),
            exec_forced: false,
            compute: dtype,
            dropout_seed: 0,
            dropout_rng: Mutex::new(Rng::with_stream(0, 1)),
            encoder,
            tokenizer,
            pooling,
            dense,
            normalize,
            config_json,
            prompts: prompts::Prompts::from_st_config(st_config.as_ref()),
            st_config,
            tokenizer_files,
            source,
            notices: Vec::new(),
            weights_file: None,
            weights_exposed: std::sync::atomic::AtomicBool::new(false),
            lora: None,
            packing: true,
        }
    }

    /// A fingerprint of the weights as loaded (file, size, modification time), for caches;
    /// None for a model built in memory or whose parameters were handed out for training.
    pub fn weights_fingerprint(&self) -> Option<String> {
        if self
            .weights_exposed
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        self.weights_file.clone()
    }

    /// The prompt text an encode with `prompt` prepends: `Some(text)` as given (empty: none),
    /// `None`: the model's default prompt, as sentence-transformers' `encode` applies it.
    pub fn prompt_for(&self, prompt: Option<&str>) -> Result<Option<String>> {
        match prompt {
            Some(p) => Ok(Some(p.to_string()).filter(|p| !p.is_empty())),
            None => self.prompts.resolve(None, None, prompts::Side::Plain),
        }
    }

    /// Embedding dimension after pooling and Dense layers.
    pub fn dim(&self) -> usize {
        self.dense
            .last()
            .map(|d| d.out_features())
            .unwrap_or(self.pooling.output_dim())
    }

    pub fn device(&self) -> &Device {
        self.encoder.device()
    }

    /// The encoder family ("bert", "roberta", "mpnet", …).
    pub fn family(&self) -> &'static str {
        self.encoder.family()
    }
    pub fn num_layers(&self) -> usize {
        self.encoder.num_layers()
    }
    /// The transformer's hidden size (before pooling).
    pub fn hidden_size(&self) -> usize {
        self.encoder.hidden_size()
    }
    /// The most tokens a text may have (the position table's usable rows).
    pub fn max_tokens(&self) -> usize {
        self.encoder.max_tokens()
    }

    /// The execution path the ops take.
    pub fn exec(&self) -> Exec {
        self.exec
    }
    /// Forces an execution path — e.g. `Exec::CudaFused` on the CPU, so tests and
    /// `check-device`'s harness run the CUDA path's ops (their CPU forwards) without a GPU.
    pub fn set_exec(&mut self, exec: Exec) {
        self.exec = exec;
        self.exec_forced = true;
    }
    /// The dtype the encoder computes in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }
    /// Computes in `dtype` (bf16/f16 mixed precision: weights stay in their stored dtype and are
    /// cast on the fly, LayerNorm and softmax run in f32, the output is f32). The execution path
    /// is resolved again unless it was forced.
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
        if !self.exec_forced {
            self.exec = Exec::resolve(self.device(), self.encoder.dtype(), dtype);
        }
    }

    /// Overrides both dropout rates (0 disables dropout, for reproducible checks).
    pub fn set_dropout(&mut self, p: f64) {
        self.encoder.set_dropout(DropoutRates {
            hidden: p,
            attention: p,
        });
    }
    pub fn dropout_rates(&self) -> DropoutRates {
        self.encoder.dropout()
    }
    /// Restarts the dropout RNG from `seed`: the same seed gives the same masks.
    pub fn seed_dropout(&mut self, seed: u64) {
        self.dropout_seed = seed;
        *self
            .dropout_rng
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = Rng::with_stream(seed, 1);
    }
    /// Where the dropout RNG is (saved in checkpoints; replaying a pass from it gives the same
    /// masks).
    pub fn dropout_state(&self) -> RngState {
        self.dropout_rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state(self.dropout_seed)
    }
    /// Sets the dropout RNG back to `s` (taken by [`Self::dropout_state`] in this run) so the
    /// next passes draw the same masks again (GradCache's replay).
    pub fn rewind_dropout(&self, s: RngState) {
        *self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner()) = Rng::from_state(s);
    }
    pub fn restore_dropout_state(&mut self, s: RngState) {
        self.dropout_seed = s.seed;
        *self
            .dropout_rng
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = Rng::from_state(s);
    }

    /// Every trainable parameter with its HF name (Dense ones prefixed by their module dir).
    /// (After this, caches no longer trust the weights: see [`Self::weights_fingerprint`].)
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.weights_exposed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut v: Vec<(String, Var)> = self.encoder.vars().to_vec();
        for (i, d) in self.dense.iter().enumerate() {
            v.extend(
                d.named_vars()
                    .into_iter()
                    .map(|(n, var)| (format!("dense{i}.{n}"), var)),
            );
        }
        v
    }

    /// Sentence embeddings `[B, D]` of a token batch, tracked for autograd; `train` turns dropout
    /// on (seeds drawn from the model's dropout RNG, which moves on).
    pub fn embed_batch(&self, batch: &TokenBatch, train: bool) -> candle_core::Result<Tensor> {
        if !train {
            let fwd = Fwd::eval(self.exec, self.compute)
                .with_lora(self.lora_weights(true)?)
                .with_packing(batch.packed.clone());
            return self.head(&self.encoder.forward(batch, &fwd)?, batch, true);
        }
        self.train_pass(batch, true)
    }

    /// Train-mode embeddings `[B, D]` (dropout on, seeds from the model's dropout RNG, which
    /// moves on) without an autograd graph: GradCache's first pass, replayed later with the
    /// same masks from the state [`Self::dropout_state`] gave before it.
    pub fn embed_batch_no_graph(&self, batch: &TokenBatch) -> candle_core::Result<Tensor> {
        self.train_pass(batch, false)
    }

    fn train_pass(&self, batch: &TokenBatch, graph: bool) -> candle_core::Result<Tensor> {
        let mut rng = self.dropout_rng.lock().unwrap_or_else(|e| e.into_inner());
        let fwd = if graph {
            Fwd::train(self.exec, self.compute, rng.clone())
        } else {
            Fwd::train_no_graph(self.exec, self.compute, rng.clone())
        }
        .with_lora(self.lora_weights(graph)?)
        .with_packing(batch.packed.clone());
        let hidden = self.encoder.forward(batch, &fwd)?;
        if let Some(r) = fwd.into_rng() {
            *rng = r;
        }
        drop(rng);
        self.head(&hidden, batch, graph)
    }

    /// Hidden states `[B, S, H]` of the transformer in eval mode without a graph (tests, checks;
    /// a packed batch's come back padded too, zeros in the padding).
    pub fn hidden_states(&self, batch: &TokenBatch) -> candle_core::Result<Tensor> {
        batches::unpacked(self.exec, &self.inference_pass(batch)?, batch)
    }

    /// The encoder's eval-mode output without a graph (a packed batch's as `[1, T, H]`).
    fn inference_pass(&self, batch: &TokenBatch) -> candle_core::Result<Tensor> {
        let fwd = Fwd::inference(self.exec, self.compute)
            .with_lora(self.lora_weights(false)?)
            .with_packing(batch.packed.clone());
        self.encoder.forward(batch, &fwd)
    }

    /// Eval-mode embeddings `[B, D]` without an autograd graph (what `encode` uses).
    pub fn embed_inference(&self, batch: &TokenBatch) -> candle_core::Result<Tensor> {
        self.head(&self.inference_pass(batch)?, batch, false)
    }

    fn head(&self, hidden: &Tensor, batch: &TokenBatch, grad: bool) -> candle_core::Result<Tensor> {
        // A packed pass pools straight from its rows (segment sums, `pooling_packed.rs`); max
        // pooling reads padded `[B, S, H]`, so its rows are gathered back first (one copy of
        // the hidden states; the gather's backward scatters the gradient to the packed rows).
        let segments = match &batch.packed {
            Some(p) => self.pooling.forward_packed(hidden, p, batch.prompt_len)?,
            None => None,
        };
        let mut x = match segments {
            Some(x) => x,
            None => {
                let hidden = batches::unpacked(self.exec, hidden, batch)?;
                let mask = batch.padded_mask().map_err(candle_core::Error::wrap)?;
                self.pooling
                    .forward(&hidden, &mask, &batch.lengths, batch.prompt_len)?
            }
        };
        for d in &self.dense {
            x = d.forward(&x, grad)?;
        }
        if self.normalize {
            x = pooling::l2_normalize(&x)?;
        }
        Ok(x)
    }
}
