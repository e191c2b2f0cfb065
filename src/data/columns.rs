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

/// `--columns` as every command takes it: role=column pairs (`anchor=question,positive=answer`)
/// or the columns in the roles' order (`question,answer`); not a mix.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnsArg {
    Positional(Vec<String>),
    Roles(Vec<(String, String)>),
}

impl ColumnsArg {
    /// `None` for no items.
    pub fn parse(items: &[String]) -> Result<Option<Self>> {
        if items.is_empty() {
            return Ok(None);
        }
        let with_role = items.iter().filter(|i| i.contains('=')).count();
        if with_role == 0 {
            return Ok(Some(ColumnsArg::Positional(
                items.iter().map(|s| s.trim().to_string()).collect(),
            )));
        }
        if with_role != items.len() {
            bail!("--columns: give either role=column for every item or plain column names in role order, not both: {}", items.join(","));
        }
        Ok(Some(ColumnsArg::Roles(
            items
                .iter()
                .filter_map(|i| i.split_once('='))
                .map(|(r, c)| (r.trim().to_string(), c.trim().to_string()))
                .collect(),
        )))
    }
}

/// The training roles: 0 = anchor (also sentence1, text, query, premise), 1 = positive
/// (sentence2, document, hypothesis), 2.. = negative, negative_1, negative_2, …; `label`/`score`
/// name the label column.
pub(crate) fn training_slot(role: &str) -> Option<usize> {
    match role {
        "anchor" | "sentence1" | "text" | "query" | "premise" => Some(0),
        "positive" | "sentence2" | "document" | "hypothesis" => Some(1),
        "negative" => Some(2),
        r => r
            .strip_prefix("negative_")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .map(|n| n + 1),
    }
}

/// `train --columns` (either form) and `--label-column` as a [`ColumnSpec`].
pub fn training_columns(arg: Option<ColumnsArg>, label: Option<String>) -> Result<ColumnSpec> {
    let Some(arg) = arg else {
        return Ok(ColumnSpec {
            text_columns: None,
            label_column: label,
        });
    };
    let roles = match arg {
        ColumnsArg::Positional(cols) => {
            return Ok(ColumnSpec {
                text_columns: Some(cols),
                label_column: label,
            })
        }
        ColumnsArg::Roles(r) => r,
    };
    let mut slots: Vec<(usize, String)> = Vec::new();
    let mut label = label;
    for (role, col) in roles {
        if role == "label" || role == "score" {
            if label.as_ref().is_some_and(|l| *l != col) {
                bail!(
                    "--columns {role}={col} and --label-column {} disagree",
                    label.unwrap_or_default()
                );
            }
            label = Some(col);
            continue;
        }
        let Some(slot) = training_slot(&role) else {
            bail!("--columns: unknown role {role:?}; training roles are anchor, positive, negative, negative_1 … (or sentence1, sentence2), and label/score");
        };
        if slots.iter().any(|(s, _)| *s == slot) {
            bail!("--columns: role {role:?} given twice");
        }
        slots.push((slot, col));
    }
    slots.sort();
    for (i, (s, _)) in slots.iter().enumerate() {
        if *s != i {
            bail!("--columns: the roles leave a gap (an anchor and a positive come first, then negatives in order)");
        }
    }
    Ok(ColumnSpec {
        text_columns: Some(slots.into_iter().map(|(_, c)| c).collect()),
        label_column: label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn both_columns_syntaxes_give_the_same_training_columns() {
        let roles = ColumnsArg::parse(&items("positive=a,anchor=q,label=is_match")).unwrap();
        let pos = ColumnsArg::parse(&items("q,a")).unwrap();
        let a = training_columns(roles, None).unwrap();
        let b = training_columns(pos, Some("is_match".into())).unwrap();
        assert_eq!(a.text_columns, b.text_columns);
        assert_eq!(a.label_column, b.label_column);
        assert_eq!(a.text_columns.unwrap(), vec!["q", "a"]);
        let n = training_columns(
            ColumnsArg::parse(&items("anchor=q,positive=p,negative_2=n2,negative_1=n1")).unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(n.text_columns.unwrap(), vec!["q", "p", "n1", "n2"]);
        assert!(ColumnsArg::parse(&items("q,positive=a")).is_err());
        assert!(training_columns(
            ColumnsArg::parse(&items("anchor=q,negative=n")).unwrap(),
            None
        )
        .is_err());
        assert!(training_columns(
            ColumnsArg::parse(&items("anchor=q,potato=p")).unwrap(),
            None
        )
        .is_err());
    }
}
