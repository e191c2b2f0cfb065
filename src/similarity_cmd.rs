//! The `similarity` job: the cosine of two texts, or the top-k nearest texts of a corpus for a
//! query. The corpus is read as a stream, a chunk at a time (`data::texts::corpus_chunk`), keeping only the
//! best k hits so far (memory: a chunk, not the corpus); each chunk's embeddings are cached next
//! to the corpus (`<corpus>.embtune-cache/<key>.npy`, `embed_cache`: the key hashes the model's
//! weights, settings and the chunk's texts).

use crate::encode::{encode, Embeddings, EncodeOptions};
use crate::model::prompts::{PromptChoice, Side};
use crate::model::{ModelSpec, SentenceEncoder};
use crate::similarity::cosine;
use anyhow::{bail, Result};
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
    /// The texts' (pair mode) or the query's prompt; neither: the model's default prompt, or
    /// for a query its `query` prompt (sentence-transformers' encode_query).
    #[serde(default)]
    pub prompt: PromptChoice,
    /// The corpus's prompt; neither: the model's `document`/`passage`/`corpus` prompt, else its
    /// default (encode_document).
    #[serde(default)]
    pub document_prompt: PromptChoice,
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

fn corpus_embeddings(
    model: &SentenceEncoder,
    corpus: &Path,
    texts: &[String],
    opts: &EncodeOptions,
) -> Result<Embeddings> {
    let dir = cache_dir(corpus);
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    crate::embed_cache::embeddings(model, &refs, opts, Some(&dir), "similarity")
}

/// `<corpus>.embtune-cache/` next to the corpus.
fn cache_dir(corpus: &Path) -> PathBuf {
    crate::fsutil::with_name_suffix(corpus, ".embtune-cache")
}

pub fn run(cfg: &SimilarityConfig) -> Result<Answer> {
    let mut opts = cfg.encode.clone();
    opts.normalize = true;
    match (&cfg.query, &cfg.corpus, cfg.texts.as_slice()) {
        (None, None, [a, b]) => {
            let model = SentenceEncoder::load_for_inference(&cfg.model)?;
            opts.prompt = Some(
                model
                    .prompts
                    .choose(&cfg.prompt, Side::Plain, "--prompt-name")?,
            );
            let e = encode(&model, &[a.as_str(), b.as_str()], &opts)?;
            Ok(Answer::Pair(cosine(e.row(0), e.row(1))))
        }
        (Some(q), Some(corpus), []) => {
            let mut stream = crate::data::CorpusTexts::open(corpus)?;
            let first = stream.next_chunk(crate::data::texts::corpus_chunk())?;
            // The cache is an optimisation: say before the work if it cannot be kept.
            if let Err(e) = crate::fsutil::check_writable_dir(&cache_dir(corpus)) {
                tracing::warn!("warning: {e:#}: the corpus embeddings will not be cached");
            }
            let model = SentenceEncoder::load_for_inference(&cfg.model)?;
            let q_opts = EncodeOptions {
                prompt: Some(
                    model
                        .prompts
                        .choose(&cfg.prompt, Side::Query, "--prompt-name")?,
                ),
                ..opts.clone()
            };
            let d_opts = EncodeOptions {
                prompt: Some(model.prompts.choose(
                    &cfg.document_prompt,
                    Side::Document,
                    "--document-prompt-name",
                )?),
                ..opts.clone()
            };
            let qe = encode(&model, &[q.as_str()], &q_opts)?;
            let k = cfg.top_k.max(1);
            // The best k so far: (score, corpus index, text), best first, ties by index.
            let mut best: Vec<(f64, usize, String)> = Vec::new();
            let (mut chunk, mut offset) = (first, 0);
            while !chunk.is_empty() {
                let ce = corpus_embeddings(&model, corpus, &chunk, &d_opts)?;
                let mut scored: Vec<(f64, usize)> = (0..chunk.len())
                    .map(|i| (cosine(qe.row(0), ce.row(i)), i))
                    .collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                scored.truncate(k);
                let mut texts: Vec<Option<String>> = chunk.into_iter().map(Some).collect();
                best.extend(
                    scored
                        .into_iter()
                        .map(|(sc, i)| (sc, offset + i, texts[i].take().unwrap_or_default())),
                );
                best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                best.truncate(k);
                offset += texts.len();
                chunk = stream.next_chunk(crate::data::texts::corpus_chunk())?;
            }
            Ok(Answer::Hits(
                best.into_iter()
                    .enumerate()
                    .map(|(r, (score, index, text))| Hit {
                        rank: r + 1,
                        score,
                        index,
                        text,
                    })
                    .collect(),
            ))
        }
        _ => bail!("give two texts (similarity -m M \"a\" \"b\"), or --query and --corpus"),
    }
}
