//! The encoder families and the registry from `config.json`'s `model_type` to a family. A
//! family file holds its config (the Hub's spellings), its weight names ([`WeightSpec`]) and how
//! its blocks are built from them ([`Arch::build`]): `nn::PostNormEncoder` for the BERT-like
//! families, `nn::RotaryEncoder` for ModernBERT, NomicBERT and GTE. Adding
//! a family = one file here + one arm in [`from_config`] (+ an op only if it needs a new one).
//! Depends on `model::{nn, weights, config, encoder}`.

pub mod bert;
pub mod distilbert;
pub mod gte;
pub mod modernbert;
pub mod mpnet;
pub mod nomic_bert;

use super::encoder::Encoder;
use super::nn::ParamStore;
use super::weights::{CheckedWeights, Init, WeightSpec};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde_json::Value;
use std::path::Path;

/// A parsed `config.json` of one family: what loading needs before the weights exist.
pub trait Arch: Send + Sync {
    /// The model_type family ("bert", "roberta", "xlm-roberta", "camembert", …).
    fn family(&self) -> &'static str;
    fn hidden_size(&self) -> usize;
    fn vocab_size(&self) -> usize;
    /// The padding id when the tokenizer names none.
    fn pad_token_id(&self) -> u32;
    /// Usable positions per sequence (special tokens included).
    fn max_tokens(&self) -> usize;
    fn weight_spec(&self) -> WeightSpec;
    /// The encoder from parameters named as [`Arch::weight_spec`] lists them.
    fn build(&self, store: ParamStore) -> candle_core::Result<Box<dyn Encoder>>;
}

/// Every supported `model_type`, as the error lists them.
pub const SUPPORTED: [&str; 10] = [
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "distilbert",
    "mpnet",
    "modernbert",
    "nomic_bert",
    "new",
    "gte",
];

/// The family of `config.json` (`json`, read from `path`), its fields checked.
pub fn from_config(json: &Value, path: &Path) -> Result<Box<dyn Arch>> {
    // A config without model_type was written by hand or by an old tool: BERT, as before.
    let ty = json
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("bert");
    let arch: Result<Box<dyn Arch>> = match ty {
        "bert" | "roberta" | "xlm-roberta" | "camembert" => {
            bert::Bert::from_json(json, path, ty).map(|a| Box::new(a) as Box<dyn Arch>)
        }
        "distilbert" => distilbert::DistilBert::from_json(json, path).map(|a| Box::new(a) as _),
        "mpnet" => mpnet::MpNet::from_json(json, path).map(|a| Box::new(a) as _),
        "modernbert" => modernbert::ModernBert::from_json(json, path).map(|a| Box::new(a) as _),
        "nomic_bert" => nomic_bert::NomicBert::from_json(json, path).map(|a| Box::new(a) as _),
        "new" | "gte" => gte::Gte::from_json(json, path, ty == "new").map(|a| Box::new(a) as _),
        other => bail!(
            "{}: model_type \"{other}\" is not supported; embtune supports {}",
            path.display(),
            SUPPORTED.join(", ")
        ),
    };
    arch.with_context(|| format!("{}: unsupported model config", path.display()))
}

/// The encoder of `arch` from checked weights.
pub fn build(
    arch: &dyn Arch,
    w: CheckedWeights,
    dtype: DType,
    device: &Device,
) -> Result<Box<dyn Encoder>> {
    let store = ParamStore::new(w.required, w.optional, dtype, device.clone())?
        .with_transposed(w.transposed);
    Ok(arch.build(store)?)
}

/// A randomly initialised encoder of `arch` (normal(0, 0.02) weights, unit norms, zero biases,
/// as HF initialises these families). For tests on tiny configs only; never a quality claim.
pub fn random(
    arch: &dyn Arch,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Box<dyn Encoder>> {
    let mut rng = Rng::with_stream(seed, 99);
    let mut required = Vec::new();
    for (name, shape, init) in arch.weight_spec().required {
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = match init {
            Init::Ones => vec![1.0; n],
            Init::Zeros => vec![0.0; n],
            Init::Normal => (0..n).map(|_| (normal(&mut rng) * 0.02) as f32).collect(),
        };
        let t = Tensor::from_vec(vals, shape, device)?.to_dtype(dtype)?;
        required.push((name, t));
    }
    let store = ParamStore::new(required, Vec::new(), dtype, device.clone())?;
    Ok(arch.build(store)?)
}

/// [`random`] from a config.json value (tests).
pub fn random_from_json(
    json: &Value,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Box<dyn Encoder>> {
    let arch = from_config(json, Path::new("config.json"))?;
    random(&*arch, seed, dtype, device)
}

/// Standard normal by Box–Muller.
fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.next_f64().max(1e-300);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
