//! The sentence-transformers configuration readers (modules.json, sentence_bert_config.json,
//! 1_Pooling/config.json, config_sentence_transformers.json) and config.json on arbitrary
//! contents: an error or a stack, never a panic, never a path outside the model directory.
#![no_main]
use embtune::model::config::BertConfig;
use embtune::model::hub::{HubOptions, ModelSource};
use embtune::model::st_format::read_stack;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // Up to five files separated by 0xFF bytes.
    let mut parts = data.split(|b| *b == 0xff);
    let dir = common::scratch().join("model");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(dir.join("1_Pooling")).is_err() {
        return;
    }
    for name in [
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "config_sentence_transformers.json",
        "config.json",
    ] {
        if let Some(p) = parts.next() {
            let _ = std::fs::write(dir.join(name), p);
        }
    }
    if let Ok(src) = ModelSource::parse(&dir.to_string_lossy(), HubOptions::default()) {
        let _ = read_stack(&src);
    }
    let _ = BertConfig::from_file(&dir.join("config.json"));
});
