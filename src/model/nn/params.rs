//! A checkpoint's tensors as the model holds them: trainable `Var`s by HF name (checkpoint
//! order), and tensors carried through unchanged for saving (e.g. `pooler.*`). Blocks take their
//! parameters from it by name. Depends on candle.

use candle_core::{DType, Device, Result, Tensor, Var};

pub struct ParamStore {
    pub vars: Vec<(String, Var)>,
    pub extra: Vec<(String, Tensor)>,
    pub dtype: DType,
    pub device: Device,
}

impl ParamStore {
    /// Parameters from checked tensors (each becomes a `Var`); `extra` are carried through.
    pub fn new(
        required: Vec<(String, Tensor)>,
        extra: Vec<(String, Tensor)>,
        dtype: DType,
        device: Device,
    ) -> Result<Self> {
        let vars = required
            .into_iter()
            .map(|(n, t)| Ok((n, Var::from_tensor(&t)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            vars,
            extra,
            dtype,
            device,
        })
    }

    /// The parameter `name` (an internal error if the weight spec did not list it).
    pub fn var(&self, name: &str) -> Result<Var> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("internal: parameter {name} not loaded"))
            })
    }
}

/// What a model saves: every parameter (detached), then the carried-through tensors.
pub fn tensors_for_save(
    vars: &[(String, Var)],
    extra: &[(String, Tensor)],
) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, var)| (n.clone(), var.as_detached_tensor()))
        .collect();
    v.extend(extra.iter().cloned());
    v
}
