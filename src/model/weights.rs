//! Weights by HF name: load a BERT checkpoint (with or without the `bert.` prefix, old
//! `gamma`/`beta` LayerNorm names), check every name and shape against the config, convert dtype;
//! save safetensors with `{"format":"pt"}` metadata. Missing or unexpected tensors are an error
//! listing their names — never a silent random init (candle's VarBuilder trap, DESIGN.md).

use super::config::BertConfig;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Name → shape of every tensor the encoder needs, in HF naming without prefix.
pub fn expected_shapes(cfg: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut v: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![cfg.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![cfg.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![cfg.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            v.push((format!("{p}.{name}"), shape));
        }
    }
    v
}

/// Tensors that may be present and are carried through unchanged (not used by the encoder).
pub fn optional_shapes(cfg: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    vec![
        ("pooler.dense.weight".into(), vec![h, h]),
        ("pooler.dense.bias".into(), vec![h]),
    ]
}

/// Buffers some checkpoints store that are not parameters; dropped on load.
const IGNORED_BUFFERS: [&str; 1] = ["embeddings.position_ids"];

/// The loaded, checked weights: `required` in [`expected_shapes`] order, `optional` by name.
pub struct CheckedWeights {
    pub required: Vec<(String, Tensor)>,
    pub optional: Vec<(String, Tensor)>,
    /// Names outside the encoder (task heads such as `cls.*` next to `bert.*`), ignored.
    pub ignored_heads: Vec<String>,
}

fn canonical(name: &str) -> String {
    // Old TF-converted checkpoints call LayerNorm parameters gamma/beta.
    if let Some(base) = name.strip_suffix(".gamma") {
        if base.ends_with("LayerNorm") {
            return format!("{base}.weight");
        }
    }
    if let Some(base) = name.strip_suffix(".beta") {
        if base.ends_with("LayerNorm") {
            return format!("{base}.bias");
        }
    }
    name.to_string()
}

/// Loads `model.safetensors` and checks it against `cfg`, converting to `dtype` on `device`.
pub fn load_checked(
    path: &Path,
    cfg: &BertConfig,
    dtype: DType,
    device: &Device,
) -> Result<CheckedWeights> {
    let raw = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
    check(raw, cfg, dtype, device)
        .with_context(|| format!("{}: weights do not match config.json", path.display()))
}

/// Name and shape checks on an already-read tensor map (see [`load_checked`]).
pub fn check(
    raw: HashMap<String, Tensor>,
    cfg: &BertConfig,
    dtype: DType,
    device: &Device,
) -> Result<CheckedWeights> {
    let has_prefix = raw.keys().any(|k| k.starts_with("bert.embeddings."));
    let mut by_name: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut ignored_heads = Vec::new();
    for (k, t) in raw {
        let local = if has_prefix {
            match k.strip_prefix("bert.") {
                Some(rest) => rest.to_string(),
                None => {
                    ignored_heads.push(k);
                    continue;
                }
            }
        } else {
            k
        };
        if IGNORED_BUFFERS.contains(&local.as_str()) {
            continue;
        }
        by_name.insert(canonical(&local), t);
    }
    let mut required = Vec::new();
    let mut missing = Vec::new();
    let mut bad_shapes = Vec::new();
    for (name, shape) in expected_shapes(cfg) {
        match by_name.remove(&name) {
            Some(t) if t.dims() == shape.as_slice() => required.push((name, t)),
            Some(t) => bad_shapes.push(format!(
                "{name}: expected {shape:?}, file has {:?}",
                t.dims()
            )),
            None => missing.push(name),
        }
    }
    let mut optional = Vec::new();
    for (name, shape) in optional_shapes(cfg) {
        match by_name.remove(&name) {
            Some(t) if t.dims() == shape.as_slice() => optional.push((name, t)),
            Some(t) => bad_shapes.push(format!(
                "{name}: expected {shape:?}, file has {:?}",
                t.dims()
            )),
            None => {}
        }
    }
    let unexpected: Vec<String> = by_name.into_keys().collect();
    let mut problems = Vec::new();
    if !bad_shapes.is_empty() {
        problems.push(format!("tensor-shape mismatch: {}", bad_shapes.join("; ")));
    }
    if !missing.is_empty() {
        problems.push(format!("missing tensors: {}", list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected tensors: {}", list(&unexpected)));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    let convert = |v: Vec<(String, Tensor)>| -> Result<Vec<(String, Tensor)>> {
        v.into_iter()
            .map(|(n, t)| Ok((n, t.to_dtype(dtype)?.to_device(device)?)))
            .collect()
    };
    Ok(CheckedWeights {
        required: convert(required)?,
        optional: convert(optional)?,
        ignored_heads,
    })
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 12;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{} … and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    }
}

/// Writes tensors (HF names) as safetensors with `{"format":"pt"}` metadata, which
/// transformers requires to load the file.
pub fn save_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .context("serializing safetensors")?;
    crate::fsutil::write_file_synced(path, &bytes)
}
