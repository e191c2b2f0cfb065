//! `embed`'s encoding pass over a stream of texts: an input shorter than one chunk is encoded in
//! memory; a longer one chunk by chunk (`chunk_rows`, input order), each finished chunk written
//! atomically to `<output>.parts/chunk-NNNNNN.bin`, so memory holds one chunk, and an
//! interrupted run continues with `--resume` from the finished chunks of the same job
//! (`job.json`: input sha256, model, settings, rows range); without it, leftover parts are
//! discarded. The output is then written from the chunks (`embed.rs`), and the parts removed.
//! Depends on `encode`, `data::stream`, `quantize::Ranges`, `signals` and `fsutil`.

use crate::data::TextStream;
use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::SentenceEncoder;
use crate::quantize::Ranges;
use anyhow::{bail, Context, Result};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Directory of finished chunks for `output`.
pub fn parts_dir(output: &Path) -> PathBuf {
    crate::fsutil::with_name_suffix(output, ".parts")
}

fn chunk_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("chunk-{i:06}.bin"))
}

/// A finished chunk: `rows` (u64 LE), `truncated` (u64 LE), then rows × dim f32 LE; read in
/// pieces straight into the floats (no second copy of the chunk).
fn read_chunk(p: &Path, rows: usize, dim: usize) -> Option<Embeddings> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).ok()?;
    if f.metadata().ok()?.len() != (16 + rows * dim * 4) as u64 {
        return None;
    }
    let mut head = [0u8; 16];
    f.read_exact(&mut head).ok()?;
    let r = u64::from_le_bytes(head[..8].try_into().ok()?) as usize;
    let t = u64::from_le_bytes(head[8..].try_into().ok()?) as usize;
    if r != rows || t > rows {
        return None;
    }
    let mut data = Vec::with_capacity(rows * dim);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = rows * dim * 4;
    while left > 0 {
        let n = left.min(buf.len());
        f.read_exact(&mut buf[..n]).ok()?;
        data.extend(
            buf[..n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        left -= n;
    }
    Some(Embeddings {
        data,
        dim,
        truncated: t,
    })
}

/// Writes a chunk atomically, through a buffer (no byte copy of the whole chunk).
fn write_chunk(p: &Path, rows: usize, emb: &Embeddings) -> Result<()> {
    use std::io::Write;
    let mut f = crate::fsutil::AtomicFile::create(p)?;
    let w = f.writer()?;
    let ctx = || format!("writing {}", p.display());
    w.write_all(&(rows as u64).to_le_bytes())
        .with_context(ctx)?;
    w.write_all(&(emb.truncated as u64).to_le_bytes())
        .with_context(ctx)?;
    for x in &emb.data {
        w.write_all(&x.to_le_bytes()).with_context(ctx)?;
    }
    f.commit()
}

/// Where the embeddings of an encoding pass are.
pub enum Chunks {
    Memory(Embeddings),
    Parts { dir: PathBuf, rows: Vec<usize> },
}

/// What the encoding pass produced.
pub struct Encoded {
    pub chunks: Chunks,
    pub rows: usize,
    pub dim: usize,
    pub truncated: usize,
    /// Chunks reused from an interrupted run.
    pub reused: usize,
    /// Per-dimension min/max of all embeddings (int8/uint8 ranges of the embeddings themselves).
    pub ranges: Option<Ranges>,
}

impl Encoded {
    pub fn num_chunks(&self) -> usize {
        match &self.chunks {
            Chunks::Memory(_) => 1,
            Chunks::Parts { rows, .. } => rows.len(),
        }
    }

    /// The embeddings of chunk `i` (read back from its part).
    pub fn chunk(&self, i: usize) -> Result<std::borrow::Cow<'_, Embeddings>> {
        match &self.chunks {
            Chunks::Memory(e) => Ok(std::borrow::Cow::Borrowed(e)),
            Chunks::Parts { dir, rows } => {
                let p = chunk_path(dir, i);
                read_chunk(&p, rows[i], self.dim)
                    .map(std::borrow::Cow::Owned)
                    .with_context(|| {
                        format!(
                            "{}: missing or damaged (removed during the run?)",
                            p.display()
                        )
                    })
            }
        }
    }
}

/// Widens `acc` to the per-dimension min/max of `emb` too.
pub fn merge_ranges(acc: &mut Option<Ranges>, emb: &Embeddings) -> Result<()> {
    if emb.is_empty() {
        return Ok(());
    }
    let r = Ranges::from_embeddings(emb)?;
    match acc {
        None => *acc = Some(r),
        Some(a) => {
            for j in 0..a.min.len() {
                a.min[j] = a.min[j].min(r.min[j]);
                a.max[j] = a.max[j].max(r.max[j]);
            }
        }
    }
    Ok(())
}

/// How a pass runs.
pub struct PassOptions<'a> {
    pub parts: &'a Path,
    pub chunk_rows: usize,
    pub resume: bool,
    /// Track the per-dimension min/max (for int8/uint8 ranges of the embeddings themselves).
    pub ranges: bool,
}

/// Encodes rows `range` of `texts` (the rows before it are skipped unread; `range.end` may be
/// `usize::MAX`: to the end). `key` gives the job's identity for `job.json`; it is asked for
/// only when the input needs more than one chunk.
pub fn encode_stream(
    model: &SentenceEncoder,
    texts: &mut TextStream,
    range: Range<usize>,
    opts: &EncodeOptions,
    pass: &PassOptions,
    key: impl FnOnce() -> Result<serde_json::Value>,
) -> Result<Encoded> {
    let chunk_rows = pass.chunk_rows.max(1);
    let skipped = texts.skip(range.start)?;
    let wanted = range.end.saturating_sub(range.start);
    let dim = opts.out_dim(model);
    let first = texts.next_chunk(chunk_rows.min(wanted))?;
    let parts = pass.parts;
    if skipped < range.start || first.is_empty() {
        bail!(
            "the input has fewer rows ({}) than the slice asks for",
            skipped + first.len()
        );
    }
    let single = first.len() < chunk_rows || first.len() == wanted;
    if single && !pass.resume && !parts.exists() {
        let refs: Vec<&str> = first.iter().map(String::as_str).collect();
        let emb = encode(model, &refs, opts)?;
        let mut ranges = None;
        if pass.ranges {
            merge_ranges(&mut ranges, &emb)?;
        }
        return Ok(Encoded {
            rows: emb.len(),
            dim,
            truncated: emb.truncated,
            reused: 0,
            ranges,
            chunks: Chunks::Memory(emb),
        });
    }
    let key = key()?;
    let job = parts.join("job.json");
    if parts.exists() {
        let same = std::fs::read_to_string(&job)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|k| k == key);
        if pass.resume && !same {
            bail!(
                "--resume: {} holds the parts of a different job (input, model or settings changed); remove it or run without --resume",
                parts.display()
            );
        }
        if !pass.resume {
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
    crate::fsutil::write_atomic(&job, &serde_json::to_vec_pretty(&key)?)?;
    let (mut rows, mut truncated, mut reused) = (Vec::new(), 0, 0);
    let mut ranges = None;
    let mut chunk = first;
    let mut done = 0usize;
    loop {
        let i = rows.len();
        let p = chunk_path(parts, i);
        let reuse = if pass.resume {
            read_chunk(&p, chunk.len(), dim)
        } else {
            None
        };
        let emb = match reuse {
            Some(e) => {
                reused += 1;
                e
            }
            None => {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let emb = encode(model, &refs, opts)?;
                write_chunk(&p, chunk.len(), &emb)?;
                emb
            }
        };
        if pass.ranges {
            merge_ranges(&mut ranges, &emb)?;
        }
        truncated += emb.truncated;
        done += chunk.len();
        rows.push(chunk.len());
        drop(emb);
        let last = chunk.len() < chunk_rows || done >= wanted;
        chunk = if last {
            Vec::new()
        } else {
            texts.next_chunk(chunk_rows.min(wanted - done))?
        };
        if chunk.is_empty() {
            break;
        }
        if let Some(signal) = crate::signals::pending() {
            return Err(crate::signals::Interrupted {
                signal,
                message: format!(
                    "interrupted: chunks 1–{} ({done} rows) are kept in {}; continue with the same command and --resume",
                    rows.len(),
                    parts.display()
                ),
            }
            .into());
        }
    }
    Ok(Encoded {
        chunks: Chunks::Parts {
            dir: parts.to_path_buf(),
            rows,
        },
        rows: done,
        dim,
        truncated,
        reused,
        ranges,
    })
}
