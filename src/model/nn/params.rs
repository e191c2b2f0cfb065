//! A checkpoint's tensors as the model holds them: trainable `Var`s by HF name (checkpoint
//! order), and tensors carried through unchanged for saving (e.g. `pooler.*`). Blocks take their
//! parameters from it by name; what is left becomes the encoder's `EncoderBase`. Linear weights
//! an inference load keeps transposed (`model::weights::store_linears_transposed`) are handed
//! out only through [`ParamStore::linear_weight`]. Depends on candle, `model::encoder`.

use crate::model::encoder::{DropoutRates, EncoderBase};
use candle_core::{DType, Device, Result, Tensor, Var};
use std::collections::HashSet;

pub struct ParamStore {
    pub vars: Vec<(String, Var)>,
    pub extra: Vec<(String, Tensor)>,
    pub dtype: DType,
    pub device: Device,
    /// Linear weights held transposed (`[in, out]` contiguous) by name.
    pub transposed: HashSet<String>,
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
            transposed: HashSet::new(),
        })
    }

    /// [`Self::new`], with the linear weights `transposed` names held as `[in, out]`.
    pub fn with_transposed(mut self, transposed: Vec<String>) -> Self {
        self.transposed = transposed.into_iter().collect();
        self
    }

    /// The parameter `name` (an internal error if the weight spec did not list it, or if it is
    /// a linear weight held transposed: those come from [`Self::linear_weight`]).
    pub fn var(&self, name: &str) -> Result<Var> {
        if self.transposed.contains(name) {
            candle_core::bail!("internal: {name} is held transposed; load it as a Linear");
        }
        self.find(name)
    }

    /// A linear layer's weight and whether it is held transposed (`[in, out]`).
    pub fn linear_weight(&self, name: &str) -> Result<(Var, bool)> {
        Ok((self.find(name)?, self.transposed.contains(name)))
    }

    fn find(&self, name: &str) -> Result<Var> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("internal: parameter {name} not loaded"))
            })
    }

    /// The encoder state of `family` from these parameters (`hidden` size, `max_tokens` per
    /// sequence, `dropout` rates).
    pub fn into_base(
        self,
        family: &'static str,
        (hidden, max_tokens): (usize, usize),
        dropout: DropoutRates,
    ) -> EncoderBase {
        EncoderBase {
            family,
            hidden,
            max_tokens,
            vars: self.vars,
            extra: self.extra,
            dropout,
            dtype: self.dtype,
            device: self.device,
            lazy: Vec::new(),
            transposed: self.transposed,
        }
    }
}
