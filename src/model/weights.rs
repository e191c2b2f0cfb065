//! Weights by HF name: a family's [`WeightSpec`] (every tensor it needs with its shape, the
//! prefixes a checkpoint may put before them, unused tensors carried through, buffers dropped by
//! name), checked against `model.safetensors` (old `gamma`/`beta` LayerNorm names accepted);
//! missing or unexpected tensors are an error listing their names — never a silent random init
//! (candle's VarBuilder trap, DESIGN.md). Saving writes safetensors with `{"format":"pt"}`
//! metadata, streamed tensor by tensor (`st_write`, re-exported here). Reading goes through
//! `st_read` (tensor by tensor; for inference on the CPU the word-embedding table may be left for
//! `lazy_rows`). Depends on candle, safetensors,
//! `fsutil`, `st_read`.

use crate::model::st_read::LazySource;
pub use crate::model::st_write::{save_entries, save_safetensors, SaveData};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// How a tensor is initialised in a random model (tests only; as HF initialises these families).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// normal(0, 0.02)
    Normal,
    Zeros,
    Ones,
}

/// What a family reads from `model.safetensors`.
#[derive(Debug, Clone, Default)]
pub struct WeightSpec {
    /// Prefixes a checkpoint of a task model puts before the encoder's names (`bert.`,
    /// `roberta.`); with one present, names outside it are task heads (ignored, counted).
    pub prefixes: Vec<&'static str>,
    /// Every tensor the encoder needs, in checkpoint order: name (no prefix), shape, init.
    pub required: Vec<(String, Vec<usize>, Init)>,
    /// Tensors that may be present and are carried through unchanged (e.g. `pooler.*`).
    pub optional: Vec<(String, Vec<usize>)>,
    /// Buffers some checkpoints store that are not parameters (e.g. `embeddings.position_ids`),
    /// dropped by name.
    pub buffers: Vec<&'static str>,
    /// The `[out, in]` weights of linear layers (added by [`WeightSpec::linear`] /
    /// [`WeightSpec::linear_with`]): the tensors an inference load on the CPU may keep
    /// transposed ([`store_linears_transposed`]).
    pub linears: Vec<String>,
}

impl WeightSpec {
    /// An empty spec for checkpoints whose task models use `prefix`, dropping `buffers`, and
    /// (with `pooler: Some(h)`) carrying an unused `pooler.dense` `[h, h]` through.
    pub fn new(prefix: &'static str, buffers: Vec<&'static str>, pooler: Option<usize>) -> Self {
        let optional = match pooler {
            Some(h) => vec![
                ("pooler.dense.weight".into(), vec![h, h]),
                ("pooler.dense.bias".into(), vec![h]),
            ],
            None => Vec::new(),
        };
        Self {
            prefixes: vec![prefix],
            required: Vec::new(),
            optional,
            buffers,
            linears: Vec::new(),
        }
    }
    /// Adds `<prefix>.weight` `[out, inp]` and `<prefix>.bias` `[out]`.
    pub fn linear(&mut self, prefix: &str, out: usize, inp: usize) {
        self.linear_with(prefix, out, inp, true);
    }
    /// Adds LayerNorm `<prefix>.weight` (ones) and `<prefix>.bias` (zeros) of size `h`.
    pub fn norm(&mut self, prefix: &str, h: usize) {
        self.norm_with(prefix, h, true);
    }
    /// [`WeightSpec::linear`] with the bias only when `bias` (`bias=False` layers).
    pub fn linear_with(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) {
        self.tensor(&format!("{prefix}.weight"), vec![out, inp], Init::Normal);
        self.linears.push(format!("{prefix}.weight"));
        if bias {
            self.tensor(&format!("{prefix}.bias"), vec![out], Init::Zeros);
        }
    }
    /// [`WeightSpec::norm`] with the bias only when `bias`.
    pub fn norm_with(&mut self, prefix: &str, h: usize, bias: bool) {
        self.tensor(&format!("{prefix}.weight"), vec![h], Init::Ones);
        if bias {
            self.tensor(&format!("{prefix}.bias"), vec![h], Init::Zeros);
        }
    }
    pub fn tensor(&mut self, name: &str, shape: Vec<usize>, init: Init) {
        self.required.push((name.to_string(), shape, init));
    }
}

/// The loaded, checked weights: `required` in the spec's order, `optional` by name.
pub struct CheckedWeights {
    pub required: Vec<(String, Tensor)>,
    pub optional: Vec<(String, Tensor)>,
    /// Names outside the encoder (task heads such as `cls.*` next to `bert.*`), ignored.
    pub ignored_heads: Vec<String>,
    /// Linear weights among `required` held transposed, `[in, out]` contiguous
    /// ([`store_linears_transposed`]).
    pub transposed: Vec<String>,
}

/// Keeps every linear weight of `spec` (f32 on the CPU) transposed: `[in, out]` contiguous, the
/// layout in which the CPU product reads the weight without re-packing it on every call (gemm
/// packs a row-major `[out, in]` weight each time; measured 1.1–2.2× faster products on the
/// layers' shapes, bitwise the same results). For inference loads: training keeps `[out, in]`
/// (its optimizer and backward work on the checkpoint's layout). The encoder's `Linear`s read
/// such a weight as its transpose, a `[out, in]` view.
pub fn store_linears_transposed(w: &mut CheckedWeights, spec: &WeightSpec) -> Result<()> {
    for (name, t) in w.required.iter_mut() {
        if !spec.linears.contains(name) || t.dtype() != DType::F32 || !t.device().is_cpu() {
            continue;
        }
        let (out, inp) = t.dims2()?;
        let tr = crate::ops::cpu::with_data(&[t], "transposing a linear weight", |d| {
            Ok(crate::ops::cpu::transpose(d[0], out, inp))
        })?;
        // Into Var storage as it is (the parameter store takes a variable without a copy).
        *t = candle_core::Var::from_vec(tr, (inp, out), &Device::Cpu)?.into_inner();
        w.transposed.push(name.clone());
    }
    Ok(())
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

/// Loads `model.safetensors` and checks it against `spec`, converting to `dtype` on `device`.
pub fn load_checked(
    path: &Path,
    spec: &WeightSpec,
    dtype: DType,
    device: &Device,
) -> Result<CheckedWeights> {
    Ok(load_checked_lazy(path, spec, dtype, device, false)?.0)
}

/// The tensors `load_checked_lazy` may leave unread: word-embedding tables (the only tables
/// indexed by token ids, which `lazy_rows` fills).
fn is_word_table(name: &str, _shape: &[usize]) -> bool {
    name.ends_with("word_embeddings.weight") || name.ends_with("tok_embeddings.weight")
}

/// [`load_checked`]; with `lazy` (f32 on the CPU) the word-embedding table is left unread, its
/// rows to be read on first use (`model::lazy_rows`), and where they are is returned.
pub fn load_checked_lazy(
    path: &Path,
    spec: &WeightSpec,
    dtype: DType,
    device: &Device,
    lazy: bool,
) -> Result<(CheckedWeights, Vec<(candle_core::TensorId, LazySource)>)> {
    let lazy = lazy && dtype == DType::F32 && device.is_cpu();
    let pick = |n: &str, s: &[usize]| lazy && is_word_table(n, s);
    let (raw, unread) = crate::model::st_read::load_lazy(path, &pick)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))?;
    let checked = check(raw, spec, dtype, device)
        .with_context(|| format!("{}: weights do not match config.json", path.display()))?;
    Ok((checked, unread))
}

/// The prefix the checkpoint's encoder names carry, if any: the first of the spec's prefixes
/// followed by the top-level module of the spec's first tensor (`bert.embeddings.…`).
fn prefix_of<'a>(raw: &HashMap<String, Tensor>, spec: &'a WeightSpec) -> Option<&'a str> {
    let first = spec.required.first().map(|(n, _, _)| n.as_str())?;
    let top = first.split('.').next().unwrap_or(first);
    spec.prefixes.iter().copied().find(|p| {
        let start = format!("{p}{top}.");
        raw.keys().any(|k| k.starts_with(&start))
    })
}

/// Name and shape checks on an already-read tensor map (see [`load_checked`]).
pub fn check(
    raw: HashMap<String, Tensor>,
    spec: &WeightSpec,
    dtype: DType,
    device: &Device,
) -> Result<CheckedWeights> {
    let prefix = prefix_of(&raw, spec);
    let mut by_name: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut ignored_heads = Vec::new();
    for (k, t) in raw {
        let local = match prefix {
            Some(p) => match k.strip_prefix(p) {
                Some(rest) => rest.to_string(),
                None => {
                    ignored_heads.push(k);
                    continue;
                }
            },
            None => k,
        };
        if spec.buffers.contains(&local.as_str()) {
            continue;
        }
        by_name.insert(canonical(&local), t);
    }
    let mut required = Vec::new();
    let mut missing = Vec::new();
    let mut bad_shapes = Vec::new();
    for (name, shape, _) in &spec.required {
        match by_name.remove(name) {
            Some(t) if t.dims() == shape.as_slice() => required.push((name.clone(), t)),
            Some(t) => bad_shapes.push(format!(
                "{name}: expected {shape:?}, file has {:?}",
                t.dims()
            )),
            None => missing.push(name.clone()),
        }
    }
    let mut optional = Vec::new();
    for (name, shape) in &spec.optional {
        match by_name.remove(name) {
            Some(t) if t.dims() == shape.as_slice() => optional.push((name.clone(), t)),
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
        transposed: Vec::new(),
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
