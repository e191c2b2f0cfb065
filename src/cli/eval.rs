//! `embtune eval`: flags → [`EvalConfig`] → [`crate::eval::job::run`] → table or JSON.

use super::{InputArgs, ModelArgs, PromptArgs};
use crate::model::prompts::PromptChoice;

use crate::encode::EncodeOptions;
use crate::eval::job::EvalConfig;
use crate::eval::EvalTask;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Evaluation data: CSV/TSV (header row), JSONL, or an STS-B file with --format stsb; for
    /// --task retrieval a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv; --split,
    /// default test).
    #[arg(long, short = 'd', required_unless_present_all = ["queries", "corpus", "qrels"])]
    pub data: Option<PathBuf>,
    /// --task retrieval without a BEIR folder: the queries (JSONL with _id, text) …
    #[arg(long, requires_all = ["corpus", "qrels"], conflicts_with = "data")]
    pub queries: Option<PathBuf>,
    /// … the corpus (JSONL with _id, title, text; a document is title + " " + text) …
    #[arg(long, requires_all = ["queries", "qrels"])]
    pub corpus: Option<PathBuf>,
    /// … and the judgments (TSV: query-id, corpus-id, score; score > 0 is relevant).
    #[arg(long, requires_all = ["queries", "corpus"])]
    pub qrels: Option<PathBuf>,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Keep only the first N dimensions of each embedding (models trained with Matryoshka
    /// losses keep most of their quality), as sentence-transformers' truncate_dim.
    #[arg(long)]
    pub truncate_dim: Option<usize>,
    /// --task retrieval: prepended to every query [default: the model's "query" prompt, else
    /// its default prompt], as sentence-transformers' encode_query.
    #[arg(long)]
    pub query_prompt: Option<String>,
    /// --task retrieval: one of the model's prompts by name for the queries.
    #[arg(long, conflicts_with = "query_prompt")]
    pub query_prompt_name: Option<String>,
    /// --task retrieval: prepended to every document [default: the model's "document",
    /// "passage" or "corpus" prompt, else its default prompt], as encode_document.
    #[arg(long)]
    pub document_prompt: Option<String>,
    /// --task retrieval: one of the model's prompts by name for the documents.
    #[arg(long, conflicts_with = "document_prompt")]
    pub document_prompt_name: Option<String>,
    #[command(flatten)]
    pub reader: InputArgs,
    /// sts: score pairs; triplet: anchor/positive/negative; binary: 0/1-labeled pairs;
    /// retrieval: queries against a corpus (nDCG@10, MRR@10, MAP@100, recall/precision/accuracy@k).
    #[arg(long, value_enum, default_value = "sts")]
    pub task: EvalTask,
    /// Columns, comma-separated: text columns then the score/label column
    /// [default: sts sentence1,sentence2,score; triplet anchor,positive,negative; binary sentence1,sentence2,label].
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Score/label column (replaces the last of --columns) [default: score for sts, label for
    /// binary].
    #[arg(long)]
    pub label_column: Option<String>,
    /// Divide gold scores by this [default: 5 for --format stsb, else 1].
    #[arg(long)]
    pub score_scale: Option<f64>,
    /// Evaluate the embeddings at this precision, as sentence-transformers'
    /// EmbeddingSimilarityEvaluator(precision=…): L2-normalised, quantized (float16; int8/uint8
    /// with ranges over all the evaluated texts; binary/ubinary), and scored on the values cast
    /// to float (binary unpacked to 0/1 bits) [default: none: the model's raw float32 output].
    #[arg(long, value_enum)]
    pub precision: Option<crate::quantize::Precision>,
    /// Texts per forward pass.
    #[arg(long, short = 'b', default_value_t = 32)]
    pub batch_size: usize,
    /// At most this many tokens per forward pass as well as --batch-size texts (packed
    /// batches count the texts' tokens, padded ones texts × the longest); long texts then go in
    /// smaller batches; 0: no budget [default: 2048 on the CPU with packed batches (measured:
    /// less memory, as fast), none on GPUs or with --no-packing].
    #[arg(long)]
    pub max_tokens_per_batch: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write report.html and a plot into this directory: predicted cosine vs gold score
    /// (sts, scatter.svg), or the cosine of positives vs negatives (binary/triplet, histogram.svg).
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Hide the progress bar and the notes and summaries (warnings and errors only).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl EvalArgs {
    pub fn into_config(self) -> Result<EvalConfig> {
        let columns = match (self.columns, self.label_column) {
            (c, None) => c,
            (c, Some(label)) => {
                let mut cols: Vec<String> = c.unwrap_or_else(|| {
                    self.task
                        .default_columns()
                        .iter()
                        .map(|s| s.to_string())
                        .collect()
                });
                if self.task == EvalTask::Triplet {
                    anyhow::bail!("--label-column: a triplet evaluation has no label column");
                }
                if cols.len() == 3 {
                    cols.pop();
                }
                cols.push(label);
                Some(cols)
            }
        };
        let retrieval = match (&self.queries, &self.corpus, &self.qrels) {
            (Some(q), Some(c), Some(r)) => Some(crate::eval::retrieval::RetrievalSource::Files {
                queries: q.clone(),
                corpus: c.clone(),
                qrels: r.clone(),
            }),
            _ => None,
        };
        Ok(EvalConfig {
            model: self.model.into_spec(),
            data: self
                .data
                .or_else(|| self.queries.clone())
                .unwrap_or_default(),
            retrieval,
            prompt: self.prompt.choice(),
            query_prompt: PromptChoice {
                text: self.query_prompt,
                name: self.query_prompt_name,
            },
            document_prompt: PromptChoice {
                text: self.document_prompt,
                name: self.document_prompt_name,
            },
            format: self.reader.format,
            task: self.task,
            columns,
            score_scale: self.score_scale,
            read: self.reader.read_options(),
            encode: EncodeOptions {
                batch_size: self.batch_size,
                max_tokens: self.max_tokens_per_batch,
                normalize: false,
                progress: !self.quiet,
                prompt: None,
                truncate_dim: self.truncate_dim,
                shard: Default::default(),
            },
            precision: self.precision,
        })
    }
}

pub fn run(args: EvalArgs) -> Result<()> {
    let json = args.json;
    let report = args.report.clone();
    let cfg = args.into_config()?;
    if let Some(dir) = &report {
        crate::fsutil::check_writable_dir(dir)?;
    }
    let m = crate::eval::job::run(&cfg)?;
    if let Some(dir) = report {
        let title = format!(
            "embtune eval: {} on {}",
            cfg.model.model,
            cfg.data.display()
        );
        crate::report::write_eval_report(&dir, &title, &m)?;
    }
    if json {
        println!("{}", m.to_json());
    } else {
        print!("{}", m.to_table());
    }
    Ok(())
}
