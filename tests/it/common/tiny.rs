//! A tiny random BERT (2 layers, hidden 32) with a character-level WordPiece tokenizer, written
//! in the sentence-transformers layout. For fast mechanics tests only — never a quality claim.

use candle_core::{DType, Device};
use embtune::model::pooling::{Pooling, PoolingConfig};
use embtune::model::SentenceEncoder;
use embtune::tokenize::TextTokenizer;
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

pub fn tiny_config_json() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": 0,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0
    })
}

/// Vocabulary: specials, a–z, 0–9, punctuation, and their `##` continuations.
pub fn tiny_tokenizer() -> Tokenizer {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let chars: Vec<char> = ('a'..='z')
        .chain('0'..='9')
        .chain(".,!?'\"-".chars())
        .collect();
    for c in &chars {
        vocab.push(c.to_string());
    }
    for c in &chars {
        vocab.push(format!("##{c}"));
    }
    let vocab_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(vocab_file.path(), vocab.join("\n")).unwrap();
    let map = WordPiece::read_file(vocab_file.path().to_str().unwrap()).unwrap();
    let wp = WordPiece::builder()
        .vocab(map)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = Tokenizer::new(wp);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .expect("normalizer");
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tok
}

/// A tiny random encoder in memory (f32 or f64), mean pooling, optional Normalize.
pub fn tiny_encoder(
    dir_for_tokenizer: &Path,
    seed: u64,
    dtype: DType,
    normalize: bool,
) -> SentenceEncoder {
    tiny_encoder_with(
        dir_for_tokenizer,
        seed,
        dtype,
        normalize,
        tiny_config_json(),
    )
}

/// [`tiny_encoder`] with another BERT config (sizes).
pub fn tiny_encoder_with(
    dir_for_tokenizer: &Path,
    seed: u64,
    dtype: DType,
    normalize: bool,
    mut cfg_json: serde_json::Value,
) -> SentenceEncoder {
    let tok = tiny_tokenizer();
    std::fs::create_dir_all(dir_for_tokenizer).unwrap();
    let tok_path = dir_for_tokenizer.join("tokenizer.json");
    tok.save(&tok_path, false).unwrap();
    cfg_json["vocab_size"] = serde_json::json!(tok.get_vocab_size(true));
    let encoder =
        embtune::model::family::random_from_json(&cfg_json, seed, dtype, &Device::Cpu).unwrap();
    let text_tok = TextTokenizer::from_file(&tok_path, 32, false, 0).unwrap();
    let hidden = cfg_json["hidden_size"].as_u64().unwrap() as usize;
    let pooling = PoolingConfig::new(vec![Pooling::Mean], hidden);
    SentenceEncoder::from_parts(encoder, text_tok, pooling, normalize, cfg_json, tok_path).unwrap()
}

/// Writes a tiny model directory in the sentence-transformers layout and returns nothing;
/// load it with `SentenceEncoder::load` / `--model <dir>`.
pub fn write_tiny_model(dir: &Path, seed: u64) {
    let scratch = tempfile::tempdir().unwrap();
    let enc = tiny_encoder(scratch.path(), seed, DType::F32, true);
    enc.save(dir).unwrap();
}

/// A tiny model directory of hidden size `hidden` (intermediate 2·hidden), as [`write_tiny_model`].
pub fn write_tiny_model_sized(dir: &Path, seed: u64, hidden: usize) {
    let scratch = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config_json();
    cfg["hidden_size"] = serde_json::json!(hidden);
    cfg["intermediate_size"] = serde_json::json!(2 * hidden);
    let enc = tiny_encoder_with(scratch.path(), seed, DType::F32, true, cfg);
    enc.save(dir).unwrap();
}
