//! Prompts (sentence-transformers ≥ 3 semantics): against what sentence-transformers 6.2 made of
//! them on the fixture models (tests/fixtures/prompts/, scripts/make-prompt-reference.py: mean and
//! CLS pooling, include_prompt true and false, WordPiece and SentencePiece tokenizers), a prompt
//! is exactly the prepended text, the model's default prompt is applied and can be turned off,
//! names resolve (and unknown ones are one-line errors), retrieval evaluation takes the model's
//! query / document prompts.

use crate::common::{assert_one_line_error, copy_dir, embtune};
use crate::families::fixture_model;
use embtune::encode::{encode, EncodeOptions};
use embtune::model::pooling::Pooling;
use embtune::model::{ModelSpec, SentenceEncoder};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn load(dir: &Path, pooling: Option<Pooling>) -> SentenceEncoder {
    let spec = ModelSpec {
        model: s(dir).to_string(),
        pooling: pooling.map(|p| vec![p]),
        ..Default::default()
    };
    SentenceEncoder::load(&spec, &candle_core::Device::Cpu).unwrap()
}

fn with_prompt(prompt: &str) -> EncodeOptions {
    EncodeOptions {
        batch_size: 3,
        prompt: Some(prompt.to_string()),
        ..Default::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every case of the reference: embeddings within 1e-5 of sentence-transformers', and the same
/// prompt length; include_prompt false changes the embedding (the exclusion is not a no-op).
#[test]
fn prompts_embed_as_sentence_transformers_does() {
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::families::fixture("prompts").join("reference.json"))
            .unwrap(),
    )
    .unwrap();
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    let tmp = tempfile::tempdir().unwrap();
    for (i, c) in cases.iter().enumerate() {
        let family = c["family"].as_str().unwrap();
        let pooling = Pooling::from_name(c["pooling"].as_str().unwrap()).unwrap();
        let include = c["include_prompt"].as_bool().unwrap();
        let prompt = c["prompt"].as_str().unwrap();
        let m = tmp.path().join(format!("m{i}"));
        copy_dir(&fixture_model(family), &m);
        let pc = m.join("1_Pooling/config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&pc).unwrap()).unwrap();
        cfg["include_prompt"] = serde_json::json!(include);
        std::fs::write(&pc, cfg.to_string()).unwrap();
        let model = load(&m, Some(pooling));
        assert_eq!(model.pooling.include_prompt, include);
        assert_eq!(
            embtune::model::prompts::prompt_length(&model.tokenizer, prompt).unwrap(),
            c["prompt_length"].as_u64().unwrap() as usize,
            "{family} {prompt:?}"
        );
        let texts: Vec<&str> = c["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let got = encode(&model, &texts, &with_prompt(prompt)).unwrap();
        let want: Vec<f32> = c["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
            })
            .collect();
        let d = max_abs_diff(&got.data, &want);
        assert!(
            d <= 1e-5,
            "{family} {pooling:?} include_prompt={include} {prompt:?}: {d}"
        );
        if !include {
            let mut all = model;
            all.pooling.include_prompt = true;
            let with = encode(&all, &texts, &with_prompt(prompt)).unwrap();
            assert!(
                max_abs_diff(&with.data, &got.data) > 1e-3,
                "{family} {pooling:?}: leaving the prompt out of pooling changed nothing"
            );
        }
    }
}

/// With include_prompt true a prompt is exactly the text prepended (bit for bit), and an empty
/// prompt is none.
#[test]
fn a_prompt_is_the_prepended_text() {
    for family in ["bert", "xlm-roberta"] {
        let model = load(&fixture_model(family), None);
        let texts = ["A man is playing a guitar.", "Le chat dort.", "short"];
        let joined: Vec<String> = texts.iter().map(|t| format!("query: {t}")).collect();
        let refs: Vec<&str> = joined.iter().map(String::as_str).collect();
        let a = encode(&model, &texts, &with_prompt("query: ")).unwrap();
        let b = encode(&model, &refs, &with_prompt("")).unwrap();
        assert_eq!(a.data, b.data, "{family}");
        let plain = encode(&model, &texts, &EncodeOptions::default()).unwrap();
        let none = encode(&model, &texts, &with_prompt("")).unwrap();
        assert_eq!(plain.data, none.data);
        assert!(max_abs_diff(&plain.data, &a.data) > 1e-3);
    }
}

/// A model folder with prompts {query, passage} in its config_sentence_transformers.json.
fn prompted_model(dir: &Path, default: Option<&str>) {
    copy_dir(&fixture_model("bert"), dir);
    std::fs::write(
        dir.join("config_sentence_transformers.json"),
        serde_json::json!({
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": default,
            "similarity_fn_name": "cosine",
        })
        .to_string(),
    )
    .unwrap();
}

fn embed(model: &Path, input: &Path, out: &Path, extra: &[&str]) -> (Vec<u8>, String) {
    let mut args = vec!["embed", "-m", s(model), "-d", s(input), "-o", s(out)];
    args.extend_from_slice(extra);
    let r = embtune(&args);
    let err = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{args:?}: {err}");
    (std::fs::read(out).unwrap(), err)
}

/// `embed` applies the model's default prompt (and says so), `--prompt ""` turns it off,
/// `--prompt-name` picks one; each equals the same text given with `--prompt`.
#[test]
fn the_default_prompt_is_applied_and_names_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let (with_default, no_default) = (tmp.path().join("d"), tmp.path().join("n"));
    prompted_model(&with_default, Some("query"));
    prompted_model(&no_default, None);
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "A man is playing a guitar.\nThe cat sleeps.\n").unwrap();
    let o = |n: &str| tmp.path().join(n);
    let plain = embed(&fixture_model("bert"), &input, &o("plain.npy"), &[]).0;
    let (default, note) = embed(&with_default, &input, &o("default.npy"), &[]);
    assert!(note.contains("default prompt \"query\""), "{note}");
    let given = embed(
        &no_default,
        &input,
        &o("given.npy"),
        &["--prompt", "query: "],
    )
    .0;
    assert_eq!(
        default, given,
        "the default prompt is not the prompt given by hand"
    );
    assert_ne!(default, plain);
    let off = embed(&with_default, &input, &o("off.npy"), &["--prompt", ""]).0;
    assert_eq!(
        off, plain,
        "--prompt \"\" did not turn the default prompt off"
    );
    let named = embed(
        &with_default,
        &input,
        &o("named.npy"),
        &["--prompt-name", "passage"],
    )
    .0;
    let by_hand = embed(
        &no_default,
        &input,
        &o("hand.npy"),
        &["--prompt", "passage: "],
    )
    .0;
    assert_eq!(named, by_hand);
    // A model without a default prompt embeds the texts as given.
    assert_eq!(embed(&no_default, &input, &o("nd.npy"), &[]).0, plain);

    let bad = embtune(&[
        "embed",
        "-m",
        s(&no_default),
        "-d",
        s(&input),
        "-o",
        s(&o("x.npy")),
        "--prompt-name",
        "qeury",
    ]);
    assert_one_line_error(&bad, &["--prompt-name", "qeury", "passage, query"]);
    let both = embtune(&[
        "embed",
        "-m",
        s(&no_default),
        "-d",
        s(&input),
        "-o",
        s(&o("x.npy")),
        "--prompt",
        "a",
        "--prompt-name",
        "query",
    ]);
    assert!(!both.status.success());
    // A default prompt name that names no prompt: refused at load, naming the file and field.
    let broken = tmp.path().join("broken");
    prompted_model(&broken, Some("search"));
    let e = embtune(&[
        "embed",
        "-m",
        s(&broken),
        "-d",
        s(&input),
        "-o",
        s(&o("x.npy")),
    ]);
    assert_one_line_error(
        &e,
        &[
            "config_sentence_transformers.json",
            "default_prompt_name",
            "\"search\"",
        ],
    );
}

/// `similarity`: pair mode takes --prompt; search mode gives the query the model's query prompt
/// and the corpus its passage prompt, unless told otherwise.
#[test]
fn similarity_applies_query_and_document_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    prompted_model(&m, None);
    let plain = fixture_model("bert");
    let corpus = tmp.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "The cat sleeps.\nA man plays guitar.\nStocks fell.\n",
    )
    .unwrap();
    let run = |model: &Path, extra: &[&str]| -> serde_json::Value {
        let mut a = vec!["similarity", "-m", s(model), "--json"];
        a.extend_from_slice(extra);
        let r = embtune(&a);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        serde_json::from_slice(&r.stdout).unwrap()
    };
    let search = ["--query", "guitar music", "--corpus", s(&corpus)];
    let auto = run(&m, &search);
    let mut explicit = search.to_vec();
    explicit.extend(["--prompt", "query: ", "--document-prompt", "passage: "]);
    assert_eq!(auto, run(&plain, &explicit));
    let mut off = search.to_vec();
    off.extend(["--prompt", "", "--document-prompt", ""]);
    assert_eq!(run(&m, &off), run(&plain, &search));
    assert_ne!(auto, run(&plain, &search));
    let pair = |model: &Path, extra: &[&str]| {
        let mut a = vec!["a cat", "a dog"];
        a.extend_from_slice(extra);
        run(model, &a)["cosine"].as_f64().unwrap()
    };
    assert_eq!(
        pair(&m, &["--prompt-name", "query"]),
        pair(&plain, &["--prompt", "query: "])
    );
    assert_ne!(pair(&plain, &["--prompt", "query: "]), pair(&plain, &[]));
}
