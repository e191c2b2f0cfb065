//! The checked weight loader on arbitrary safetensors bytes (headers that lie about shapes,
//! dtypes or offsets, truncated data): an error naming the file or checked weights, never a panic
//! or an allocation beyond the file's size.
#![no_main]
use candle_core::{DType, Device};
use embtune::model::config::BertConfig;
use embtune::model::weights::load_checked;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn tiny() -> BertConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "bert", "vocab_size": 16, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 8,
        "type_vocab_size": 2
    }))
    .expect("tiny config")
}

fuzz_target!(|data: &[u8]| {
    let path = common::scratch().join("model.safetensors");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = load_checked(&path, &tiny(), DType::F32, &Device::Cpu);
});
