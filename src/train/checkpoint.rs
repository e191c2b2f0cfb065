//! Checkpoints: `<output>/checkpoints/checkpoint-<step>/` = `model/` (sentence-transformers
//! layout) + `optimizer.safetensors` (AdamW moments) + `trainer_state.json` (step, RNG state,
//! best metric, the run's recipe), written to a temporary directory and renamed into place — a
//! directory named `checkpoint-<step>` is always complete. `--resume` takes a checkpoint directory
//! or an output directory (its newest checkpoint).

use crate::rng::RngState;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Completed optimizer updates.
    pub step: usize,
    pub total_steps: usize,
    pub dropout_rng: RngState,
    /// Best primary metric so far and its step.
    pub best: Option<(f64, usize)>,
    pub recipe: serde_json::Value,
    pub embtune_version: String,
}

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const MODEL_DIR: &str = "model";

pub fn checkpoints_dir(output: &Path) -> PathBuf {
    output.join("checkpoints")
}

pub fn checkpoint_path(output: &Path, step: usize) -> PathBuf {
    checkpoints_dir(output).join(format!("checkpoint-{step}"))
}

/// Complete checkpoints under `output`, oldest first.
pub fn list(output: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(checkpoints_dir(output))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse::<usize>().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// A checkpoint directory itself, or the newest checkpoint of an output directory.
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.join(STATE_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    match list(dir).pop() {
        Some((_, p)) => Ok(p),
        None => bail!(
            "--resume {}: neither a checkpoint directory nor an output directory with checkpoints",
            dir.display()
        ),
    }
}

pub fn read_state(ckpt: &Path) -> Result<TrainerState> {
    let p = ckpt.join(STATE_FILE);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a valid trainer state", p.display()))
}

/// Writes a checkpoint atomically; `write_parts(dir)` fills model/ and optimizer.safetensors.
pub fn write(
    output: &Path,
    state: &TrainerState,
    write_parts: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let path = checkpoint_path(output, state.step);
    crate::fsutil::write_dir_atomic(&path, |tmp| {
        write_parts(tmp)?;
        crate::fsutil::write_file_synced(&tmp.join(STATE_FILE), &serde_json::to_vec_pretty(state)?)
    })
    .with_context(|| format!("writing checkpoint {}", path.display()))?;
    Ok(path)
}

/// Deletes the oldest checkpoints beyond `limit` (never `keep`, e.g. the best one).
pub fn prune(output: &Path, limit: usize, keep: Option<usize>) -> Result<()> {
    let all = list(output);
    let removable: Vec<&(usize, PathBuf)> = all.iter().filter(|(s, _)| Some(*s) != keep).collect();
    let excess = all.len().saturating_sub(limit);
    for (_, p) in removable.into_iter().take(excess) {
        std::fs::remove_dir_all(p)
            .with_context(|| format!("removing old checkpoint {}", p.display()))?;
    }
    Ok(())
}
