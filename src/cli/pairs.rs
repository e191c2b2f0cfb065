//! `embtune pairs`: flags → [`PairsConfig`] → [`crate::pairs::run`]; or `--check FILE`.

use super::{InputArgs, LoadArgs};
use crate::data::{read_table, DataFormat, ReadOptions};
use crate::encode::EncodeOptions;
use crate::pairs::output::NegativeFormat;
use crate::pairs::{ColumnMap, NegativeOptions, PairsConfig, Source};
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PairsArgs {
    /// Input dataset (CSV/TSV with a header, JSONL — FlagEmbedding's query/pos/neg rows too —,
    /// STS-B with --format stsb), or a BEIR folder with --from qrels.
    #[arg(long, short = 'd', required_unless_present = "check")]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub reader: InputArgs,
    /// What the rows are: scores, labeled, classes, nli, pairs, or qrels (a BEIR folder's
    /// judged query–document pairs; --split, default train).
    #[arg(long, value_enum, required_unless_present = "check")]
    pub from: Option<Source>,
    /// Columns: role=column pairs (anchor=question,positive=answer), or the columns in the roles'
    /// order (question,answer) — the syntax `train --columns` takes too [default: the role
    /// names: sentence1, sentence2, score, label, text, premise, hypothesis, anchor, positive].
    #[arg(long, value_delimiter = ',')]
    pub columns: Vec<String>,
    /// scores: label 1 when score ≥ this.
    #[arg(long)]
    pub positive_min: Option<f64>,
    /// scores: label 0 when score ≤ this (rows in between are dropped and counted).
    #[arg(long)]
    pub negative_max: Option<f64>,
    /// scores/labeled: keep only positives, as (anchor, positive) — for InfoNCE/MNRL.
    #[arg(long)]
    pub positives_only: bool,
    /// classes: triplets per anchor text.
    #[arg(long, default_value_t = 1)]
    pub per_anchor: usize,
    /// pairs: mine hard negatives with --model (default: random negatives); qrels: add mined
    /// negatives from the folder's corpus (default: pairs only).
    #[arg(long)]
    pub mine: bool,
    /// pairs: negatives per anchor.
    #[arg(long, default_value_t = 1)]
    pub num_negatives: usize,
    /// pairs: extra candidate texts (text file, a file with a "text" column, or a BEIR
    /// corpus.jsonl: title + " " + text) added to the positives; qrels: instead of the folder's
    /// corpus.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Mining: skip this many of the most similar surviving candidates.
    #[arg(long, default_value_t = 0)]
    pub range_min: usize,
    /// Mining: consider at most this many surviving candidates [default: range-min + num-negatives (+ 10× with a margin or max-score) + positives].
    #[arg(long)]
    pub range_max: Option<usize>,
    /// Mining: drop candidates with cosine above this.
    #[arg(long)]
    pub max_score: Option<f64>,
    /// Mining: drop candidates with cosine below this.
    #[arg(long)]
    pub min_score: Option<f64>,
    /// Mining: drop candidates within this absolute margin of the positive's score
    /// (false-negative guard; sentence-transformers' `margin` of mine_hard_negatives).
    #[arg(long)]
    pub mining_margin: Option<f64>,
    /// Mining: drop candidates above positive − |positive|·this.
    #[arg(long)]
    pub relative_margin: Option<f64>,
    /// pairs: output rows as triplets, one n-tuple per row, or labeled pairs.
    #[arg(long, value_enum, default_value = "triplet")]
    pub output_format: NegativeFormat,
    /// Model for mining and for the token-length part of --check: a Hub id or a local directory.
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Mining / --check: texts per forward pass of the model.
    #[arg(long, short = 'b', default_value_t = 64)]
    pub batch_size: usize,
    /// Seed for every random choice.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output file: .jsonl, .csv or .tsv.
    #[arg(long, short = 'o', required_unless_present = "check")]
    pub output: Option<PathBuf>,
    /// Check a dataset instead of building one: rows, duplicates, leakage, labels, token lengths.
    #[arg(long, conflicts_with_all = ["from", "output"])]
    pub check: Option<PathBuf>,
    /// With --check: evaluation data to test for leakage.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// With --check: format of --eval-data [default: from the extension].
    #[arg(long, value_enum)]
    pub eval_format: Option<DataFormat>,
    /// With --check: label/score column [default: label, score or gold_label when present].
    #[arg(long)]
    pub label_column: Option<String>,
    /// With --check: print JSON.
    #[arg(long)]
    pub json: bool,
    /// Hide progress bars and the notes and summaries (warnings and errors only).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl PairsArgs {
    fn model_spec(&self) -> Option<crate::model::ModelSpec> {
        self.model.clone().map(|m| self.load.clone().spec(m))
    }
}

impl PairsArgs {
    pub fn into_config(self) -> Result<PairsConfig> {
        let model = self.model_spec();
        let (Some(data), Some(source), Some(output)) = (self.data, self.from, self.output) else {
            bail!("--data, --from and --output are required (or use --check FILE)");
        };
        if self.mine && self.model.is_none() {
            bail!("--mine needs --model");
        }
        Ok(PairsConfig {
            data,
            format: self.reader.format,
            read: self.reader.read_options(),
            source,
            columns: ColumnMap::parse(&self.columns)?,
            positive_min: self.positive_min,
            negative_max: self.negative_max,
            positives_only: self.positives_only,
            per_anchor: self.per_anchor,
            negatives: NegativeOptions {
                mined: self.mine,
                num_negatives: self.num_negatives,
                range_min: self.range_min,
                range_max: self.range_max,
                max_score: self.max_score,
                min_score: self.min_score,
                margin: self.mining_margin,
                relative_margin: self.relative_margin,
                corpus: self.corpus,
                format: self.output_format,
            },
            model,
            seed: self.seed,
            output,
            encode: EncodeOptions {
                batch_size: self.batch_size,
                max_tokens: None,
                normalize: true,
                progress: !self.quiet,
                prompt: None,
                truncate_dim: None,
                shard: Default::default(),
            },
        })
    }
}

pub fn run(args: PairsArgs) -> Result<()> {
    if let Some(file) = args.check.clone() {
        let read = args.reader.read_options();
        let t = read_table(&file, args.reader.format, &read)?;
        let eval = args
            .eval_data
            .as_ref()
            .map(|p| read_table(p, args.eval_format, &ReadOptions::default()))
            .transpose()?;
        let model = match args.model_spec() {
            Some(spec) => Some(crate::model::SentenceEncoder::load_for_inference(&spec)?),
            None => None,
        };
        let columns = crate::data::ColumnSpec {
            text_columns: None,
            label_column: args.label_column.clone(),
        };
        let r = crate::pairs::check::check(&t, &columns, eval.as_ref(), model.as_ref())?;
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            print!("{}", r.to_text());
            if model.is_none() {
                println!("  (token lengths: pass --model)");
            }
        }
        return Ok(());
    }
    let cfg = args.into_config()?;
    let r = crate::pairs::run(&cfg)?;
    tracing::info!(
        "read {} rows, wrote {} rows to {} ({} duplicates dropped{})",
        r.rows_in,
        r.rows_out,
        cfg.output.display(),
        r.duplicates_dropped,
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; skipped: {}",
                r.skipped
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    Ok(())
}
