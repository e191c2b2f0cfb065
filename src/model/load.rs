//! Loading a [`SentenceEncoder`] from a local directory or Hub id: the module stack
//! (`st_format`), the family from config.json's model_type (`family::from_config`), checked
//! weights, the tokenizer with max_seq_length resolved as sentence-transformers does, pooling,
//! Dense and Normalize; for commands that only encode, the word-embedding table left to
//! `lazy_rows` (`load_for_inference`). Every error names the file it is about. Depends on
//! `model::*`, `tokenize`.

use super::dense::Dense;
use super::hub::ModelSource;
use super::pooling::PoolingConfig;
use super::st_format::{self, ModuleKind, StackSpec};
use super::{family, weights, ModelSpec, SentenceEncoder, FALLBACK_MAX_SEQ_LENGTH};
use crate::tokenize::TextTokenizer;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use serde_json::Value;

/// The max_seq_length a model runs with, as sentence-transformers resolves it: the user's value,
/// else `sentence_bert_config.json`'s `max_seq_length` (models saved before ST 6), else the
/// tokenizer's `model_max_length` (`tokenizer_config.json`, where ST 6 keeps it), else 512 —
/// then capped by the positions the model has (sentence-transformers caps the tokenizer's value
/// by max_position_embeddings and would fail past the table; we cap every source).
pub fn resolve_max_seq_length(
    user: Option<usize>,
    sentence_bert: Option<usize>,
    tokenizer_max: Option<usize>,
    positions: usize,
) -> usize {
    user.or(sentence_bert)
        .or(tokenizer_max)
        .unwrap_or(FALLBACK_MAX_SEQ_LENGTH)
        .min(positions)
}

/// `model_max_length` of a `tokenizer_config.json`, when it is a real limit (transformers
/// writes 1e30 for "none").
fn model_max_length(tokenizer_config: Option<&[u8]>) -> Option<usize> {
    let v: Value = serde_json::from_slice(tokenizer_config?).ok()?;
    let n = v.get("model_max_length")?.as_f64()?;
    (n >= 1.0 && n < 1e9).then_some(n as usize)
}

/// `do_lower_case` of a `tokenizer_config.json`.
fn lower_case(tokenizer_config: Option<&[u8]>) -> Option<bool> {
    let v: Value = serde_json::from_slice(tokenizer_config?).ok()?;
    v.get("do_lower_case")?.as_bool()
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
        Self::load_with(spec, device, false)
    }

    /// [`Self::load`]; `lazy`: word-embedding rows read on first use (`load_for_inference`).
    fn load_with(spec: &ModelSpec, device: &Device, lazy: bool) -> Result<Self> {
        let src = ModelSource::parse(&spec.model, spec.hub.clone())?;
        if let ModelSource::Local(dir) = &src {
            // A training checkpoint holds the model one level down.
            if dir.join("trainer_state.json").is_file() && !dir.join("config.json").exists() {
                anyhow::bail!(
                    "{} is a training checkpoint, not a model: its model is {}",
                    dir.display(),
                    dir.join("model").display()
                );
            }
        }
        let mut enc = Self::load_from(&src, spec, device, lazy)
            .with_context(|| format!("loading model {}", src.describe()))?;
        enc.packing = !spec.compute.no_packing;
        // Every command that loads a model tells its notices the same way.
        for n in &enc.notices {
            tracing::info!("note: {n}");
        }
        Ok(enc)
    }

    /// [`Self::load_on_spec_device`] for commands that only encode (`embed`, `eval`,
    /// `similarity`, mining, `bench encode`): on the CPU the word-embedding table is read a row
    /// at a time as texts use its tokens (`lazy_rows`: all-mpnet-base-v2 keeps a fraction of its
    /// 94 MB table resident); the embeddings are the same.
    pub fn load_for_inference(spec: &ModelSpec) -> Result<Self> {
        let dev = crate::device::resolve(&spec.compute)?;
        crate::device::check_precision(&spec.compute, &dev)?;
        Self::load_with(spec, &dev, true)
    }

    /// Rows the lazily read tables hold so far, and their total (None: every table was read
    /// whole).
    pub fn lazy_rows_read(&self) -> Option<(usize, usize)> {
        let lazy = &self.encoder.base().lazy;
        (!lazy.is_empty()).then(|| {
            lazy.iter().fold((0, 0), |(r, t), l| {
                (r + l.rows_read(), t + l.var().dim(0).unwrap_or(0))
            })
        })
    }

    /// How many linear weights are held transposed (inference on the CPU: the product's layout).
    pub fn transposed_linears(&self) -> usize {
        self.encoder.base().transposed.len()
    }

    pub(super) fn load_from(
        src: &ModelSource,
        spec: &ModelSpec,
        device: &Device,
        lazy: bool,
    ) -> Result<Self> {
        let stack: StackSpec = st_format::read_stack(src)?;
        let tdir = st_format::transformer_dir(&stack).to_string();
        let cfg_path = src.required(&st_format::file_in(&tdir, "config.json"))?;
        let config_json: Value = serde_json::from_str(
            &std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("reading {}", cfg_path.display()))?,
        )
        .with_context(|| format!("{}: invalid JSON", cfg_path.display()))?;
        let arch = family::from_config(&config_json, &cfg_path)?;
        let weights_path = match src.optional(&st_format::file_in(&tdir, "model.safetensors"))? {
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
                bail!(
                    "{}: no model weights: model.safetensors is missing{what}",
                    src.describe()
                );
            }
        };
        let wspec = arch.weight_spec();
        let (mut checked, unread) =
            weights::load_checked_lazy(&weights_path, &wspec, DType::F32, device, lazy)?;
        if lazy && device.is_cpu() {
            // Inference on the CPU: linear weights in the layout the product reads without
            // re-packing them on every call (same embeddings, bitwise).
            weights::store_linears_transposed(&mut checked, &wspec)?;
        }
        let mut notices = Vec::new();
        if !checked.ignored_heads.is_empty() {
            notices.push(format!(
                "ignored {} tensors outside the encoder (task heads)",
                checked.ignored_heads.len()
            ));
        }
        let mut encoder = family::build(&*arch, checked, DType::F32, device)
            .with_context(|| format!("{}: building the encoder", weights_path.display()))?;
        encoder.base_mut().attach_lazy(unread)?;
        let mut tokenizer_files = Vec::new();
        for name in st_format::TOKENIZER_FILES {
            if let Some(p) = src.optional(&st_format::file_in(&tdir, name))? {
                let bytes =
                    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                tokenizer_files.push((name.to_string(), bytes));
            }
        }
        let tok_config_bytes = tokenizer_files
            .iter()
            .find(|(n, _)| n == "tokenizer_config.json")
            .map(|(_, b)| b.clone());
        let tok_config = tok_config_bytes.as_deref();
        if let Some(n) = spec.max_seq_length {
            if n > arch.max_tokens() {
                bail!(
                    "--max-seq-length {n}: the model has {} positions (valid: up to {0})",
                    arch.max_tokens()
                );
            }
        }
        let max_len = resolve_max_seq_length(
            spec.max_seq_length,
            stack.max_seq_length,
            model_max_length(tok_config),
            arch.max_tokens(),
        );
        let tokenizer_json = st_format::file_in(&tdir, "tokenizer.json");
        let (tok_path, tokenizer) = match src.optional(&tokenizer_json)? {
            Some(p) => {
                let t = TextTokenizer::from_file(
                    &p,
                    max_len,
                    stack.do_lower_case,
                    arch.pad_token_id(),
                )?;
                (p, t)
            }
            None => {
                // A BERT checkpoint from before `tokenizers`: vocab.txt (+ do_lower_case in
                // tokenizer_config.json), made into the WordPiece tokenizer BertTokenizerFast
                // builds from it; its tokenizer.json is saved with the model.
                let Some(vocab) = src.optional(&st_format::file_in(&tdir, "vocab.txt"))? else {
                    src.required(&tokenizer_json)?;
                    unreachable!("required() fails for a missing file");
                };
                let lower = lower_case(tok_config).unwrap_or(true) || stack.do_lower_case;
                let t = TextTokenizer::from_vocab_txt(&vocab, max_len, lower, arch.pad_token_id())?;
                tokenizer_files.push(("tokenizer.json".into(), t.to_json()?.into_bytes()));
                (vocab, t)
            }
        };
        // An id past the embedding table would be an out-of-bounds read on a GPU (and an index
        // error mid-run on the CPU, as in sentence-transformers): refuse the pair at load.
        let vocab = arch.vocab_size();
        if let Some(max_id) = tokenizer.inner().get_vocab(true).values().max() {
            if *max_id as usize >= vocab {
                bail!(
                    "{}: the tokenizer has token id {max_id} but config.json's vocab_size is {vocab} (ids 0..{}): the tokenizer does not belong to this model",
                    tok_path.display(),
                    vocab.saturating_sub(1)
                );
            }
        }
        // Room for at least one token besides the special ones ([CLS] … [SEP]).
        let specials = tokenizer
            .tokenize(&[""])?
            .first()
            .map_or(0, |t| t.ids.len());
        if spec.max_seq_length.is_some_and(|n| n <= specials) {
            bail!(
                "--max-seq-length {}: the tokenizer adds {specials} special tokens, so no text would fit (valid: {}..={})",
                max_len,
                specials + 1,
                arch.max_tokens()
            );
        }
        let hidden = arch.hidden_size();
        let mut pooling = match &stack.pooling {
            Some(p) => p.clone(),
            None => {
                notices.push("no modules.json: a plain Hugging Face model; using mean pooling, as sentence-transformers does".into());
                st_format::default_pooling(hidden)
            }
        };
        if pooling.word_embedding_dimension != hidden {
            bail!(
                "1_Pooling/config.json: word_embedding_dimension {} does not match the hidden size {hidden} of config.json",
                pooling.word_embedding_dimension,
            );
        }
        if let Some(modes) = &spec.pooling {
            let include_prompt = pooling.include_prompt;
            pooling = PoolingConfig::new(modes.clone(), hidden);
            pooling.include_prompt = include_prompt;
        }
        let mut dense = Vec::new();
        let mut dim = pooling.output_dim();
        for m in stack.modules.iter().filter(|m| m.kind == ModuleKind::Dense) {
            let d = Dense::load(src, &m.path, device)?;
            if d.in_features() != dim {
                bail!(
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
        // sentence-transformers refuses a default prompt name that names no prompt at load.
        let prompts = super::prompts::Prompts::from_st_config(stack.st_config.as_ref());
        if let Some(d) = &prompts.default_name {
            match prompts.map.get(d) {
                None => bail!(
                    "{}: field default_prompt_name: {d:?} is not among the prompts ({}); fix the name or set it to null",
                    src.optional("config_sentence_transformers.json")
                        .ok()
                        .flatten()
                        .map_or_else(|| src.describe(), |p| p.display().to_string()),
                    if prompts.map.is_empty() { "there are none".to_string() } else { prompts.map.keys().cloned().collect::<Vec<_>>().join(", ") }
                ),
                Some(p) if !p.is_empty() => notices.push(format!(
                    "the model's default prompt {d:?} ({p:?}) is prepended to every text, as sentence-transformers does; --prompt \"\" turns it off"
                )),
                Some(_) => {}
            }
        }
        let mut enc = Self::assemble(
            encoder,
            tokenizer,
            pooling,
            dense,
            normalize,
            (config_json, stack.st_config.clone()),
            tokenizer_files,
            src.describe(),
        );
        enc.notices = notices;
        enc.weights_file = std::fs::metadata(&weights_path).ok().map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            format!("{}:{}:{t}", weights_path.display(), m.len())
        });
        enc.set_compute_dtype(spec.compute.dtype.dtype());
        Ok(enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_seq_length_follows_sentence_transformers_order_and_the_position_cap() {
        assert_eq!(
            resolve_max_seq_length(Some(10), Some(256), Some(24), 512),
            10
        );
        assert_eq!(resolve_max_seq_length(None, Some(256), Some(24), 512), 256);
        // ST 6 saves no max_seq_length: the tokenizer's model_max_length decides.
        assert_eq!(resolve_max_seq_length(None, None, Some(24), 512), 24);
        assert_eq!(resolve_max_seq_length(None, None, None, 512), 512);
        // RoBERTa: 514 positions, 512 usable.
        assert_eq!(resolve_max_seq_length(None, Some(1024), None, 512), 512);
        assert_eq!(
            model_max_length(Some(br#"{"model_max_length": 24}"#)),
            Some(24)
        );
        assert_eq!(
            model_max_length(Some(
                br#"{"model_max_length": 1000000000000000019884624838656}"#
            )),
            None
        );
        assert_eq!(model_max_length(Some(b"{}")), None);
        assert_eq!(model_max_length(None), None);
    }
}
