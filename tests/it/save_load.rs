//! Save → load round trip in the sentence-transformers layout, and atomic replacement.

use crate::common::{self, tiny};
use embtune::encode::{encode, EncodeOptions};
use embtune::model::{ModelSpec, SentenceEncoder};
use serde_json::Value;

const TEXTS: [&str; 4] = [
    "a man is playing a flute .",
    "the cat sleeps",
    "",
    "a very long sentence about nothing in particular .",
];

fn local(dir: &std::path::Path) -> SentenceEncoder {
    SentenceEncoder::load(
        &ModelSpec {
            model: dir.to_str().unwrap().into(),
            ..Default::default()
        },
        &candle_core::Device::Cpu,
    )
    .unwrap()
}

#[test]
fn real_model_round_trip_gives_identical_embeddings_and_every_file() {
    let model = common::load_real();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("saved");
    model.save(&out).unwrap();
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
        "1_Pooling/config.json",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    assert!(out.join("2_Normalize").is_dir(), "missing 2_Normalize/");
    let modules: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("modules.json")).unwrap()).unwrap();
    let types: Vec<&str> = modules
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "sentence_transformers.models.Transformer",
            "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize"
        ]
    );
    let pool: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("1_Pooling/config.json")).unwrap())
            .unwrap();
    assert_eq!(pool["pooling_mode_mean_tokens"], true);
    assert_eq!(pool["pooling_mode"], "mean");
    let sb: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("sentence_bert_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sb["max_seq_length"], 256);

    // safetensors metadata {"format":"pt"} and HF names without prefix.
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(|s| s.as_str()),
        Some("pt")
    );
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st
        .names()
        .iter()
        .any(|n| *n == "encoder.layer.5.output.LayerNorm.weight"));
    assert!(
        st.names().iter().any(|n| *n == "pooler.dense.weight"),
        "pooler carried through"
    );

    let reloaded = local(&out);
    let opts = EncodeOptions::default();
    let a = encode(&model, &TEXTS, &opts).unwrap();
    let b = encode(&reloaded, &TEXTS, &opts).unwrap();
    assert_eq!(
        a.data, b.data,
        "reloaded model must give identical embeddings"
    );
}

#[test]
fn saving_over_an_existing_model_replaces_it_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    tiny::write_tiny_model(&out, 1);
    let first = std::fs::read(out.join("model.safetensors")).unwrap();
    tiny::write_tiny_model(&out, 2);
    let second = std::fs::read(out.join("model.safetensors")).unwrap();
    assert_ne!(first, second);
    // No temporary or moved-aside directories are left behind.
    let leftovers: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec!["m".to_string()]);
    let m = local(&out);
    let e = encode(&m, &TEXTS, &EncodeOptions::default()).unwrap();
    assert_eq!(e.dim, 32);
}

#[test]
fn plain_hf_directory_gets_mean_pooling_with_a_notice() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::real_model_dir();
    let dir = tmp.path().join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let m = local(&dir);
    assert!(
        m.notices.iter().any(|n| n.contains("mean pooling")),
        "{:?}",
        m.notices
    );
    assert_eq!(
        m.pooling.modes,
        vec![embtune::model::pooling::Pooling::Mean]
    );
    assert!(!m.normalize);
    // Without Normalize, mean-pooled embeddings are not unit length; with --normalize they are.
    let e = encode(&m, &TEXTS[..1], &EncodeOptions::default()).unwrap();
    let n: f32 = e.row(0).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() > 1e-3);
    let e = encode(
        &m,
        &TEXTS[..1],
        &EncodeOptions {
            normalize: true,
            ..Default::default()
        },
    )
    .unwrap();
    let n: f32 = e.row(0).iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((n - 1.0).abs() < 1e-5);
}

#[test]
fn pooling_and_max_seq_length_overrides_apply() {
    let mut spec = common::real_spec();
    spec.pooling = Some(vec![
        embtune::model::pooling::Pooling::Cls,
        embtune::model::pooling::Pooling::Max,
    ]);
    spec.max_seq_length = Some(8);
    let m = SentenceEncoder::load(&spec, &candle_core::Device::Cpu).unwrap();
    assert_eq!(m.dim(), 768);
    let e = encode(&m, &TEXTS, &EncodeOptions::default()).unwrap();
    assert_eq!(e.dim, 768);
    assert_eq!(e.truncated, 2, "two texts are longer than 8 tokens");
}

/// Inference loads read the word-embedding table a row at a time (`model::lazy_rows`): the real
/// model's embeddings of 64 STS-B sentences are bitwise those of an eager load, only the rows of
/// the tokens used were read, its linear weights are held transposed (the product's layout),
/// and saving the lazily loaded model writes every tensor — the whole table, the linears as
/// `[out, in]` — as the file had it.
#[test]
fn lazily_read_word_table_gives_the_same_embeddings_and_saves_whole() {
    let spec = common::real_spec();
    let eager = SentenceEncoder::load(&spec, &candle_core::Device::Cpu).unwrap();
    let lazy = SentenceEncoder::load_for_inference(&spec).unwrap();
    assert_eq!(eager.lazy_rows_read(), None);
    assert_eq!(
        lazy.lazy_rows_read(),
        Some((0, 30522)),
        "nothing read before a pass"
    );
    let rows: Vec<String> = std::fs::read_to_string(common::stsb("test"))
        .unwrap()
        .lines()
        .take(32)
        .flat_map(|l| {
            l.split('\t')
                .skip(5)
                .take(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    let texts: Vec<&str> = rows.iter().map(|s| s.as_str()).collect();
    let opts = EncodeOptions {
        batch_size: 16,
        ..Default::default()
    };
    let a = encode(&eager, &texts, &opts).unwrap();
    let b = encode(&lazy, &texts, &opts).unwrap();
    assert_eq!(a.data, b.data, "lazy rows changed the embeddings");
    // 6 layers × (q, k, v, attention output, up, down), held as the product reads them.
    assert_eq!(
        (eager.transposed_linears(), lazy.transposed_linears()),
        (0, 36)
    );
    let (read, total) = lazy.lazy_rows_read().unwrap();
    assert!(
        read > 50 && read < total / 20,
        "{read} of {total} rows read"
    );
    let tmp = tempfile::tempdir().unwrap();
    lazy.save(tmp.path()).unwrap();
    let table = |dir: &std::path::Path| {
        let t = candle_core::safetensors::load(
            dir.join("model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let (_, w) = t
            .into_iter()
            .find(|(n, _)| n.ends_with("word_embeddings.weight"))
            .unwrap();
        w.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(table(tmp.path()), table(&common::real_model_dir()));
    assert_eq!(lazy.lazy_rows_read(), Some((total, total)));
    // Every parameter is saved as the checkpoint has it (the transposed linears back as
    // [out, in]); the checkpoint's i64 `position_ids` buffer is dropped by design.
    let all = |dir: &std::path::Path| {
        candle_core::safetensors::load(dir.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap()
            .into_iter()
            .filter(|(_, t)| t.dtype() == candle_core::DType::F32)
            .map(|(n, t)| {
                let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (n, (t.dims().to_vec(), v))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (saved, original) = (all(tmp.path()), all(&common::real_model_dir()));
    assert_eq!(
        saved.keys().collect::<Vec<_>>(),
        original.keys().collect::<Vec<_>>()
    );
    for (name, s) in &saved {
        assert!(s == &original[name], "{name} saved differently");
    }
}

/// Every family's fixture loads its word table lazily (BERT-like `word_embeddings`,
/// ModernBERT's `tok_embeddings`) and its linear weights transposed for inference, and embeds
/// bitwise as an eager load.
#[test]
fn every_family_reads_its_word_table_lazily_with_the_same_embeddings() {
    let texts = [
        "a short one",
        "the second text is a bit longer than the first",
        "x",
    ];
    for family in crate::families::FAMILIES {
        let spec = ModelSpec {
            model: crate::families::fixture_model(family)
                .to_string_lossy()
                .into_owned(),
            ..Default::default()
        };
        let eager = SentenceEncoder::load(&spec, &candle_core::Device::Cpu).unwrap();
        let lazy = SentenceEncoder::load_for_inference(&spec).unwrap();
        let opts = EncodeOptions::default();
        let a = encode(&eager, &texts, &opts).unwrap();
        let b = encode(&lazy, &texts, &opts).unwrap();
        assert_eq!(a.data, b.data, "{family}: lazy rows changed the embeddings");
        assert!(
            lazy.transposed_linears() > 0 && eager.transposed_linears() == 0,
            "{family}: inference load holds {} linears transposed",
            lazy.transposed_linears()
        );
        let (read, total) = lazy.lazy_rows_read().expect(family);
        assert!(
            read > 0 && read < total,
            "{family}: {read} of {total} rows read"
        );
    }
}
