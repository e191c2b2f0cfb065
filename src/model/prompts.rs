//! Prompts, as sentence-transformers (≥ 3) keeps and applies them: a name → text map and a
//! `default_prompt_name` in `config_sentence_transformers.json`. A prompt is prepended to each
//! text before tokenizing; with `include_prompt: false` in the Pooling config its tokens (the
//! leading special token included, a trailing one not) are left out of pooling. Resolution:
//! an explicit prompt, else a named one, else the side's own (queries: "query"; documents: the
//! first of "document", "passage", "corpus"), else the default prompt. Depends on `tokenize`.

use crate::tokenize::TextTokenizer;
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Which side of a retrieval task a text is on (sentence-transformers' encode_query /
/// encode_document), or neither (encode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Plain,
    Query,
    Document,
}

/// A user's choice of prompt (`--prompt TEXT` or `--prompt-name NAME`; neither: the side's own
/// prompt or the model's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PromptChoice {
    pub text: Option<String>,
    pub name: Option<String>,
}

impl PromptChoice {
    pub fn is_given(&self) -> bool {
        self.text.is_some() || self.name.is_some()
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompts {
    pub map: BTreeMap<String, String>,
    pub default_name: Option<String>,
}

impl Prompts {
    /// From a `config_sentence_transformers.json` value (absent keys: no prompts).
    pub fn from_st_config(v: Option<&Value>) -> Self {
        let map = v
            .and_then(|c| c.get("prompts"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let default_name = v
            .and_then(|c| c.get("default_prompt_name"))
            .and_then(Value::as_str)
            .map(String::from);
        Self { map, default_name }
    }

    /// The prompt text to prepend (None: none), as sentence-transformers resolves it.
    pub fn resolve(
        &self,
        prompt: Option<&str>,
        name: Option<&str>,
        side: Side,
    ) -> Result<Option<String>> {
        if let Some(p) = prompt {
            return Ok(Some(p.to_string()).filter(|p| !p.is_empty()));
        }
        let name = match name {
            Some(n) => Some(n),
            None => {
                let own: &[&str] = match side {
                    Side::Plain => &[],
                    Side::Query => &["query"],
                    Side::Document => &["document", "passage", "corpus"],
                };
                // The side's own prompt, even an empty one, wins over the default.
                match own.iter().find(|n| self.map.contains_key(**n)) {
                    Some(n) => Some(*n),
                    None => self.default_name.as_deref(),
                }
            }
        };
        let Some(name) = name else {
            return Ok(None);
        };
        match self.map.get(name) {
            Some(p) => Ok(Some(p.clone()).filter(|p| !p.is_empty())),
            None => bail!(
                "prompt name {name:?} is not among the model's prompts ({})",
                if self.map.is_empty() {
                    "it has none".to_string()
                } else {
                    self.map.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ),
        }
    }

    /// The text for [`crate::encode::EncodeOptions::prompt`] (empty: no prompt) of `choice` on
    /// `side`; `flag` names the flag in the error for an unknown prompt name.
    pub fn choose(&self, choice: &PromptChoice, side: Side, flag: &str) -> Result<String> {
        let p = self
            .resolve(choice.text.as_deref(), choice.name.as_deref(), side)
            .map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
        Ok(p.unwrap_or_default())
    }

    /// The model's config entries for these prompts.
    pub fn to_json(&self) -> (Value, Value) {
        (json!(self.map), json!(self.default_name))
    }
}

/// The tokens of `prompt` that pooling leaves out with `include_prompt: false`: the prompt
/// tokenized alone with its special tokens, minus a trailing special token ([SEP], </s>) — as
/// sentence-transformers' Transformer computes `prompt_length`.
pub fn prompt_length(tok: &TextTokenizer, prompt: &str) -> Result<usize> {
    let ids = tok.tokenize(&[prompt])?.remove(0).ids;
    let empty = tok.tokenize(&[""])?.remove(0).ids;
    let trailing_special = empty.len() >= 2 && ids.last() == empty.last();
    Ok(ids.len() - usize::from(trailing_special))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompts(default: Option<&str>) -> Prompts {
        Prompts {
            map: [
                ("query", "query: "),
                ("passage", "passage: "),
                ("empty", ""),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            default_name: default.map(String::from),
        }
    }

    #[test]
    fn prompts_resolve_as_sentence_transformers_does() {
        let p = prompts(Some("passage"));
        assert_eq!(
            p.resolve(Some("x: "), Some("query"), Side::Plain)
                .unwrap()
                .as_deref(),
            Some("x: ")
        );
        assert_eq!(
            p.resolve(None, Some("query"), Side::Plain)
                .unwrap()
                .as_deref(),
            Some("query: ")
        );
        // encode: the default prompt; encode_query: "query"; encode_document: "passage".
        assert_eq!(
            p.resolve(None, None, Side::Plain).unwrap().as_deref(),
            Some("passage: ")
        );
        assert_eq!(
            p.resolve(None, None, Side::Query).unwrap().as_deref(),
            Some("query: ")
        );
        assert_eq!(
            p.resolve(None, None, Side::Document).unwrap().as_deref(),
            Some("passage: ")
        );
        assert_eq!(p.resolve(None, Some("empty"), Side::Plain).unwrap(), None);
        assert!(p.resolve(None, Some("nope"), Side::Plain).is_err());
        assert_eq!(
            prompts(None).resolve(None, None, Side::Plain).unwrap(),
            None
        );
    }
}
