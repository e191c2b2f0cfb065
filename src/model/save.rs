//! Saving a [`SentenceEncoder`] in the sentence-transformers layout: `model.safetensors`,
//! `config.json`, the tokenizer files, `modules.json` with Pooling / Dense / Normalize,
//! `sentence_bert_config.json` and `config_sentence_transformers.json` (prompts, our version),
//! written atomically (a temporary directory renamed, or each file complete when it appears).
//! Depends on `model::*`, `fsutil`.

use super::{weights, SentenceEncoder};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;

impl SentenceEncoder {
    /// Saves in the sentence-transformers layout, atomically (temporary directory + rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_dir_atomic(dir, |tmp| self.write_files(tmp))
            .with_context(|| format!("saving model to {}", dir.display()))
    }

    /// Saves into an existing directory that also holds other outputs (a training run's
    /// metrics and checkpoints): each file is complete when it appears.
    pub fn save_into(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_entries_into(dir, |tmp| self.write_files(tmp))
            .with_context(|| format!("saving model to {}", dir.display()))
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        use crate::fsutil::write_file_synced;
        let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
        weights::save_safetensors(&self.tensors_to_save()?, &dir.join("model.safetensors"))?;
        write_file_synced(&dir.join("config.json"), &pretty(&self.config_json))?;
        for (name, bytes) in &self.tokenizer_files {
            write_file_synced(&dir.join(name), bytes)?;
        }
        let mut modules = vec![
            json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
            json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
        ];
        std::fs::create_dir_all(dir.join("1_Pooling"))?;
        write_file_synced(
            &dir.join("1_Pooling/config.json"),
            &pretty(&self.pooling.to_json()),
        )?;
        for d in &self.dense {
            let idx = modules.len();
            let sub = format!("{idx}_Dense");
            d.save(&dir.join(&sub))?;
            modules.push(json!({"idx": idx, "name": idx.to_string(), "path": sub, "type": "sentence_transformers.models.Dense"}));
        }
        if self.normalize {
            let idx = modules.len();
            let sub = format!("{idx}_Normalize");
            std::fs::create_dir_all(dir.join(&sub))?;
            modules.push(json!({"idx": idx, "name": idx.to_string(), "path": sub, "type": "sentence_transformers.models.Normalize"}));
        }
        write_file_synced(&dir.join("modules.json"), &pretty(&Value::Array(modules)))?;
        let sbert = json!({"max_seq_length": self.tokenizer.max_seq_length(), "do_lower_case": self.tokenizer.lowercase()});
        write_file_synced(&dir.join("sentence_bert_config.json"), &pretty(&sbert))?;
        write_file_synced(
            &dir.join("config_sentence_transformers.json"),
            &pretty(&self.st_config_for_save()),
        )?;
        Ok(())
    }

    /// The source's `config_sentence_transformers.json` with our version recorded; the
    /// similarity function is cosine (what every evaluator here uses).
    fn st_config_for_save(&self) -> Value {
        let mut v = self
            .st_config
            .clone()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        if let Some(obj) = v.as_object_mut() {
            let ver = obj.entry("__version__").or_insert_with(|| json!({}));
            if let Some(ver) = ver.as_object_mut() {
                ver.insert("embtune".into(), json!(env!("CARGO_PKG_VERSION")));
            }
            let (prompts, default_name) = self.prompts.to_json();
            obj.insert("prompts".into(), prompts);
            obj.insert("default_prompt_name".into(), default_name);
            obj.entry("model_type")
                .or_insert_with(|| json!("SentenceTransformer"));
            obj.entry("similarity_fn_name")
                .or_insert_with(|| json!("cosine"));
        }
        v
    }
}
