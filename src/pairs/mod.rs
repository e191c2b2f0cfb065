//! Building training data from datasets (`embtune pairs`): labeled pairs from scores or labels,
//! triplets from class labels or NLI rows, random or model-mined hard negatives, and the dataset
//! check. Every builder is seeded; duplicate output rows are dropped and counted.
//! Depends on data (readers), model + encode (mining, token lengths).

pub mod build;
pub mod check;
pub mod mine;
pub mod output;
pub mod topk;

use crate::data::{read_table, DataFormat, ReadOptions, Table};
use anyhow::{bail, Result};
use output::Rows;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What the input rows are (`--from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// (sentence1, sentence2, score): labeled pairs by thresholds, or scores normalised to 0..1.
    Scores,
    /// (sentence1, sentence2, label 0/1): kept, or positives only.
    Labeled,
    /// (text, label) with class labels: (anchor, positive, negative) triplets.
    Classes,
    /// (premise, hypothesis, label entailment/neutral/contradiction): triplets grouped by premise.
    Nli,
    /// (anchor, positive) pairs, e.g. (query, document): add random or mined negatives.
    Pairs,
    /// A BEIR folder's judgments (`--split`, default train): a (query, relevant document) row per
    /// judgment with score > 0, the document as title + " " + text; `--mine` adds negatives mined
    /// from the folder's corpus (or `--corpus`).
    Qrels,
}

impl Source {
    /// The roles this source reads, in order.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            Source::Scores => &["sentence1", "sentence2", "score"],
            Source::Labeled => &["sentence1", "sentence2", "label"],
            Source::Classes => &["text", "label"],
            Source::Nli => &["premise", "hypothesis", "label"],
            Source::Pairs | Source::Qrels => &["anchor", "positive"],
        }
    }
}

/// `--columns`: which file column plays each role (default: the role's own name), given as
/// role=column pairs or as columns in the builder's role order ([`ColumnsArg`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ColumnMap(pub BTreeMap<String, String>, pub Vec<String>);

impl ColumnMap {
    /// Parses `a=b,c=d` or `b,d`.
    pub fn parse(items: &[String]) -> Result<Self> {
        Ok(match crate::data::ColumnsArg::parse(items)? {
            None => Self::default(),
            Some(crate::data::ColumnsArg::Roles(r)) => Self(r.into_iter().collect(), Vec::new()),
            Some(crate::data::ColumnsArg::Positional(p)) => Self(BTreeMap::new(), p),
        })
    }

    pub fn column<'a>(&'a self, role: &'a str) -> &'a str {
        self.0.get(role).map(|s| s.as_str()).unwrap_or(role)
    }

    /// Column indices of `roles` in `t`, with a clear error for unknown roles or missing columns.
    pub fn resolve(&self, t: &Table, roles: &[&str]) -> Result<Vec<usize>> {
        if !self.1.is_empty() {
            if self.1.len() > roles.len() {
                bail!(
                    "--columns: {} columns for the {} roles this builder reads ({})",
                    self.1.len(),
                    roles.len(),
                    roles.join(", ")
                );
            }
            return roles
                .iter()
                .enumerate()
                .map(|(i, r)| t.column(self.1.get(i).map(|s| s.as_str()).unwrap_or(r)))
                .collect();
        }
        for k in self.0.keys() {
            if !roles.contains(&k.as_str()) {
                bail!(
                    "--columns: unknown role {k:?}; this builder reads {}",
                    roles.join(", ")
                );
            }
        }
        roles.iter().map(|r| t.column(self.column(r))).collect()
    }
}

/// Hard-negative / random-negative options for `--from pairs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NegativeOptions {
    pub mined: bool,
    pub num_negatives: usize,
    /// Skip this many surviving candidates (most similar first).
    pub range_min: usize,
    /// Consider at most this many candidates (None: sentence-transformers' default).
    pub range_max: Option<usize>,
    pub max_score: Option<f64>,
    pub min_score: Option<f64>,
    /// Drop candidates with `score + margin > positive score`.
    pub margin: Option<f64>,
    /// Drop candidates with `score > positive − |positive|·relative_margin`.
    pub relative_margin: Option<f64>,
    pub corpus: Option<PathBuf>,
    pub format: output::NegativeFormat,
}

impl Default for NegativeOptions {
    fn default() -> Self {
        Self {
            mined: false,
            num_negatives: 1,
            range_min: 0,
            range_max: None,
            max_score: None,
            min_score: None,
            margin: None,
            relative_margin: None,
            corpus: None,
            format: output::NegativeFormat::Triplet,
        }
    }
}

/// Everything `embtune pairs` needs (except `--check`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairsConfig {
    pub data: PathBuf,
    pub format: Option<DataFormat>,
    pub read: ReadOptions,
    pub source: Source,
    pub columns: ColumnMap,
    pub positive_min: Option<f64>,
    pub negative_max: Option<f64>,
    pub positives_only: bool,
    pub per_anchor: usize,
    pub negatives: NegativeOptions,
    pub model: Option<crate::model::ModelSpec>,
    pub seed: u64,
    pub output: PathBuf,
    pub encode: crate::encode::EncodeOptions,
}

/// Counts reported after a build.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PairsReport {
    pub rows_in: usize,
    pub rows_out: usize,
    pub duplicates_dropped: usize,
    /// Rows dropped by the builder, by reason.
    pub skipped: BTreeMap<String, usize>,
}

/// `--from qrels`: the judged (query, document) pairs of a BEIR folder as a table of anchor and
/// positive columns, and the corpus file (candidates for mining).
fn qrels_table(cfg: &PairsConfig) -> Result<(Table, PathBuf)> {
    let split = cfg.read.split.clone().unwrap_or_else(|| "train".into());
    let src = crate::eval::retrieval::RetrievalSource::Beir {
        dir: cfg.data.clone(),
        split: split.clone(),
    };
    let d = src.load()?;
    for n in &d.notes {
        tracing::info!("note: {n}");
    }
    let doc: std::collections::HashMap<&str, &str> = d
        .corpus
        .iter()
        .map(|(i, t)| (i.as_str(), t.as_str()))
        .collect();
    let mut rows = Vec::new();
    for (qid, q) in &d.queries {
        let mut judged: Vec<(&String, &f64)> =
            d.qrels[qid].iter().filter(|(_, s)| **s > 0.0).collect();
        judged.sort_by(|a, b| a.0.cmp(b.0));
        for (id, _) in judged {
            rows.push(crate::data::Row {
                line: rows.len() + 1,
                cells: vec![q.clone().into(), doc[id.as_str()].to_string().into()],
            });
        }
    }
    let [_, corpus, qrels] = src.files();
    Ok((
        Table {
            path: qrels,
            format: DataFormat::Tsv,
            columns: vec!["anchor".into(), "positive".into()],
            rows,
        },
        corpus,
    ))
}

/// Builds the rows (no writing): the library entry point tests call.
pub fn build_rows(cfg: &PairsConfig) -> Result<(Rows, PairsReport)> {
    if cfg.source == Source::Qrels {
        let (t, corpus) = qrels_table(cfg)?;
        let mut report = PairsReport {
            rows_in: t.len(),
            ..Default::default()
        };
        let mut rows = if cfg.negatives.mined {
            // Candidates: the folder's corpus (or --corpus when given), as
            // sentence-transformers' mine_hard_negatives(corpus=…).
            let mut c = cfg.clone();
            c.negatives.corpus.get_or_insert(corpus);
            mine::add_negatives(&t, &[0, 1], &c, &mut report)?
        } else {
            Rows {
                columns: t.columns.clone(),
                rows: t.rows.iter().map(|r| r.cells.clone()).collect(),
            }
        };
        report.duplicates_dropped = rows.dedup();
        report.rows_out = rows.rows.len();
        return Ok((rows, report));
    }
    let t = read_table(&cfg.data, cfg.format, &cfg.read)?;
    let mut report = PairsReport {
        rows_in: t.len(),
        ..Default::default()
    };
    let roles = cfg.source.roles();
    let cols =
        if t.format == DataFormat::Stsb && cfg.columns.0.is_empty() && cfg.source == Source::Scores
        {
            vec![
                t.column("sentence1")?,
                t.column("sentence2")?,
                t.column("score")?,
            ]
        } else {
            cfg.columns.resolve(&t, roles)?
        };
    let mut rows = match cfg.source {
        Source::Scores => build::from_scores(&t, &cols, cfg, &mut report)?,
        Source::Labeled => build::from_labeled(&t, &cols, cfg, &mut report)?,
        Source::Classes => build::from_classes(&t, &cols, cfg, &mut report)?,
        Source::Nli => build::from_nli(&t, &cols, cfg, &mut report)?,
        Source::Pairs => mine::add_negatives(&t, &cols, cfg, &mut report)?,
        Source::Qrels => unreachable!("handled above"),
    };
    report.duplicates_dropped = rows.dedup();
    report.rows_out = rows.rows.len();
    if rows.rows.is_empty() {
        bail!(
            "{}: no output rows ({} rows read; skipped: {:?})",
            cfg.data.display(),
            report.rows_in,
            report.skipped
        );
    }
    Ok((rows, report))
}

/// Builds and writes the output file.
pub fn run(cfg: &PairsConfig) -> Result<PairsReport> {
    let fmt = output::OutputKind::from_path(&cfg.output)?;
    crate::fsutil::check_writable_file(&cfg.output)?;
    let (rows, report) = build_rows(cfg)?;
    rows.write(&cfg.output, fmt)?;
    Ok(report)
}
