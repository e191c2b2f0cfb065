//! Output rows of a builder and their writers (JSONL by default; CSV/TSV by extension), written
//! atomically. Files are read back by `embtune train` as they are.

use crate::fsutil::AtomicFile;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

/// How mined/random negatives are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeFormat {
    /// One (anchor, positive, negative) row per negative.
    Triplet,
    /// One (anchor, positive, negative_1 … negative_n) row; rows short of n negatives are dropped.
    NTuple,
    /// (anchor, text, label): the positive with 1, each negative with 0.
    LabeledPair,
}

/// Output file kinds, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Jsonl,
    Csv,
    Tsv,
    Parquet,
}

impl OutputKind {
    pub fn from_path(p: &Path) -> Result<Self> {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("jsonl") | Some("ndjson") => Ok(Self::Jsonl),
            Some("csv") => Ok(Self::Csv),
            Some("tsv") => Ok(Self::Tsv),
            Some("parquet") => Ok(Self::Parquet),
            _ => bail!(
                "{}: output must end in .jsonl, .csv, .tsv or .parquet",
                p.display()
            ),
        }
    }
}

/// A table of output rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    pub fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// Drops exact duplicate rows (first kept); returns how many were dropped.
    pub fn dedup(&mut self) -> usize {
        let before = self.rows.len();
        let mut seen = HashSet::new();
        self.rows
            .retain(|r| seen.insert(serde_json::to_string(r).unwrap_or_default()));
        before - self.rows.len()
    }

    pub fn write(&self, path: &Path, kind: OutputKind) -> Result<()> {
        if kind == OutputKind::Parquet {
            let tmp = crate::fsutil::temp_sibling(path);
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let res = crate::data::parquet::write(path, &self.columns, &self.rows, file)
                .and_then(|_| crate::fsutil::commit_temp(&tmp, path));
            if res.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            return res;
        }
        let mut f = AtomicFile::create(path)?;
        let ctx = || format!("writing {}", path.display());
        match kind {
            OutputKind::Jsonl => {
                let w = f.writer()?;
                for r in &self.rows {
                    let obj: serde_json::Map<String, Value> = self
                        .columns
                        .iter()
                        .cloned()
                        .zip(r.iter().cloned())
                        .collect();
                    serde_json::to_writer(&mut *w, &obj).with_context(ctx)?;
                    w.write_all(b"\n").with_context(ctx)?;
                }
            }
            OutputKind::Csv | OutputKind::Tsv => {
                let delim = if kind == OutputKind::Csv { b',' } else { b'\t' };
                let mut w = csv::WriterBuilder::new()
                    .delimiter(delim)
                    .from_writer(f.writer()?);
                w.write_record(&self.columns).with_context(ctx)?;
                for r in &self.rows {
                    w.write_record(r.iter().map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }))
                    .with_context(ctx)?;
                }
                w.flush().with_context(ctx)?;
            }
            OutputKind::Parquet => unreachable!("written above"),
        }
        f.commit()
    }
}
