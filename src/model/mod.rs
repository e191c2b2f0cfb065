//! `SentenceEncoder` = our BERT + pooling + optional Dense + optional Normalize, loaded from a
//! local directory or Hub id in the sentence-transformers layout and saved back in it.
//! Submodules: config, hub, bert, ops, pooling, weights, st_format, dense.

pub mod bert;
pub mod config;
pub mod cpu_kernels;
pub mod cpu_ops;
pub mod dense;
pub mod fused;
pub mod fused_attention;
pub mod fused_layer;
pub mod hub;
pub mod ops;
pub mod pooling;
pub mod st_format;
#[cfg(test)]
mod test_util;
pub mod weights;

use crate::tokenize::{TextTokenizer, TokenBatch};
use anyhow::{Context, Result};
use bert::BertModel;
use candle_core::{DType, Device, Tensor, Var};
use config::BertConfig;
use dense::Dense;
use hub::{HubOptions, ModelSource};
use pooling::{Pooling, PoolingConfig};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use st_format::{ModuleKind, StackSpec};
use std::path::{Path, PathBuf};

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

/// A training batch's text columns, padded (see [`SentenceEncoder::pad_columns`]).
pub struct ColumnBatches {
    pub batches: Vec<TokenBatch>,
    /// `Some((columns, rows))` when all columns share one batch, column by column.
    pub joint_rows: Option<(usize, usize)>,
}

/// The full sentence encoder.
pub struct SentenceEncoder {
    pub bert: BertModel,
    pub tokenizer: TextTokenizer,
    pub pooling: PoolingConfig,
    pub dense: Vec<Dense>,
    pub normalize: bool,
    /// The raw config.json (written back unchanged on save).
    config_json: Value,
    st_config: Option<Value>,
    /// Tokenizer files to copy on save: (file name, local path).
    /// Tokenizer files to write on save: (file name, contents), read at load — the directory
    /// loaded from may be gone by then (e.g. a checkpoint pruned after a resume).
    tokenizer_files: Vec<(String, Vec<u8>)>,
    /// Where the model came from (for messages and saved configs).
    pub source: String,
    /// Notices for the user (e.g. "no modules.json: mean pooling").
    pub notices: Vec<String>,
}

impl SentenceEncoder {
    /// Loads a model onto the device and precision of `spec.compute` (see `device::resolve`).
    pub fn load_on_spec_device(spec: &ModelSpec) -> Result<Self> {
        let dev = crate::device::resolve(&spec.compute)?;
        crate::device::check_precision(&spec.compute, &dev)?;
        Self::load(spec, &dev)
    }

    /// Loads a model, checking every file it reads (errors name the file).
    pub fn load(spec: &ModelSpec, device: &Device) -> Result<Self> {
        let src = ModelSource::parse(&spec.model, spec.hub.clone())?;
        Self::load_from(&src, spec, device)
            .with_context(|| format!("loading model {}", src.describe()))
    }

    fn load_from(src: &ModelSource, spec: &ModelSpec, device: &Device) -> Result<Self> {
        let stack: StackSpec = st_format::read_stack(src)?;
        let tdir = st_format::transformer_dir(&stack).to_string();
        let cfg_path = src.required(&st_format::file_in(&tdir, "config.json"))?;
        let config_json: Value = serde_json::from_str(
            &std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("reading {}", cfg_path.display()))?,
        )
        .with_context(|| format!("{}: invalid JSON", cfg_path.display()))?;
        let cfg = BertConfig::from_file(&cfg_path)?;
        let weights_name = st_format::file_in(&tdir, "model.safetensors");
        let weights_path = match src.optional(&weights_name)? {
            Some(p) => p,
            None => {
                let bin = src
                    .optional(&st_format::file_in(&tdir, "pytorch_model.bin"))
                    .ok()
                    .flatten();
                let what = if bin.is_some() {
                    " (only pytorch_model.bin, a pickle; convert it to safetensors)"
                } else {
                    ""
                };
                anyhow::bail!(
                    "{}: no model weights: model.safetensors is missing{what}",
                    src.describe()
                );
            }
        };
        let checked = weights::load_checked(&weights_path, &cfg, DType::F32, device)?;
        let mut notices = Vec::new();
        if !checked.ignored_heads.is_empty() {
            notices.push(format!(
                "ignored {} tensors outside the encoder (task heads)",
                checked.ignored_heads.len()
            ));
        }
        let mut bert = BertModel::from_weights(cfg.clone(), checked)?;
        bert.set_compute_dtype(spec.compute.dtype.dtype());
        let max_len = spec
            .max_seq_length
            .or(stack.max_seq_length)
            .unwrap_or(FALLBACK_MAX_SEQ_LENGTH)
            .min(cfg.max_position_embeddings);
        let tok_path = src.required(&st_format::file_in(&tdir, "tokenizer.json"))?;
        let tokenizer = TextTokenizer::from_file(
            &tok_path,
            max_len,
            stack.do_lower_case,
            cfg.pad_token_id as u32,
        )?;
        // An id past the embedding table would be an out-of-bounds read on a GPU (and an index
        // error mid-run on the CPU, as in sentence-transformers): refuse the pair at load.
        if let Some(max_id) = tokenizer.inner().get_vocab(true).values().max() {
            if *max_id as usize >= cfg.vocab_size {
                anyhow::bail!(
                    "{}: the tokenizer has token id {max_id} but config.json's vocab_size is {} (ids 0..{}): the tokenizer does not belong to this model",
                    tok_path.display(),
                    cfg.vocab_size,
                    cfg.vocab_size.saturating_sub(1)
                );
            }
        }
        let mut tokenizer_files = Vec::new();
        for name in st_format::TOKENIZER_FILES {
            if let Some(p) = src.optional(&st_format::file_in(&tdir, name))? {
                let bytes =
                    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                tokenizer_files.push((name.to_string(), bytes));
            }
        }
        let mut pooling = match &stack.pooling {
            Some(p) => p.clone(),
            None => {
                notices.push("no modules.json: a plain Hugging Face model; using mean pooling, as sentence-transformers does".into());
                st_format::default_pooling(cfg.hidden_size)
            }
        };
        if pooling.word_embedding_dimension != cfg.hidden_size {
            anyhow::bail!(
                "1_Pooling/config.json: word_embedding_dimension {} does not match hidden_size {} of config.json",
                pooling.word_embedding_dimension,
                cfg.hidden_size
            );
        }
        if let Some(modes) = &spec.pooling {
            pooling = PoolingConfig::new(modes.clone(), cfg.hidden_size);
        }
        let mut dense = Vec::new();
        let mut dim = pooling.output_dim();
        for m in stack.modules.iter().filter(|m| m.kind == ModuleKind::Dense) {
            let d = Dense::load(src, &m.path, device)?;
            if d.in_features() != dim {
                anyhow::bail!(
                    "{}/config.json: in_features {} but the previous module outputs {dim}",
                    m.path,
                    d.in_features()
                );
            }
            dim = d.out_features();
            dense.push(d);
        }
        let normalize = stack
            .modules
            .iter()
            .any(|m| m.kind == ModuleKind::Normalize);
        Ok(Self {
            bert,
            tokenizer,
            pooling,
            dense,
            normalize,
            config_json,
            st_config: stack.st_config.clone(),
            tokenizer_files,
            source: src.describe(),
            notices,
        })
    }

    /// Assembles an encoder from parts (e.g. a randomly initialised [`BertModel`] for tests or a
    /// new model). `config_json` is written as config.json on save.
    pub fn from_parts(
        bert: BertModel,
        tokenizer: TextTokenizer,
        pooling: PoolingConfig,
        normalize: bool,
        config_json: Value,
        tokenizer_json: PathBuf,
    ) -> Result<Self> {
        let bytes = std::fs::read(&tokenizer_json)
            .with_context(|| format!("reading {}", tokenizer_json.display()))?;
        Ok(Self {
            bert,
            tokenizer,
            pooling,
            dense: Vec::new(),
            normalize,
            config_json,
            st_config: None,
            tokenizer_files: vec![("tokenizer.json".into(), bytes)],
            source: "(in memory)".into(),
            notices: Vec::new(),
        })
    }

    /// Embedding dimension after pooling and Dense layers.
    pub fn dim(&self) -> usize {
        self.dense
            .last()
            .map(|d| d.out_features())
            .unwrap_or(self.pooling.output_dim())
    }

    pub fn device(&self) -> &Device {
        self.bert.device()
    }

    /// Every trainable parameter with its HF name (Dense ones prefixed by their module dir).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<(String, Var)> = self.bert.named_vars().to_vec();
        for (i, d) in self.dense.iter().enumerate() {
            v.extend(
                d.named_vars()
                    .into_iter()
                    .map(|(n, var)| (format!("dense{i}.{n}"), var)),
            );
        }
        v
    }

    /// Sentence embeddings `[B, D]` of a token batch, tracked for autograd; `train` turns dropout on.
    pub fn embed_batch(&self, batch: &TokenBatch, train: bool) -> candle_core::Result<Tensor> {
        self.head(&self.bert.forward_t(batch, train)?, batch, true)
    }

    /// Pads the token ids of a training batch's text columns (`columns[c][i]`: row i of column
    /// c): one batch per column, or with `joint` all columns in one batch (one forward pass
    /// instead of one per column — fewer, larger kernels — at the cost of padding every column
    /// to the longest text of all).
    pub fn pad_columns(
        &self,
        columns: &[Vec<&[u32]>],
        joint: bool,
        device: &Device,
    ) -> Result<ColumnBatches> {
        if joint && columns.len() > 1 {
            let rows = columns[0].len();
            if columns.iter().any(|c| c.len() != rows) {
                anyhow::bail!("internal: text columns of different lengths in one batch");
            }
            let all: Vec<&[u32]> = columns.iter().flatten().copied().collect();
            Ok(ColumnBatches {
                batches: vec![self.tokenizer.pad(&all, device)?],
                joint_rows: Some((columns.len(), rows)),
            })
        } else {
            Ok(ColumnBatches {
                batches: columns
                    .iter()
                    .map(|c| self.tokenizer.pad(c, device))
                    .collect::<Result<_>>()?,
                joint_rows: None,
            })
        }
    }

    /// Embeddings `[B, D]` of each text column of [`Self::pad_columns`]'s batches, tracked for
    /// autograd (a joint batch is split back into its columns).
    pub fn embed_columns(
        &self,
        b: &ColumnBatches,
        train: bool,
    ) -> candle_core::Result<Vec<Tensor>> {
        match b.joint_rows {
            Some((cols, rows)) => {
                let e = self.embed_batch(&b.batches[0], train)?;
                (0..cols).map(|c| e.narrow(0, c * rows, rows)).collect()
            }
            None => b
                .batches
                .iter()
                .map(|x| self.embed_batch(x, train))
                .collect(),
        }
    }

    /// Eval-mode embeddings `[B, D]` without an autograd graph (what `encode` uses).
    pub fn embed_inference(&self, batch: &TokenBatch) -> candle_core::Result<Tensor> {
        self.head(&self.bert.forward_inference(batch)?, batch, false)
    }

    fn head(&self, hidden: &Tensor, batch: &TokenBatch, grad: bool) -> candle_core::Result<Tensor> {
        let mut x = self
            .pooling
            .forward(hidden, &batch.attention_mask, &batch.lengths)?;
        for d in &self.dense {
            x = d.forward(&x, grad)?;
        }
        if self.normalize {
            x = pooling::l2_normalize(&x)?;
        }
        Ok(x)
    }

    /// Saves in the sentence-transformers layout, atomically (temporary directory + rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_dir_atomic(dir, |tmp| self.write_files(tmp))
            .with_context(|| format!("saving model to {}", dir.display()))
    }

    /// Saves into an existing directory that also holds other outputs (a training run's
    /// metrics and checkpoints): each file is complete when it appears.
    pub fn save_into(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_entries_into(dir, |tmp| self.write_files(tmp))
            .with_context(|| format!("saving model to {}", dir.display()))
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        use crate::fsutil::write_file_synced;
        let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
        weights::save_safetensors(
            &self.bert.tensors_for_save(),
            &dir.join("model.safetensors"),
        )?;
        write_file_synced(&dir.join("config.json"), &pretty(&self.config_json))?;
        for (name, bytes) in &self.tokenizer_files {
            write_file_synced(&dir.join(name), bytes)?;
        }
        let mut modules = vec![
            json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        std::fs::create_dir_all(dir.join("1_Pooling"))?;
        write_file_synced(
            &dir.join("1_Pooling/config.json"),
            &pretty(&self.pooling.to_json()),
        )?;
        for d in &self.dense {
            let idx = modules.len();
            let sub = format!("{idx}_Dense");
            d.save(&dir.join(&sub))?;
            modules.push(json!({"idx": idx, "name": idx.to_string(), "path": sub, "type": "sentence_transformers.models.Dense"}));
        }
        if self.normalize {
            let idx = modules.len();
            let sub = format!("{idx}_Normalize");
            std::fs::create_dir_all(dir.join(&sub))?;
            modules.push(json!({"idx": idx, "name": idx.to_string(), "path": sub, "type": "sentence_transformers.models.Normalize"}));
        }
        write_file_synced(&dir.join("modules.json"), &pretty(&Value::Array(modules)))?;
        let sbert = json!({"max_seq_length": self.tokenizer.max_seq_length(), "do_lower_case": self.tokenizer.lowercase()});
        write_file_synced(&dir.join("sentence_bert_config.json"), &pretty(&sbert))?;
        write_file_synced(
            &dir.join("config_sentence_transformers.json"),
            &pretty(&self.st_config_for_save()),
        )?;
        Ok(())
    }

    /// The source's `config_sentence_transformers.json` with our version recorded; the
    /// similarity function is cosine (what every evaluator here uses).
    fn st_config_for_save(&self) -> Value {
        let mut v = self
            .st_config
            .clone()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        if let Some(obj) = v.as_object_mut() {
            let ver = obj.entry("__version__").or_insert_with(|| json!({}));
            if let Some(ver) = ver.as_object_mut() {
                ver.insert("embtune".into(), json!(env!("CARGO_PKG_VERSION")));
            }
            obj.entry("prompts").or_insert_with(|| json!({}));
            obj.entry("default_prompt_name").or_insert(Value::Null);
            obj.entry("model_type")
                .or_insert_with(|| json!("SentenceTransformer"));
            obj.entry("similarity_fn_name")
                .or_insert_with(|| json!("cosine"));
        }
        v
    }
}
