//! Checkpoints: `<output>/checkpoints/checkpoint-<step>/` = `model/` (sentence-transformers
//! layout) + `optimizer.safetensors` (AdamW moments) + `trainer_state.json` (step, RNG state,
//! best metric, the run's recipe) + `manifest.json` (size and sha256 of every other file),
//! written to a temporary directory, fsynced and renamed into place — a directory named
//! `checkpoint-<step>` is always complete. `--resume` takes a checkpoint directory or an output
//! directory (its newest checkpoint that verifies) and checks the manifest before trusting it.

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
    /// Wall time of the run up to this checkpoint, every segment (resumed or not) summed.
    #[serde(default)]
    pub wall_seconds: f64,
}

pub const STATE_FILE: &str = "trainer_state.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The loss's own parameters (SoftmaxLoss's classifier, a distillation projection), when it
/// has any: not part of the model.
pub const LOSS_PARAMS_FILE: &str = "loss_params.safetensors";
/// LoRA's adapter matrices (a LoRA run's checkpoint has no model/: the base is reloaded).
pub const LORA_FILE: &str = "lora.safetensors";
pub const MODEL_DIR: &str = "model";
/// The folder of an output directory that holds its checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const MANIFEST_FILE: &str = "manifest.json";

/// One file of a checkpoint: path relative to the checkpoint, size, sha256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// Every regular file under `dir` (relative paths, sorted), except the manifest itself.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for e in std::fs::read_dir(&abs).with_context(|| format!("listing {}", abs.display()))? {
            let e = e.with_context(|| format!("listing {}", abs.display()))?;
            let r = rel.join(e.file_name());
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(r);
            } else if r != Path::new(MANIFEST_FILE) {
                out.push(r.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Hashes every file of a checkpoint directory.
pub fn manifest(dir: &Path) -> Result<Vec<ManifestEntry>> {
    files_under(dir)?
        .into_iter()
        .map(|path| {
            let (size, sha256) = crate::fsutil::sha256_file(&dir.join(&path))?;
            Ok(ManifestEntry { path, size, sha256 })
        })
        .collect()
}

/// Checks a checkpoint against its manifest: every listed file present with its size and
/// sha256, and no file missing from the list. An error names the first difference.
pub fn verify(ckpt: &Path) -> Result<()> {
    let mp = ckpt.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&mp)
        .with_context(|| format!("{}: no manifest: not a complete checkpoint", ckpt.display()))?;
    let want: Vec<ManifestEntry> = serde_json::from_str(&text)
        .with_context(|| format!("{}: unreadable manifest", mp.display()))?;
    let have = files_under(ckpt)?;
    let listed: Vec<&str> = want.iter().map(|e| e.path.as_str()).collect();
    if let Some(extra) = have.iter().find(|p| !listed.contains(&p.as_str())) {
        bail!("{}: {extra} is not in the manifest", ckpt.display());
    }
    for e in &want {
        let p = ckpt.join(&e.path);
        if !p.is_file() {
            bail!("{}: {} is missing", ckpt.display(), e.path);
        }
        let (size, sha) = crate::fsutil::sha256_file(&p)?;
        if size != e.size {
            bail!(
                "{}: {} has {size} bytes, the manifest says {}",
                ckpt.display(),
                e.path,
                e.size
            );
        }
        if sha != e.sha256 {
            bail!(
                "{}: {} does not match its sha256 in the manifest (damaged)",
                ckpt.display(),
                e.path
            );
        }
    }
    Ok(())
}

pub fn checkpoints_dir(output: &Path) -> PathBuf {
    output.join(CHECKPOINTS_DIR)
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
            // The manifest is written last: without it the directory is not a checkpoint.
            e.path()
                .join(MANIFEST_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// A checkpoint directory itself (verified against its manifest), or the newest checkpoint of an
/// output directory that verifies (damaged newer ones are reported on stderr and skipped).
pub fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.join(STATE_FILE).is_file() {
        verify(dir).with_context(|| format!("--resume {}", dir.display()))?;
        return Ok(dir.to_path_buf());
    }
    let all = list(dir);
    if all.is_empty() {
        bail!(
            "--resume {}: neither a checkpoint directory nor an output directory with checkpoints",
            dir.display()
        );
    }
    for (_, p) in all.into_iter().rev() {
        match verify(&p) {
            Ok(()) => return Ok(p),
            Err(e) => tracing::warn!("warning: skipping checkpoint {}: {e:#}", p.display()),
        }
    }
    bail!(
        "--resume {}: no checkpoint there passes its manifest check",
        dir.display()
    )
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
        crate::fsutil::write_file_synced(
            &tmp.join(STATE_FILE),
            &serde_json::to_vec_pretty(state)?,
        )?;
        let m = manifest(tmp)?;
        crate::fsutil::write_file_synced(&tmp.join(MANIFEST_FILE), &serde_json::to_vec_pretty(&m)?)
    })
    .with_context(|| format!("writing checkpoint {}", path.display()))?;
    Ok(path)
}

/// Cleans what killed runs left in `<output>/checkpoints/`: half-written `.checkpoint-N.tmp-PID`
/// and half-deleted `.checkpoint-N.del-PID` directories are removed; a `.checkpoint-N.old-PID` directory (a kill between moving an old
/// checkpoint aside and renaming the new one into place) is renamed back when its checkpoint is
/// missing, else removed. Returns what it did, one line each.
pub fn clean_stale(output: &Path) -> Result<Vec<String>> {
    let dir = checkpoints_dir(output);
    let mut done = Vec::new();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(done);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix('.') else {
            continue;
        };
        let p = e.path();
        if let Some((target, _)) = rest.split_once(".old-") {
            let t = dir.join(target);
            if !t.exists() && p.join(MANIFEST_FILE).is_file() {
                std::fs::rename(&p, &t)
                    .with_context(|| format!("restoring {} from {}", t.display(), p.display()))?;
                done.push(format!("restored {target} from an interrupted replacement"));
                continue;
            }
        } else if !rest.contains(".tmp-") && !rest.contains(".del-") {
            continue;
        }
        std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
        done.push(format!("removed the unfinished {name}"));
    }
    Ok(done)
}

/// Deletes the oldest checkpoints beyond `limit` (never `keep`, e.g. the best one).
pub fn prune(output: &Path, limit: usize, keep: Option<usize>) -> Result<()> {
    let all = list(output);
    let removable: Vec<&(usize, PathBuf)> = all.iter().filter(|(s, _)| Some(*s) != keep).collect();
    let excess = all.len().saturating_sub(limit);
    for (step, p) in removable.into_iter().take(excess) {
        // Renamed out of sight first (atomic), then deleted: a kill during the deletion leaves
        // a hidden directory for `clean_stale`, never a half-deleted `checkpoint-N`.
        let doomed =
            checkpoints_dir(output).join(format!(".checkpoint-{step}.del-{}", std::process::id()));
        std::fs::rename(p, &doomed)
            .with_context(|| format!("removing old checkpoint {}", p.display()))?;
        std::fs::remove_dir_all(&doomed)
            .with_context(|| format!("removing old checkpoint {}", doomed.display()))?;
    }
    Ok(())
}
