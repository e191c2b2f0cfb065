//! Where a training step's time goes (`embtune bench train --phases`): for each phase of the
//! timed steps, the host time spent issuing its work and the time until the device has finished
//! it (the device is synchronised at every phase boundary, so a phased run is slower than a
//! plain one and its throughput is not the benchmark's). Issue ≈ finished means the host is the
//! bottleneck (launch and bookkeeping overhead); finished ≫ issue means the kernels are.

use anyhow::Result;
use candle_core::Device;
use serde::Serialize;
use std::time::Instant;

/// The phases of one optimizer step, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Padding the token ids and copying them (and the labels) to the device.
    Batch,
    /// The encoder and pooling, every text column.
    Forward,
    Loss,
    Backward,
    /// Summing gradients over text columns' graphs and micro-batches.
    Accumulate,
    /// Gradient clipping and the AdamW update.
    Optimizer,
}

const PHASES: [Phase; 6] = [
    Phase::Batch,
    Phase::Forward,
    Phase::Loss,
    Phase::Backward,
    Phase::Accumulate,
    Phase::Optimizer,
];

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Batch => "batch",
            Phase::Forward => "forward",
            Phase::Loss => "loss",
            Phase::Backward => "backward",
            Phase::Accumulate => "accumulate",
            Phase::Optimizer => "optimizer",
        }
    }
    fn index(self) -> usize {
        PHASES.iter().position(|&p| p == self).unwrap_or(0)
    }
}

/// Collects phase times while `active`; free (no synchronisation) otherwise.
pub struct PhaseTimer {
    device: Device,
    enabled: bool,
    active: bool,
    started: Instant,
    issue: [f64; 6],
    finished: [f64; 6],
    steps: usize,
}

impl PhaseTimer {
    pub fn new(device: &Device, enabled: bool) -> Self {
        Self {
            device: device.clone(),
            enabled,
            active: false,
            started: Instant::now(),
            issue: [0.0; 6],
            finished: [0.0; 6],
            steps: 0,
        }
    }

    /// Starts timing (from the first timed step on); waits for the device's queued work.
    pub fn activate(&mut self) -> Result<()> {
        if self.enabled && !self.active {
            self.device.synchronize()?;
            self.active = true;
        }
        Ok(())
    }

    /// Marks the start of a phase.
    pub fn begin(&mut self) {
        if self.active {
            self.started = Instant::now();
        }
    }

    /// Ends `phase`: host time so far, then the time until the device is done with it.
    pub fn end(&mut self, phase: Phase) -> Result<()> {
        if self.active {
            let i = phase.index();
            self.issue[i] += self.started.elapsed().as_secs_f64();
            self.device.synchronize()?;
            self.finished[i] += self.started.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Counts one timed optimizer step.
    pub fn step_done(&mut self) {
        if self.active {
            self.steps += 1;
        }
    }

    /// Mean milliseconds per step of each phase (None when nothing was timed).
    pub fn report(&self) -> Option<PhaseTimes> {
        if !self.active || self.steps == 0 {
            return None;
        }
        let n = self.steps as f64;
        let phases = PHASES
            .iter()
            .map(|&p| PhaseTime {
                phase: p.name(),
                issue_ms: self.issue[p.index()] * 1e3 / n,
                finished_ms: self.finished[p.index()] * 1e3 / n,
            })
            .collect();
        Some(PhaseTimes {
            steps: self.steps,
            phases,
        })
    }
}

/// Mean per-step times of each phase over `steps` timed steps.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTimes {
    pub steps: usize,
    pub phases: Vec<PhaseTime>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: &'static str,
    /// Host time until the phase's work was issued.
    pub issue_ms: f64,
    /// Time until the device had finished it.
    pub finished_ms: f64,
}

impl PhaseTimes {
    /// Sum of the phases' finished times: one step with a wait at every phase boundary.
    pub fn step_ms(&self) -> f64 {
        self.phases.iter().map(|p| p.finished_ms).sum()
    }
}
