//! Which columns of a table are texts and which is the label, decided the same way for every
//! command that reads training-style data (`train`, the dataset check of `pairs --check` and of
//! `train`): explicit `--columns` / `--label-column`, else STS-B's sentence1, sentence2, score,
//! else every column but a `label` / `score` one. A column whose every value is a number is never
//! silently a text: it is the label when the consumer takes one and none was named, else an error
//! that names the flags to use. Depends on `data::Table`.

use super::{DataFormat, Table};
use anyhow::{bail, Result};
use serde_json::Value;

/// How to pick the columns.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ColumnSpec {
    /// Text columns in role order; None: every column except the label, in file order.
    pub text_columns: Option<Vec<String>>,
    /// Label/score column; None: "label" or "score" if the file has one.
    pub label_column: Option<String>,
}

/// The resolved columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub text: Vec<String>,
    pub label: Option<String>,
    /// A note for the user when a choice was made for them (a numeric column taken as the label).
    pub note: Option<String>,
}

/// Whether every value of column `col` is a number (a JSON number or a numeric string).
pub fn numeric_column(t: &Table, col: usize) -> bool {
    !t.rows.is_empty()
        && t.rows.iter().all(|r| match &r.cells[col] {
            Value::Number(_) => true,
            Value::String(s) => s.trim().parse::<f64>().is_ok_and(f64::is_finite),
            _ => false,
        })
}

impl ColumnSpec {
    /// The columns of `t`; `takes_label`: the consumer (the loss) uses a label, so a numeric
    /// column may serve as one.
    pub fn resolve(&self, t: &Table, takes_label: bool) -> Result<Columns> {
        let stsb = t.format == DataFormat::Stsb;
        let mut label = match (&self.label_column, stsb) {
            (Some(c), _) => Some(c.clone()),
            (None, true) => Some("score".to_string()),
            (None, false) => ["label", "score"]
                .iter()
                .find(|c| t.columns.iter().any(|x| x == *c))
                .map(|c| c.to_string()),
        };
        if let Some(c) = &label {
            t.column(c)?;
        }
        let mut note = None;
        let text = match (&self.text_columns, stsb) {
            (Some(c), _) => c.clone(),
            (None, true) => vec!["sentence1".into(), "sentence2".into()],
            (None, false) => {
                let mut text: Vec<String> = t
                    .columns
                    .iter()
                    .filter(|c| Some(*c) != label.as_ref())
                    .cloned()
                    .collect();
                let numeric: Vec<String> = text
                    .iter()
                    .filter(|c| t.column(c).is_ok_and(|i| numeric_column(t, i)))
                    .cloned()
                    .collect();
                match numeric.as_slice() {
                    [] => {}
                    [one] if takes_label && label.is_none() => {
                        note = Some(format!(
                            "column {one:?} holds only numbers: using it as the label (--label-column names another)"
                        ));
                        text.retain(|c| c != one);
                        label = Some(one.clone());
                    }
                    _ => bail!(
                        "{}: column{} {} hold{} only numbers, so {} not a text: name the label with --label-column{} or the text columns with --columns",
                        t.path.display(),
                        if numeric.len() > 1 { "s" } else { "" },
                        numeric.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
                        if numeric.len() > 1 { "" } else { "s" },
                        if numeric.len() > 1 { "they are" } else { "it is" },
                        if takes_label { "" } else { " (this loss takes none: drop it with --columns)" },
                    ),
                }
                text
            }
        };
        if text.is_empty() {
            bail!("{}: no text columns", t.path.display());
        }
        for c in &text {
            t.column(c)?;
        }
        Ok(Columns { text, label, note })
    }
}
