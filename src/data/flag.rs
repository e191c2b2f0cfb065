//! FlagEmbedding's training rows — `{"query": …, "pos": [..], "neg": [..], …}` — read as
//! training columns: one row per positive, `anchor` = the query, `positive` = that positive,
//! `negative_1 … negative_k` = the row's first k negatives, k the fewest negatives any row has
//! (every row then has the same columns; said in a note). Other fields (pos_scores, neg_scores,
//! prompt, type) are left out, and named in the note. Depends on `data` (Table).

use super::{Row, Table};
use anyhow::{bail, Result};
use serde_json::Value;

/// Whether `t` has FlagEmbedding's layout: a `query` column and a `pos` column of lists.
pub fn is_flag_layout(t: &Table) -> bool {
    let (Some(_), Some(p)) = (
        t.columns.iter().position(|c| c == "query"),
        t.columns.iter().position(|c| c == "pos"),
    ) else {
        return false;
    };
    t.rows.iter().any(|r| r.cells[p].is_array())
}

fn texts(v: &Value, t: &Table, r: &Row, field: &str) -> Result<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(s.clone()),
                other => bail!(
                    "{}:{}: field {field:?}: expected a list of texts, found {other}",
                    t.path.display(),
                    r.line
                ),
            })
            .collect(),
        other => bail!(
            "{}:{}: field {field:?}: expected a list of texts (FlagEmbedding's format), found {other}",
            t.path.display(),
            r.line
        ),
    }
}

/// The rows of a FlagEmbedding file as anchor / positive / negative_1..k columns.
pub fn to_training_table(t: Table) -> Result<Table> {
    let q = t.column("query")?;
    let p = t.column("pos")?;
    let n = t.columns.iter().position(|c| c == "neg");
    let mut parsed = Vec::with_capacity(t.rows.len());
    for r in &t.rows {
        let query = match &r.cells[q] {
            Value::String(s) => s.clone(),
            other => bail!(
                "{}:{}: field \"query\": expected a text, found {other}",
                t.path.display(),
                r.line
            ),
        };
        let pos = texts(&r.cells[p], &t, r, "pos")?;
        if pos.is_empty() {
            bail!(
                "{}:{}: field \"pos\": no positive",
                t.path.display(),
                r.line
            );
        }
        let neg = match n {
            Some(n) => texts(&r.cells[n], &t, r, "neg")?,
            None => Vec::new(),
        };
        parsed.push((r.line, query, pos, neg));
    }
    let k = parsed.iter().map(|x| x.3.len()).min().unwrap_or(0);
    let most = parsed.iter().map(|x| x.3.len()).max().unwrap_or(0);
    let left_out: Vec<&str> = t
        .columns
        .iter()
        .map(String::as_str)
        .filter(|c| !["query", "pos", "neg"].contains(c))
        .collect();
    tracing::info!(
        "note: {}: FlagEmbedding rows read as anchor (query), positive (one row per pos) and {k} negatives each{}{}",
        t.path.display(),
        if most > k {
            format!(" (the fewest any row has; rows hold up to {most})")
        } else {
            String::new()
        },
        if left_out.is_empty() {
            String::new()
        } else {
            format!("; fields {} not used", left_out.join(", "))
        }
    );
    let mut columns = vec!["anchor".to_string(), "positive".to_string()];
    columns.extend((1..=k).map(|i| format!("negative_{i}")));
    let mut rows = Vec::new();
    for (line, query, pos, neg) in parsed {
        for p in pos {
            let mut cells = vec![Value::String(query.clone()), Value::String(p)];
            cells.extend(neg.iter().take(k).map(|s| Value::String(s.clone())));
            rows.push(Row { line, cells });
        }
    }
    Ok(Table {
        path: t.path,
        format: t.format,
        columns,
        rows,
    })
}
