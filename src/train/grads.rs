//! A step's gradient sum ([`GradSum`]): what candle's backward passes returned, added pass by pass,
//! and what the CPU fused ops wrote in place for the step (`ops::cpu::grad_sink`, registered while
//! the sum lives). Depends on candle and `ops::cpu::grad_sink`.

use anyhow::Result;
use candle_core::{Tensor, Var};

/// Gradients summed over several backward passes: those candle's backward returned, and those
/// the CPU fused ops wrote in place (`ops::cpu::grad_sink`, registered for the step's lifetime).
pub(super) struct GradSum {
    store: Vec<Option<Tensor>>,
    vars: Vec<Var>,
    _sink: crate::ops::cpu::grad_sink::StepGuard,
}

impl GradSum {
    /// A step over `vars`: their gradients start at none.
    pub(super) fn new(vars: &[Var]) -> Result<Self> {
        let sink = crate::ops::cpu::grad_sink::begin_step(vars.iter().map(|v| v.as_tensor()))?;
        Ok(Self {
            store: vec![None; vars.len()],
            vars: vars.to_vec(),
            _sink: sink,
        })
    }
    pub(super) fn add(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        for (a, v) in self.store.iter_mut().zip(&self.vars) {
            if let Some(g) = grads.get(v.as_tensor()) {
                *a = Some(match a.take() {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    }
    /// A gradient per parameter (None: untouched by the step).
    pub(super) fn finish(self) -> Result<Vec<Option<Tensor>>> {
        let sink = self
            .vars
            .iter()
            .map(|v| crate::ops::cpu::grad_sink::grad(v.as_tensor()));
        self.store
            .into_iter()
            .zip(sink.collect::<Vec<_>>())
            .map(|(a, b)| {
                Ok(match (a, b) {
                    (Some(a), Some(b)) => Some((a + b)?),
                    (a, b) => a.or(b),
                })
            })
            .collect()
    }
}
