//! The `similarity` job: the cosine of two texts, or the top-k nearest texts of a corpus for a
//! query. The corpus is embedded once and cached next to it (`<corpus>.embtune-cache/<key>.npy`,
//! the key hashing the model, its pooling/length settings, compute precision and the corpus bytes).

use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::{ModelSpec, SentenceEncoder};
use crate::similarity::cosine;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SimilarityConfig {
    pub model: ModelSpec,
    /// Two texts to compare (pair mode).
    pub texts: Vec<String>,
    /// Query (search mode).
    pub query: Option<String>,
    pub corpus: Option<PathBuf>,
    pub top_k: usize,
    pub encode: EncodeOptions,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hit {
    pub rank: usize,
    pub score: f64,
    pub index: usize,
    pub text: String,
}

pub enum Answer {
    Pair(f64),
    Hits(Vec<Hit>),
}

/// 64-bit FNV-1a: a stable cache key (not a security hash).
fn fnv64(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

pub fn cache_path(corpus: &Path, model: &SentenceEncoder, bytes: &[u8]) -> PathBuf {
    let settings = format!(
        "{}|{:?}|{}|{}|{:?}",
        model.source,
        model.pooling.modes,
        model.tokenizer.max_seq_length(),
        model.normalize,
        model.compute_dtype()
    );
    let key = fnv64(bytes, fnv64(settings.as_bytes(), 0xcbf29ce484222325));
    let name = corpus
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    corpus
        .with_file_name(format!("{name}.embtune-cache"))
        .join(format!("{key:016x}.npy"))
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

fn corpus_embeddings(
    model: &SentenceEncoder,
    corpus: &Path,
    texts: &[String],
    opts: &EncodeOptions,
) -> Result<Embeddings> {
    let bytes = std::fs::read(corpus).with_context(|| format!("reading {}", corpus.display()))?;
    let cache = cache_path(corpus, model, &bytes);
    if let Some(e) = read_npy(&cache).filter(|e| e.len() == texts.len()) {
        return Ok(e);
    }
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let e = encode(model, &refs, opts)?;
    // The cache is an optimisation: failing to write it is not an error.
    if let Some(dir) = cache.parent() {
        if std::fs::create_dir_all(dir).is_ok() {
            let _ =
                crate::embed::write_embeddings(&cache, crate::embed::OutputFormat::Npy, &e, &refs);
        }
    }
    Ok(e)
}

pub fn run(cfg: &SimilarityConfig) -> Result<Answer> {
    let mut opts = cfg.encode.clone();
    opts.normalize = true;
    match (&cfg.query, &cfg.corpus, cfg.texts.as_slice()) {
        (None, None, [a, b]) => {
            let model = SentenceEncoder::load_on_spec_device(&cfg.model)?;
            let e = encode(&model, &[a.as_str(), b.as_str()], &opts)?;
            Ok(Answer::Pair(cosine(e.row(0), e.row(1))))
        }
        (Some(q), Some(corpus), []) => {
            let texts = crate::data::read_corpus_texts(corpus)?;
            // The cache is an optimisation: say before the work if it cannot be kept.
            let cache_dir = corpus.with_file_name(format!(
                "{}.embtune-cache",
                corpus
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            if let Err(e) = crate::fsutil::check_writable_dir(&cache_dir) {
                tracing::warn!("warning: {e:#}: the corpus embeddings will not be cached");
            }
            let model = SentenceEncoder::load_on_spec_device(&cfg.model)?;
            let ce = corpus_embeddings(&model, corpus, &texts, &opts)?;
            let qe = encode(&model, &[q.as_str()], &opts)?;
            let mut scored: Vec<(f64, usize)> = (0..texts.len())
                .map(|i| (cosine(qe.row(0), ce.row(i)), i))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            Ok(Answer::Hits(
                scored
                    .into_iter()
                    .take(cfg.top_k.max(1))
                    .enumerate()
                    .map(|(r, (score, index))| Hit {
                        rank: r + 1,
                        score,
                        index,
                        text: texts[index].clone(),
                    })
                    .collect(),
            ))
        }
        _ => bail!("give two texts (similarity -m M \"a\" \"b\"), or --query and --corpus"),
    }
}
