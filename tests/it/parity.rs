//! Parity with Python sentence-transformers on the real model and data (../shared/reference).

use crate::common::{self, embtune};
use embtune::encode::{encode, EncodeOptions};
use serde_json::Value;

fn reference(name: &str) -> Value {
    let p = common::shared().join("reference").join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Token ids identical and every embedding component within 1e-5 of sentence-transformers
/// (first 16 sentence1 of STS-B test, max_seq_length 256, mean pooling + Normalize).
#[test]
fn embeddings_and_token_ids_match_sentence_transformers() {
    let r = reference("embed_reference.json");
    let model = common::load_real();
    assert_eq!(
        model.tokenizer.max_seq_length(),
        r["max_seq_length"].as_u64().unwrap() as usize
    );
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 16);
    let texts: Vec<&str> = items
        .iter()
        .map(|i| i["sentence"].as_str().unwrap())
        .collect();
    let toks = model.tokenizer.tokenize(&texts).unwrap();
    for (item, tok) in items.iter().zip(&toks) {
        let want: Vec<u32> = item["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tok.ids, want, "token ids of {:?}", item["sentence"]);
    }
    // Batch of 8 so that padding and length sorting are exercised.
    let emb = encode(
        &model,
        &texts,
        &EncodeOptions {
            batch_size: 8,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(emb.dim, 384);
    let mut worst = 0f64;
    for (i, item) in items.iter().enumerate() {
        let want: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (a, b) in emb.row(i).iter().zip(&want) {
            worst = worst.max((*a as f64 - b).abs());
        }
    }
    eprintln!("embedding parity: max abs difference {worst:e} over 16 × 384 components");
    assert!(worst <= 1e-5, "max abs difference {worst:e} > 1e-5");
}

/// `embtune eval` on STS-B test with the Hub id, offline: spearman_cosine 82.03 ± 0.02.
#[test]
fn stsb_test_spearman_matches_reference() {
    let base = reference("cpu_base_eval.json");
    let want = base["metrics"]["stsb_test"]["spearman"].as_f64().unwrap();
    let data = common::stsb("test");
    let out = embtune(&[
        "eval",
        "--model",
        common::REAL_MODEL,
        "--data",
        data.to_str().unwrap(),
        "--format",
        "stsb",
        "--task",
        "sts",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = m["spearman_cosine"].as_f64().unwrap();
    assert!((got - 82.03).abs() <= 0.02, "spearman_cosine {got}");
    assert!(
        (got - want).abs() <= 0.02,
        "spearman_cosine {got} vs reference {want}"
    );
    let pearson = m["pearson_cosine"].as_f64().unwrap();
    let want_p = base["metrics"]["stsb_test"]["pearson"].as_f64().unwrap();
    assert!(
        (pearson - want_p).abs() <= 0.02,
        "pearson_cosine {pearson} vs {want_p}"
    );
    assert_eq!(m["primary_metric"], "spearman_cosine");
}
