//! Resumable `embed` for large inputs: texts are encoded in chunks of `chunk_rows` (input order),
//! each finished chunk written atomically to `<output>.parts/chunk-NNNNNN.bin`, and the output
//! assembled from the chunks at the end (then the parts are removed). `--resume` keeps the
//! finished chunks of an interrupted run of the same job (`job.json`: input sha256, model and
//! settings) and encodes only the rest; without it, leftover parts are discarded.

use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::SentenceEncoder;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Directory of finished chunks for `output`.
pub fn parts_dir(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{name}.parts"))
}

/// What makes two runs the same job (JSON, compared as a whole on resume).
pub fn job_key(
    input_bytes: &[u8],
    model_settings: &serde_json::Value,
    rows: usize,
    chunk_rows: usize,
    dim: usize,
) -> serde_json::Value {
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(input_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    serde_json::json!({
        "input_sha256": sha,
        "model": model_settings,
        "rows": rows,
        "chunk_rows": chunk_rows,
        "dim": dim,
    })
}

fn chunk_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("chunk-{i:06}.bin"))
}

/// A finished chunk: `rows` (u64 LE), `truncated` (u64 LE), then rows × dim f32 LE.
fn read_chunk(p: &Path, rows: usize, dim: usize) -> Option<(Vec<f32>, usize)> {
    let b = std::fs::read(p).ok()?;
    if b.len() != 16 + rows * dim * 4 {
        return None;
    }
    let r = u64::from_le_bytes(b[..8].try_into().ok()?) as usize;
    let t = u64::from_le_bytes(b[8..16].try_into().ok()?) as usize;
    if r != rows || t > rows {
        return None;
    }
    let data = b[16..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some((data, t))
}

fn write_chunk(p: &Path, rows: usize, emb: &Embeddings) -> Result<()> {
    let mut b = Vec::with_capacity(16 + emb.data.len() * 4);
    b.extend_from_slice(&(rows as u64).to_le_bytes());
    b.extend_from_slice(&(emb.truncated as u64).to_le_bytes());
    for x in &emb.data {
        b.extend_from_slice(&x.to_le_bytes());
    }
    crate::fsutil::write_atomic(p, &b)
}

/// Encodes `texts` chunk by chunk into `parts` (reusing finished chunks when `resume`), and
/// returns all embeddings in input order plus how many chunks were reused.
pub fn encode_in_parts(
    model: &SentenceEncoder,
    texts: &[&str],
    opts: &EncodeOptions,
    parts: &Path,
    key: &serde_json::Value,
    chunk_rows: usize,
    resume: bool,
) -> Result<(Embeddings, usize)> {
    let job = parts.join("job.json");
    if parts.exists() {
        let same = std::fs::read_to_string(&job)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|k| &k == key);
        if resume && !same {
            bail!(
                "--resume: {} holds the parts of a different job (input, model or settings changed); remove it or run without --resume",
                parts.display()
            );
        }
        if !resume {
            tracing::info!(
                "note: discarding the parts of an earlier run in {} (use --resume to continue it)",
                parts.display()
            );
            std::fs::remove_dir_all(parts)
                .with_context(|| format!("removing {}", parts.display()))?;
        }
    }
    std::fs::create_dir_all(parts).with_context(|| format!("creating {}", parts.display()))?;
    // Ctrl-C / SIGTERM stop after the chunk being encoded (a second one stops at once).
    crate::signals::install();
    crate::fsutil::write_atomic(&job, &serde_json::to_vec_pretty(key)?)?;
    let dim = model.dim();
    let mut data = Vec::with_capacity(texts.len() * dim);
    let (mut truncated, mut reused) = (0, 0);
    for (i, chunk) in texts.chunks(chunk_rows.max(1)).enumerate() {
        let p = chunk_path(parts, i);
        if resume {
            if let Some((d, t)) = read_chunk(&p, chunk.len(), dim) {
                data.extend(d);
                truncated += t;
                reused += 1;
                continue;
            }
        }
        let emb = encode(model, chunk, opts)?;
        write_chunk(&p, chunk.len(), &emb)?;
        data.extend_from_slice(&emb.data);
        truncated += emb.truncated;
        let done = i + 1;
        if let Some(signal) = crate::signals::pending() {
            let total = texts.len().div_ceil(chunk_rows.max(1));
            if done < total {
                return Err(crate::signals::Interrupted {
                    signal,
                    message: format!(
                        "interrupted: chunks 1–{done} of {total} ({} of {} rows) are kept in {}; continue with the same command and --resume",
                        (done * chunk_rows).min(texts.len()),
                        texts.len(),
                        parts.display()
                    ),
                }
                .into());
            }
        }
    }
    Ok((
        Embeddings {
            data,
            dim,
            truncated,
        },
        reused,
    ))
}
