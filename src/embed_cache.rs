//! Embeddings cached on disk (`<dir>/<key>.npy`), for corpora embedded again and again by the
//! same model: `similarity --corpus` (next to the corpus) and retrieval evaluation (in
//! `~/.cache/embtune/embeddings/`). The key hashes the model's weights fingerprint (file,
//! size, modification time — none for a model whose weights were handed out for training, which
//! is then never cached), its pooling / length / precision settings, extra settings of the
//! caller (prompts) and the texts. A cache that cannot be read or written is skipped: it is an
//! optimisation, never an error. Depends on `encode`, `model`, `embed`.

use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::SentenceEncoder;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// 64-bit FNV-1a: a stable cache key (not a security hash).
pub fn fnv64(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The cache file of `texts` embedded by `model` with `extra` settings in `dir`; None when the
/// model's weights cannot be vouched for (see the module header).
pub fn cache_path(
    dir: &Path,
    model: &SentenceEncoder,
    extra: &str,
    texts: &[&str],
) -> Option<PathBuf> {
    let weights = model.weights_fingerprint()?;
    let settings = format!(
        "{weights}|{}|{:?}|{}|{}|{:?}|{extra}",
        model.source,
        model.pooling.modes,
        model.tokenizer.max_seq_length(),
        model.normalize,
        model.compute_dtype()
    );
    let mut key = fnv64(settings.as_bytes(), 0xcbf29ce484222325);
    for t in texts {
        key = fnv64(t.as_bytes(), fnv64(&[0xff], key));
    }
    Some(dir.join(format!("{key:016x}.npy")))
}

/// The default cache folder for evaluation corpora: `$XDG_CACHE_HOME/embtune/embeddings`, else
/// `~/.cache/embtune/embeddings`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("embtune")
        .join("embeddings")
}

fn read_npy(path: &Path) -> Option<Embeddings> {
    let b = std::fs::read(path).ok()?;
    let hlen = u16::from_le_bytes([*b.get(8)?, *b.get(9)?]) as usize;
    let header = std::str::from_utf8(b.get(10..10 + hlen)?).ok()?;
    let shape = header.split("'shape': (").nth(1)?.split(')').next()?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let (n, d) = (*dims.first()?, *dims.get(1)?);
    let data: Vec<f32> = b
        .get(10 + hlen..)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (data.len() == n * d).then_some(Embeddings {
        data,
        dim: d,
        truncated: 0,
    })
}

/// `texts` embedded by `model`, from the cache in `dir` when it has them (and written there
/// otherwise); `dir: None` encodes without a cache.
pub fn embeddings(
    model: &SentenceEncoder,
    texts: &[&str],
    opts: &EncodeOptions,
    dir: Option<&Path>,
    extra: &str,
) -> Result<Embeddings> {
    let prompt = model.prompt_for(opts.prompt.as_deref())?;
    let settings = format!(
        "{extra}|{}|{prompt:?}|{}|{:?}",
        opts.normalize, model.pooling.include_prompt, opts.truncate_dim
    );
    let path = dir.and_then(|d| cache_path(d, model, &settings, texts));
    if let Some(e) = path
        .as_deref()
        .and_then(read_npy)
        .filter(|e| e.len() == texts.len() && e.dim == opts.out_dim(model))
    {
        tracing::debug!("embeddings of {} texts from the cache", texts.len());
        return Ok(e);
    }
    let e = encode(model, texts, opts)?;
    if let Some(p) = &path {
        if let Some(d) = p.parent() {
            if std::fs::create_dir_all(d).is_ok() {
                let _ =
                    crate::embed::write_embeddings(p, crate::embed::OutputFormat::Npy, &e, texts);
            }
        }
    }
    Ok(e)
}
