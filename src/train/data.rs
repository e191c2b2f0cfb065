//! Training examples: text columns (anchor, positive/second, negatives…) plus an optional label or
//! score, read from any `DataFormat` and checked against the loss before step 1.

pub use crate::data::ColumnSpec;
use crate::data::{read_table, DataFormat, ReadOptions, Table};
use crate::loss::LabelKind;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Examples in memory: `texts[row][col]`, and when the data has a label column (or a teacher
/// gave labels) `labels`: one value per row, or `label_shape`'s elements per row, row-major.
#[derive(Debug, Clone)]
pub struct TrainSet {
    pub path: PathBuf,
    pub columns: Vec<String>,
    pub label_column: Option<String>,
    pub texts: Vec<Vec<String>>,
    pub labels: Option<Vec<f32>>,
    /// The shape of one row's label: `[]` a number, `[k]` a vector (teacher margins), `[c, d]`
    /// per-column teacher embeddings.
    pub label_shape: Vec<usize>,
    /// Classification labels (`--loss softmax`) given as text: the class names, id = index.
    pub classes: Option<Vec<String>>,
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
        Self::from_table_with(table, cols, takes_label, false)
    }

    /// [`TrainSet::from_table`]; `classes`: the label column holds class ids (0, 1, …) or
    /// class names (mapped to ids in sorted order, as a classifier's labels).
    pub fn from_table_with(
        table: &Table,
        cols: &ColumnSpec,
        takes_label: bool,
        classes: bool,
    ) -> Result<Self> {
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
        let mut names = Vec::new();
        let scale = if stsb { 5.0 } else { 1.0 };
        for r in &table.rows {
            texts.push(
                idx.iter()
                    .map(|&c| Ok(table.text(r, c)?.into_owned()))
                    .collect::<Result<Vec<_>>>()?,
            );
            if let (Some(c), Some(l)) = (lidx, labels.as_mut()) {
                if classes {
                    names.push(table.text(r, c)?.trim().to_string());
                } else {
                    l.push((table.number(r, c)? / scale) as f32);
                }
            }
        }
        let mut class_names = None;
        if let (true, Some(l)) = (classes, labels.as_mut()) {
            let (ids, named) = class_ids(&names);
            *l = ids;
            class_names = named;
        }
        Ok(Self {
            path: path.to_path_buf(),
            columns: text_columns,
            label_column,
            texts,
            labels,
            label_shape: Vec::new(),
            classes: class_names,
            lines,
        })
    }

    /// Values per row's label (1 for a number).
    pub fn label_width(&self) -> usize {
        self.label_shape.iter().product()
    }

    /// The number of classes of classification labels (the largest id + 1).
    pub fn num_classes(&self) -> usize {
        match (&self.classes, &self.labels) {
            (Some(c), _) => c.len(),
            (None, Some(l)) => l.iter().fold(0f32, |a, &b| a.max(b)) as usize + 1,
            _ => 0,
        }
    }

    /// Checks labels against what the loss needs (0/1 for binary), naming file, line and field.
    pub fn check_labels(&self, kind: LabelKind) -> Result<()> {
        if kind == LabelKind::Class {
            return self.check_class_ids();
        }
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

impl TrainSet {
    /// Class ids must be whole numbers from 0, and at least two classes present.
    fn check_class_ids(&self) -> Result<()> {
        let field = self.label_column.as_deref().unwrap_or("label");
        if let (None, Some(labels)) = (&self.classes, &self.labels) {
            for (i, l) in labels.iter().enumerate() {
                if !(l.fract() == 0.0 && *l >= 0.0 && *l < 100_000.0) {
                    bail!(
                        "{}:{}: field {field:?}: expected a class id (0, 1, 2, …) or a class name, got {l}",
                        self.path.display(),
                        self.lines[i]
                    );
                }
            }
        }
        if self.labels.is_some() && self.num_classes() < 2 {
            bail!(
                "{}: field {field:?}: a classifier needs at least 2 classes; the data has {}",
                self.path.display(),
                self.num_classes()
            );
        }
        Ok(())
    }
}

/// Class labels as ids: whole numbers as themselves; otherwise names, numbered in sorted order.
/// The ids and, for names, the sorted names.
fn class_ids(names: &[String]) -> (Vec<f32>, Option<Vec<String>>) {
    let numeric: Option<Vec<f32>> = names
        .iter()
        .map(|n| n.parse::<u32>().ok().map(|v| v as f32))
        .collect();
    if let Some(ids) = numeric {
        return (ids, None);
    }
    let mut sorted: Vec<String> = names.to_vec();
    sorted.sort();
    sorted.dedup();
    let ids = names
        .iter()
        .map(|n| sorted.binary_search(n).unwrap_or(0) as f32)
        .collect();
    (ids, Some(sorted))
}
