//! Training examples: text columns (anchor, positive/second, negatives…) plus an optional label or
//! score, read from any `DataFormat` and checked against the loss before step 1.

pub use crate::data::ColumnSpec;
use crate::data::{read_table, DataFormat, ReadOptions, Table};
use crate::loss::LabelKind;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Examples in memory: `texts[row][col]`, `labels[row]` when the data has a label column.
#[derive(Debug, Clone)]
pub struct TrainSet {
    pub path: PathBuf,
    pub columns: Vec<String>,
    pub label_column: Option<String>,
    pub texts: Vec<Vec<String>>,
    pub labels: Option<Vec<f32>>,
    /// 1-based line of each row in the file.
    pub lines: Vec<usize>,
}

impl TrainSet {
    pub fn len(&self) -> usize {
        self.texts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }
    pub fn n_texts(&self) -> usize {
        self.columns.len()
    }

    /// Reads and converts a file. STS-B: sentence1, sentence2, score/5. `takes_label`: the
    /// loss uses a label (see [`ColumnSpec::resolve`]).
    pub fn read(
        path: &Path,
        format: Option<DataFormat>,
        read: &ReadOptions,
        cols: &ColumnSpec,
        takes_label: bool,
    ) -> Result<Self> {
        Self::from_table(&read_table(path, format, read)?, cols, takes_label)
    }

    /// Converts an already-read table (see [`TrainSet::read`]).
    pub fn from_table(table: &Table, cols: &ColumnSpec, takes_label: bool) -> Result<Self> {
        let path = table.path.as_path();
        let stsb = table.format == DataFormat::Stsb;
        let resolved = cols.resolve(table, takes_label)?;
        if let Some(n) = &resolved.note {
            tracing::info!("note: {}: {n}", path.display());
        }
        let (text_columns, label_column) = (resolved.text, resolved.label);
        let idx: Vec<usize> = text_columns
            .iter()
            .map(|c| table.column(c))
            .collect::<Result<_>>()?;
        let lidx = label_column.as_ref().map(|c| table.column(c)).transpose()?;
        let mut texts = Vec::with_capacity(table.len());
        let lines = table.rows.iter().map(|r| r.line).collect();
        let mut labels = lidx.map(|_| Vec::with_capacity(table.len()));
        let scale = if stsb { 5.0 } else { 1.0 };
        for r in &table.rows {
            texts.push(
                idx.iter()
                    .map(|&c| Ok(table.text(r, c)?.into_owned()))
                    .collect::<Result<Vec<_>>>()?,
            );
            if let (Some(c), Some(l)) = (lidx, labels.as_mut()) {
                l.push((table.number(r, c)? / scale) as f32);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            columns: text_columns,
            label_column,
            texts,
            labels,
            lines,
        })
    }

    /// Checks labels against what the loss needs (0/1 for binary), naming file, line and field.
    pub fn check_labels(&self, kind: LabelKind) -> Result<()> {
        if kind != LabelKind::Binary {
            return Ok(());
        }
        if let Some(labels) = &self.labels {
            for (i, l) in labels.iter().enumerate() {
                if *l != 0.0 && *l != 1.0 {
                    let line = self.lines[i];
                    bail!(
                        "{}:{line}: field {:?}: expected a label 0 or 1 for this loss, got {l}",
                        self.path.display(),
                        self.label_column.as_deref().unwrap_or("label")
                    );
                }
            }
        }
        Ok(())
    }
}
