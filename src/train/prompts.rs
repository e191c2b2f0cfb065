//! Training prompts (`--prompts`), as sentence-transformers' trainer `prompts` argument: one
//! prompt for every text column (`--prompts "query: "`) or one per column
//! (`--prompts anchor="query: ",positive="passage: "`; keys are roles — anchor, positive,
//! negative (every negative), negative_N, sentence1/2 … — or the data's column names). Each
//! text is trained with its column's prompt prepended (and, with the model's
//! `include_prompt: false`, left out of pooling). The prompts are saved with the model, under
//! the names given and, so that retrieval evaluation and `encode_query`/`encode_document` pick
//! them up, as `query` (the first column's) and `document` (the second's). Depends on
//! `data::columns`, `model::prompts`, `tokenize`.

use crate::model::prompts::{prompt_length, Prompts};
use crate::tokenize::TextTokenizer;
use anyhow::{bail, Result};

/// `--prompts` as given: `(key, prompt)`; key "" = every column.
pub fn parse(arg: &str) -> Result<Vec<(String, String)>> {
    // key=value items separated by commas; a comma inside a prompt stays when what follows it
    // is not `key=`.
    let is_key = |s: &str| {
        s.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        })
    };
    if !is_key(arg) {
        return Ok(vec![(String::new(), unquote(arg))]);
    }
    let mut items: Vec<String> = Vec::new();
    for part in arg.split(',') {
        match items.last_mut() {
            Some(last) if !is_key(part) => {
                last.push(',');
                last.push_str(part);
            }
            _ => items.push(part.to_string()),
        }
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for it in items {
        let (k, v) = it.split_once('=').unwrap_or_default();
        if out.iter().any(|(x, _)| x == k) {
            bail!("--prompts: {k:?} given twice");
        }
        out.push((k.to_string(), unquote(v)));
    }
    Ok(out)
}

fn unquote(s: &str) -> String {
    let t = s.strip_prefix('"').and_then(|x| x.strip_suffix('"'));
    t.unwrap_or(s).to_string()
}

/// The prompt of each data column, resolved against the data.
#[derive(Debug, Clone, Default)]
pub struct TrainPrompts {
    per_column: Vec<Option<String>>,
    /// (name, prompt) to save with the model.
    saved: Vec<(String, String)>,
}

impl TrainPrompts {
    /// `given` (see [`parse`]) against the data's text columns (in role order).
    pub fn resolve(given: &[(String, String)], columns: &[String]) -> Result<Self> {
        let mut per_column: Vec<Option<String>> = vec![None; columns.len()];
        let mut saved = Vec::new();
        for (key, prompt) in given {
            let targets: Vec<usize> = if key.is_empty() {
                (0..columns.len()).collect()
            } else if let Some(i) = columns.iter().position(|c| c == key) {
                vec![i]
            } else if key == "negative" {
                (2..columns.len()).collect()
            } else if let Some(slot) = crate::data::columns::training_slot(key) {
                vec![slot]
            } else {
                bail!(
                    "--prompts: {key:?} is neither a role (anchor, positive, negative, negative_N) nor a text column of the data ({})",
                    columns.join(", ")
                );
            };
            if targets.is_empty() || targets.iter().any(|&t| t >= columns.len()) {
                bail!(
                    "--prompts: {key:?}: the data has no such column (its text columns: {})",
                    columns.join(", ")
                );
            }
            for t in targets {
                if per_column[t].is_some() {
                    bail!("--prompts: column {:?} is given two prompts", columns[t]);
                }
                per_column[t] = Some(prompt.clone());
            }
            if !key.is_empty() {
                saved.push((key.clone(), prompt.clone()));
            }
        }
        for (name, col) in [("query", 0), ("document", 1)] {
            if let Some(Some(p)) = per_column.get(col) {
                if !saved.iter().any(|(n, _)| n == name) {
                    saved.push((name.to_string(), p.clone()));
                }
            }
        }
        Ok(Self { per_column, saved })
    }

    pub fn is_empty(&self) -> bool {
        self.per_column.iter().all(Option::is_none)
    }

    /// Column `c`'s text as it is trained.
    pub fn prefixed(&self, c: usize, text: &str) -> String {
        match self.per_column.get(c) {
            Some(Some(p)) => format!("{p}{text}"),
            _ => text.to_string(),
        }
    }

    /// Each column's prompt length in tokens (as pooling leaves it out).
    pub fn token_counts(&self, tok: &TextTokenizer, cols: usize) -> Result<Vec<usize>> {
        (0..cols)
            .map(|c| match self.per_column.get(c) {
                Some(Some(p)) if !p.is_empty() => prompt_length(tok, p),
                _ => Ok(0),
            })
            .collect()
    }

    /// Adds the prompts to the model's (a name the model already has is replaced).
    pub fn apply_to(&self, prompts: &mut Prompts) {
        for (name, p) in &self.saved {
            prompts.map.insert(name.clone(), p.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prompts_parse_per_column_or_for_all() {
        assert_eq!(
            parse("query: ").unwrap(),
            vec![(String::new(), "query: ".into())]
        );
        assert_eq!(
            parse("anchor=\"query: \",positive=passage, with a comma: ").unwrap(),
            vec![
                ("anchor".into(), "query: ".into()),
                ("positive".into(), "passage, with a comma: ".into())
            ]
        );
        assert!(parse("anchor=a,anchor=b").is_err());
    }

    #[test]
    fn keys_are_roles_or_columns() {
        let c = cols(&["question", "answer", "neg1", "neg2"]);
        let p = TrainPrompts::resolve(&parse("anchor=q: ,negative=p: ,answer=p: ").unwrap(), &c)
            .unwrap();
        assert_eq!(p.prefixed(0, "x"), "q: x");
        assert_eq!(p.prefixed(1, "x"), "p: x");
        assert_eq!(p.prefixed(3, "x"), "p: x");
        let mut m = Prompts::default();
        p.apply_to(&mut m);
        assert_eq!(m.map.get("query").map(String::as_str), Some("q: "));
        assert_eq!(m.map.get("document").map(String::as_str), Some("p: "));
        assert!(TrainPrompts::resolve(&parse("potato=x").unwrap(), &c).is_err());
        assert!(TrainPrompts::resolve(&parse("negative_5=x").unwrap(), &c).is_err());
        assert!(TrainPrompts::resolve(&parse("anchor=x,question=y").unwrap(), &c).is_err());
        let all = TrainPrompts::resolve(&parse("all: ").unwrap(), &c).unwrap();
        assert!((0..4).all(|i| all.prefixed(i, "t") == "all: t"));
    }
}
