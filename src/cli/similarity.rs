//! `embtune similarity`: two texts → cosine; `--query` + `--corpus` → the top-k nearest texts.

use super::{ModelArgs, PromptArgs};
use crate::encode::EncodeOptions;
use crate::similarity_cmd::{run as run_similarity, Answer, SimilarityConfig};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct SimilarityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Two texts to compare.
    pub texts: Vec<String>,
    /// Query to search the corpus with.
    #[arg(long, requires = "corpus")]
    pub query: Option<String>,
    /// Corpus: a text file (one per line) or CSV/TSV/JSONL/Parquet with a "text" column (else the
    /// first column; a BEIR corpus.jsonl as title + " " + text). Read and embedded 50,000 texts
    /// at a time (memory: a chunk, not the corpus); each chunk's embeddings are cached in
    /// <corpus>.embtune-cache/.
    #[arg(long, requires = "query")]
    pub corpus: Option<PathBuf>,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Keep only the first N dimensions of each embedding (models trained with Matryoshka
    /// losses keep most of their quality), as sentence-transformers' truncate_dim.
    #[arg(long)]
    pub truncate_dim: Option<usize>,
    /// The corpus's prompt [default: the model's document/passage/corpus prompt, else its
    /// default prompt]; --prompt applies to the query (default: the model's query prompt).
    #[arg(long, requires = "corpus")]
    pub document_prompt: Option<String>,
    /// One of the model's prompts by name for the corpus.
    #[arg(long, requires = "corpus", conflicts_with = "document_prompt")]
    pub document_prompt_name: Option<String>,
    /// Hits to print.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Texts per forward pass.
    #[arg(long, short = 'b', default_value_t = 32)]
    pub batch_size: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Warnings and errors only.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

pub fn run(a: SimilarityArgs) -> Result<()> {
    let cfg = SimilarityConfig {
        model: a.model.into_spec(),
        texts: a.texts,
        query: a.query,
        corpus: a.corpus,
        top_k: a.top_k,
        encode: EncodeOptions {
            batch_size: a.batch_size,
            max_tokens: None,
            normalize: true,
            progress: false,
            prompt: None,
            truncate_dim: a.truncate_dim,
            shard: Default::default(),
        },
        prompt: a.prompt.choice(),
        document_prompt: crate::model::prompts::PromptChoice {
            text: a.document_prompt,
            name: a.document_prompt_name,
        },
    };
    match run_similarity(&cfg)? {
        Answer::Pair(c) if a.json => println!("{}", serde_json::json!({"cosine": c})),
        Answer::Pair(c) => println!("{c:.6}"),
        Answer::Hits(h) if a.json => println!("{}", serde_json::to_string(&h)?),
        Answer::Hits(h) => {
            for hit in h {
                println!("{:>3}  {:.4}  {}", hit.rank, hit.score, hit.text);
            }
        }
    }
    Ok(())
}
