//! The `eval` job: read a dataset, build the task's evaluator, encode, score.

use super::retrieval::{RetrievalEvaluator, RetrievalSource};
use super::{build_with_defaults_at, EvalTask, Metrics};
use crate::data::{read_table, DataFormat, ReadOptions};
use crate::encode::EncodeOptions;
use crate::model::prompts::{PromptChoice, Side};
use crate::model::{ModelSpec, SentenceEncoder};
use crate::quantize::Precision;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything `eval` needs, resolved from the command line in one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    pub model: ModelSpec,
    pub data: PathBuf,
    pub format: Option<DataFormat>,
    pub task: EvalTask,
    /// Text columns then the score/label column; None: the task's defaults.
    pub columns: Option<Vec<String>>,
    /// Scores are divided by this (5 for `--format stsb`).
    pub score_scale: Option<f64>,
    pub read: ReadOptions,
    pub encode: EncodeOptions,
    /// Evaluate embeddings at this precision (normalised, quantized, cast back to floats, as
    /// sentence-transformers' `precision=`); None: the model's raw float32 output.
    #[serde(default)]
    pub precision: Option<Precision>,
    /// `--task retrieval`: where the queries, corpus and qrels are.
    #[serde(default)]
    pub retrieval: Option<RetrievalSource>,
    /// `--prompt` / `--prompt-name` for the texts of sts/triplet/binary (neither: the model's
    /// default prompt).
    #[serde(default)]
    pub prompt: PromptChoice,
    /// Retrieval prompts of the queries / documents (neither: the model's own, see `prompts`).
    #[serde(default)]
    pub query_prompt: PromptChoice,
    #[serde(default)]
    pub document_prompt: PromptChoice,
}

/// Runs the evaluation; data errors come before the model is loaded.
pub fn run(cfg: &EvalConfig) -> Result<Metrics> {
    let evaluator: Box<dyn super::Evaluator> = match cfg.task {
        EvalTask::Retrieval => {
            let src = cfg
                .retrieval
                .clone()
                .unwrap_or_else(|| RetrievalSource::Beir {
                    dir: cfg.data.clone(),
                    split: cfg.read.split.clone().unwrap_or_else(|| "test".into()),
                });
            let mut e = RetrievalEvaluator::new(&src)?;
            e.query_prompt = cfg.query_prompt.clone();
            e.document_prompt = cfg.document_prompt.clone();
            e.cache = Some(crate::embed_cache::default_dir());
            Box::new(e)
        }
        _ => {
            let table = read_table(&cfg.data, cfg.format, &cfg.read)?;
            build_with_defaults_at(
                cfg.task,
                &table,
                cfg.columns.as_deref(),
                cfg.score_scale,
                cfg.precision,
            )?
        }
    };
    let model = SentenceEncoder::load_for_inference(&cfg.model)?;
    crate::logging::model_loaded(&cfg.model, &model);
    let opts = EncodeOptions {
        prompt: Some(
            model
                .prompts
                .choose(&cfg.prompt, Side::Plain, "--prompt-name")?,
        ),
        ..cfg.encode.clone()
    };
    evaluator.evaluate(&model, &opts)
}
