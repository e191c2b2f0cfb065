//! Reading a family's `config.json`: its fields parsed with errors that name the file and the
//! field, and the sanity bounds that refuse absurd sizes before anything is allocated (a 10⁹
//! hidden size would otherwise try to allocate terabytes). Each family defines its config struct
//! with the Hub's spellings (`model::family`). Depends on serde.

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::Path;

pub const MAX_HIDDEN: usize = 16_384;
pub const MAX_LAYERS: usize = 256;
pub const MAX_VOCAB: usize = 4_000_000;
pub const MAX_POSITIONS: usize = 1 << 17;

/// `config.json` as `T` (a family's config); `family` names it in the error.
pub fn parse<T: DeserializeOwned>(json: &Value, path: &Path, family: &str) -> Result<T> {
    serde_json::from_value(json.clone())
        .with_context(|| format!("{}: not a valid {family} config.json", path.display()))
}

/// Each `(field, value, max)` must be in `1..=max`.
pub fn check_sizes(sizes: &[(&str, usize, usize)]) -> Result<()> {
    for &(name, v, max) in sizes {
        if v == 0 || v > max {
            bail!("{name} = {v} is outside 1..={max}");
        }
    }
    Ok(())
}

/// The usual sizes of a transformer config, then heads dividing the hidden size.
pub fn check_transformer(
    (hidden, hidden_name): (usize, &str),
    (layers, layers_name): (usize, &str),
    (heads, heads_name): (usize, &str),
    (inter, inter_name): (usize, &str),
    vocab: usize,
    positions: usize,
) -> Result<()> {
    check_sizes(&[
        (hidden_name, hidden, MAX_HIDDEN),
        (layers_name, layers, MAX_LAYERS),
        (heads_name, heads, MAX_HIDDEN),
        (inter_name, inter, 8 * MAX_HIDDEN),
        ("vocab_size", vocab, MAX_VOCAB),
        ("max_position_embeddings", positions, MAX_POSITIONS),
    ])?;
    if hidden % heads != 0 {
        bail!("{hidden_name} {hidden} is not a multiple of {heads_name} {heads}");
    }
    Ok(())
}

/// Each `(field, p)` must be a dropout rate in `[0, 1)`.
pub fn check_rates(rates: &[(&str, f64)]) -> Result<()> {
    for &(name, p) in rates {
        if !(0.0..1.0).contains(&p) {
            bail!("{name} = {p} is outside [0, 1)");
        }
    }
    Ok(())
}

pub fn default_dropout() -> f64 {
    0.1
}
pub fn default_act() -> crate::ops::Act {
    crate::ops::Act::Gelu
}
pub fn default_eps() -> f64 {
    1e-12
}
