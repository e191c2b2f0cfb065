//! Reading datasets into a [`Table`] of named columns, one reader per [`DataFormat`], or a row
//! at a time in file order ([`RowStream`], `stream.rs`: memory bounded by a chunk, not the file;
//! its text columns and corpus documents in chunks: `texts.rs`).
//! Every error names the file and line (and field), and says what was expected.
//! Depends on csv, serde_json, parquet (`parquet.rs`) and the Hub client (`hub.rs`).

pub mod columns;
pub mod flag;
pub mod hub;
pub mod parquet;
pub mod read;
pub mod stream;
pub mod texts;

pub use columns::{ColumnSpec, Columns, ColumnsArg};
pub use read::{read_table, ReadOptions};
pub use stream::RowStream;
pub use texts::{CorpusTexts, TextStream};

use anyhow::{bail, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Closed set of input formats.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// One text per line (column "text").
    Text,
    /// Comma-separated with a header row.
    Csv,
    /// Tab-separated with a header row.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// STS benchmark files: tab-separated genre, file, year, id, score (0–5), sentence1,
    /// sentence2, no header, quotes are literal text.
    Stsb,
    /// Apache Parquet (also what `hf://datasets/...` resolves to).
    Parquet,
}

impl DataFormat {
    /// The format implied by a file extension (`.txt`, `.csv`, `.tsv`, `.jsonl`/`.ndjson`).
    pub fn from_path(path: &Path) -> Result<DataFormat> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "txt" | "text" => DataFormat::Text,
            "csv" => DataFormat::Csv,
            "tsv" | "tab" => DataFormat::Tsv,
            "jsonl" | "ndjson" => DataFormat::Jsonl,
            "parquet" => DataFormat::Parquet,
            _ => bail!(
                "{}: cannot tell the format from the extension {ext:?}; pass --format text|csv|tsv|jsonl|stsb|parquet",
                path.display()
            ),
        })
    }
}

/// The distinct sentences (sentence1 then sentence2 of each row, first occurrence kept, in file
/// order) of an STS-B-format file: what the encode benchmarks embed.
pub fn read_unique_stsb_sentences(path: &Path) -> Result<Vec<String>> {
    let t = read_table(path, Some(DataFormat::Stsb), &ReadOptions::default())?;
    let (c1, c2) = (t.column("sentence1")?, t.column("sentence2")?);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for row in &t.rows {
        for c in [c1, c2] {
            let s = t.text(row, c)?.into_owned();
            if seen.insert(s.clone()) {
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// One data row: its 1-based line number in the file and its cells, aligned with `Table::columns`
/// (`Value::Null` where a JSONL object lacks the key).
#[derive(Debug, Clone)]
pub struct Row {
    pub line: usize,
    pub cells: Vec<Value>,
}

/// A whole dataset in memory, columns by name.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: PathBuf,
    pub format: DataFormat,
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

impl Table {
    /// Index of a column by name; the error lists the columns the file has.
    pub fn column(&self, name: &str) -> Result<usize> {
        column_index(&self.path, self.format, &self.columns, name)
    }

    /// The text in `row`, column `col`: a string (numbers are accepted as their text).
    pub fn text<'a>(&'a self, row: &'a Row, col: usize) -> Result<std::borrow::Cow<'a, str>> {
        cell_text(&self.path, &self.columns, row, col)
    }

    /// A finite number in `row`, column `col` (a JSON number or a numeric string).
    pub fn number(&self, row: &Row, col: usize) -> Result<f64> {
        let v = match &row.cells[col] {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        };
        match v {
            Some(x) if x.is_finite() => Ok(x),
            _ => bail!(
                "{}:{}: field {:?}: expected a finite number, got {}",
                self.path.display(),
                row.line,
                self.columns[col],
                short(&row.cells[col])
            ),
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Index of column `name` among `columns` of a file; the error lists the columns the file has
/// (and, for a CSV/TSV whose first row looks like data, says it needs a header row).
pub fn column_index(
    path: &Path,
    format: DataFormat,
    columns: &[String],
    name: &str,
) -> Result<usize> {
    match columns.iter().position(|c| c == name) {
        Some(i) => Ok(i),
        None => {
            // A CSV/TSV without a header row: its first data row became the column names.
            let headerless = matches!(format, DataFormat::Csv | DataFormat::Tsv)
                && columns
                    .iter()
                    .any(|c| c.trim().parse::<f64>().is_ok() || c.contains(' '));
            bail!(
                "{}: missing column {name:?}; the file has columns: {}{}",
                path.display(),
                if columns.is_empty() {
                    "(none)".to_string()
                } else {
                    columns.join(", ")
                },
                if headerless {
                    " (the first row looks like data: CSV/TSV files need a header row naming the columns)"
                } else {
                    ""
                }
            )
        }
    }
}

/// The text in `row`, column `col` of a file with `columns` (numbers are accepted as their
/// text; a cell past the row's end — a JSONL object read before the key first appeared — is
/// missing).
pub fn cell_text<'a>(
    path: &Path,
    columns: &[String],
    row: &'a Row,
    col: usize,
) -> Result<std::borrow::Cow<'a, str>> {
    match row.cells.get(col).unwrap_or(&Value::Null) {
        Value::String(s) => Ok(std::borrow::Cow::Borrowed(s)),
        Value::Number(n) => Ok(std::borrow::Cow::Owned(n.to_string())),
        Value::Null => bail!(
            "{}:{}: field {:?}: missing; expected a text",
            path.display(),
            row.line,
            columns[col]
        ),
        other => bail!(
            "{}:{}: field {:?}: expected a text, got {}",
            path.display(),
            row.line,
            columns[col],
            kind(other)
        ),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}
