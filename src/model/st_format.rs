//! The sentence-transformers folder: reading the module stack from `modules.json`
//! (Transformer → Pooling → optional Dense → optional Normalize, with `sentence_bert_config.json`
//! and `1_Pooling/config.json`), and the description written back on save.

use super::hub::ModelSource;
use super::pooling::{Pooling, PoolingConfig};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};

/// One entry of `modules.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleKind {
    Transformer,
    Pooling,
    Dense,
    Normalize,
}

#[derive(Debug, Clone)]
pub struct ModuleEntry {
    pub kind: ModuleKind,
    /// Relative path inside the model ("" for the root).
    pub path: String,
}

/// The module stack as read from a model (or defaulted for a plain HF model).
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub modules: Vec<ModuleEntry>,
    /// `sentence_bert_config.json`: max_seq_length (None when absent) and do_lower_case.
    pub max_seq_length: Option<usize>,
    pub do_lower_case: bool,
    /// Pooling from `1_Pooling/config.json`, None for a plain HF model.
    pub pooling: Option<PoolingConfig>,
    /// `config_sentence_transformers.json` as found (kept on save), if any.
    pub st_config: Option<Value>,
    /// True when the model had no modules.json (mean pooling was assumed).
    pub plain_hf: bool,
}

/// Refuses module paths that leave the model directory.
pub fn safe_relative(path: &str, file: &str) -> Result<()> {
    let p = Path::new(path);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        bail!("{file}: module path {path:?} points outside the model directory");
    }
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

fn module_kind(type_name: &str, file: &str, index: usize) -> Result<ModuleKind> {
    // Match on the class name only: the package path moved between sentence-transformers versions.
    let class = type_name.rsplit('.').next().unwrap_or(type_name);
    Ok(match class {
        "Transformer" => ModuleKind::Transformer,
        "Pooling" => ModuleKind::Pooling,
        "Dense" => ModuleKind::Dense,
        "Normalize" => ModuleKind::Normalize,
        other => bail!(
            "{file}: entry {index}: module type {other:?} is not supported; expected Transformer, Pooling, Dense or Normalize"
        ),
    })
}

/// Reads the module stack of `src`.
pub fn read_stack(src: &ModelSource) -> Result<StackSpec> {
    let st_config = match src.optional("config_sentence_transformers.json")? {
        Some(p) => Some(read_json(&p)?),
        None => None,
    };
    let Some(modules_path) = src.optional("modules.json")? else {
        return Ok(StackSpec {
            modules: vec![
                ModuleEntry {
                    kind: ModuleKind::Transformer,
                    path: String::new(),
                },
                ModuleEntry {
                    kind: ModuleKind::Pooling,
                    path: "1_Pooling".into(),
                },
            ],
            max_seq_length: None,
            do_lower_case: false,
            pooling: None,
            st_config,
            plain_hf: true,
        });
    };
    let file = modules_path.display().to_string();
    let v = read_json(&modules_path)?;
    let arr = v
        .as_array()
        .with_context(|| format!("{file}: expected a JSON list of modules"))?;
    let mut modules = Vec::new();
    for (i, m) in arr.iter().enumerate() {
        let ty = m
            .get("type")
            .and_then(Value::as_str)
            .with_context(|| format!("{file}: entry {i}: field type: expected a string"))?;
        let path = m
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        safe_relative(&path, &file)?;
        modules.push(ModuleEntry {
            kind: module_kind(ty, &file, i)?,
            path,
        });
    }
    match modules.first() {
        Some(m) if m.kind == ModuleKind::Transformer => {}
        _ => bail!("{file}: the first module must be a Transformer"),
    }
    if modules
        .iter()
        .filter(|m| m.kind == ModuleKind::Pooling)
        .count()
        != 1
    {
        bail!("{file}: expected exactly one Pooling module");
    }
    let tdir = modules[0].path.clone();
    let (mut max_seq_length, mut do_lower_case) = (None, false);
    if let Some(p) = src.optional(&join(&tdir, "sentence_bert_config.json"))? {
        let c = read_json(&p)?;
        max_seq_length = c
            .get("max_seq_length")
            .and_then(Value::as_u64)
            .map(|n| n as usize);
        do_lower_case = c
            .get("do_lower_case")
            .and_then(Value::as_bool)
            .unwrap_or(false);
    }
    let pool_dir = modules
        .iter()
        .find(|m| m.kind == ModuleKind::Pooling)
        .map(|m| m.path.clone())
        .unwrap_or_default();
    let pool_path = src.required(&join(&pool_dir, "config.json"))?;
    let pooling = Some(PoolingConfig::from_json(
        &read_json(&pool_path)?,
        &pool_path,
    )?);
    Ok(StackSpec {
        modules,
        max_seq_length,
        do_lower_case,
        pooling,
        st_config,
        plain_hf: false,
    })
}

/// The Transformer module's directory inside the model ("" = root).
pub fn transformer_dir(spec: &StackSpec) -> &str {
    spec.modules.first().map(|m| m.path.as_str()).unwrap_or("")
}

pub fn file_in(dir: &str, name: &str) -> String {
    join(dir, name)
}

/// Default pooling for a plain HF model: mean, as sentence-transformers does.
pub fn default_pooling(dim: usize) -> PoolingConfig {
    PoolingConfig::new(vec![Pooling::Mean], dim)
}

/// Files of the tokenizer copied verbatim on save, when the source has them.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "added_tokens.json",
];

/// Dense module config (`2_Dense/config.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DenseConfig {
    pub in_features: usize,
    pub out_features: usize,
    #[serde(default = "yes")]
    pub bias: bool,
    #[serde(default = "identity")]
    pub activation_function: String,
}

fn yes() -> bool {
    true
}
fn identity() -> String {
    "torch.nn.modules.linear.Identity".into()
}

/// Path of a module's file within a local directory or Hub repo.
pub fn module_file(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(join(dir, name))
}
