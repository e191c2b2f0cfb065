//! The real all-mpnet-base-v2 (MPNet: relative position bias, RoBERTa-style positions), from the
//! Hub cache through the project's fetch script, against sentence-transformers
//! (tests/fixtures/real-mpnet/, made by scripts/make-real-reference.py): token ids, embeddings
//! ≤ 1e-5, gradients; one training step; embed and similarity through the binary. (Its STS-B
//! score and a full epoch are in scripts/mpnet-parity.sh: ~8× MiniLM's cost per token.)

use crate::common::{self, embtune};
use candle_core::{DType, Device, Tensor};
use embtune::encode::{encode, EncodeOptions};
use embtune::model::{ModelSpec, SentenceEncoder};

pub const MPNET: &str = "sentence-transformers/all-mpnet-base-v2";

fn spec() -> ModelSpec {
    common::ensure_real_model();
    let mut spec = ModelSpec {
        model: MPNET.into(),
        ..Default::default()
    };
    spec.hub.offline = true;
    spec
}

fn reference() -> (Vec<String>, std::collections::HashMap<String, Tensor>) {
    let dir = common::repo_root().join("tests/fixtures/real-mpnet");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let texts = meta["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let t =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    (texts, t)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

#[test]
fn real_mpnet_matches_sentence_transformers() {
    let model = SentenceEncoder::load(&spec(), &Device::Cpu).unwrap();
    assert_eq!(model.family(), "mpnet");
    assert_eq!(model.tokenizer.max_seq_length(), 384);
    assert!(model.normalize);
    let (texts, r) = reference();
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let batch = model.tokenizer.encode(&refs, &Device::Cpu).unwrap();
    let want = r["input_ids"].to_dtype(DType::U32).unwrap();
    assert_eq!(
        batch.input_ids.to_vec2::<u32>().unwrap(),
        want.to_vec2::<u32>().unwrap()
    );
    // Through `encode` (length-sorted batches of 8, as embed does).
    let opts = EncodeOptions {
        batch_size: 8,
        ..Default::default()
    };
    let e = encode(&model, &refs, &opts).unwrap();
    let got = Tensor::from_vec(e.data.clone(), (refs.len(), e.dim), &Device::Cpu).unwrap();
    let d = max_diff(&got, &r["embeddings"]);
    eprintln!("all-mpnet-base-v2: embeddings max abs diff {d:.2e}");
    assert!(d <= 1e-5, "{d:e}");
    // Gradients of sum(embeddings · weights) in eval mode.
    let emb = model.embed_batch(&batch, false).unwrap();
    let grads = (emb * &r["weights"])
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let vars: std::collections::HashMap<String, candle_core::Var> =
        model.named_vars().into_iter().collect();
    for (k, want) in &r {
        let (name, rows) = match (k.strip_prefix("grad."), k.strip_prefix("grad_rows.")) {
            (Some(n), _) => (n, None),
            (_, Some(n)) => (n, Some(&r["grad_row_ids"])),
            _ => continue,
        };
        let mut g = grads.get(vars[name].as_tensor()).unwrap().clone();
        if let Some(ids) = rows {
            g = g
                .index_select(&ids.to_dtype(DType::U32).unwrap(), 0)
                .unwrap();
        }
        let scale = want
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let d = max_diff(&g, want);
        eprintln!("gradient {name}: max abs diff {d:.2e} (max |grad| {scale:.2e})");
        assert!(d <= 1e-4 * scale.max(1.0), "{name}: {d:e}");
    }
    // Every trainable parameter gets a gradient.
    for (name, v) in model.named_vars() {
        assert!(grads.get(v.as_tensor()).is_some(), "{name}: no gradient");
    }
}

/// One CoSENT step on the real model: finite loss, weights move; then embed and similarity run
/// through the binary on the Hub id.
#[test]
fn real_mpnet_trains_one_step_and_runs_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d.tsv");
    std::fs::write(
        &data,
        "sentence1\tsentence2\tscore\na man is playing a guitar.\ta man plays the guitar.\t0.9\nthe cat sits on the mat.\ta dog runs in the park.\t0.1\nthree dogs run in the snow.\tdogs are running through snow.\t0.8\nthe market fell on monday.\ta woman slices an onion.\t0.0\n",
    )
    .unwrap();
    let cfg = embtune::train::TrainConfig {
        model: spec(),
        data: data.clone(),
        loss: embtune::loss::LossKind::Cosent,
        batch_size: 4,
        max_steps: Some(1),
        warmup_ratio: 0.0,
        output: tmp.path().join("out"),
        progress: false,
        ..Default::default()
    };
    let before = SentenceEncoder::load(&spec(), &Device::Cpu).unwrap();
    let (report, trained) = embtune::train::train(&cfg).unwrap();
    assert!(report.last_loss.is_some_and(f64::is_finite));
    let moved = trained
        .named_vars()
        .iter()
        .zip(before.named_vars())
        .map(|((_, a), (_, b))| max_diff(a.as_tensor(), b.as_tensor()))
        .fold(0f32, f32::max);
    assert!(moved > 1e-6, "one step moved nothing ({moved})");
    let input = tmp.path().join("in.txt");
    std::fs::write(
        &input,
        "A man is playing a guitar.\nA woman is slicing an onion.\n",
    )
    .unwrap();
    let out = tmp.path().join("e.npy");
    let r = embtune(&[
        "embed",
        "-m",
        MPNET,
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len() % 4, 0);
    assert!(bytes.len() >= 2 * 768 * 4, "2 × 768 floats");
    let s = embtune(&[
        "similarity",
        "-m",
        MPNET,
        "A man is playing a guitar.",
        "A man plays the guitar.",
        "--json",
    ]);
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert!(v["cosine"].as_f64().unwrap() > 0.8, "{v}");
    // eval on the four scored pairs: the two similar pairs rank above the two unrelated ones.
    let e = embtune(&[
        "eval",
        "-m",
        MPNET,
        "--data",
        data.to_str().unwrap(),
        "--task",
        "sts",
        "--json",
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    assert!(v["spearman_cosine"].as_f64().unwrap() > 50.0, "{v}");
    // Hard negatives mined with mpnet: each anchor gets one, never its own positive.
    let pairs = tmp.path().join("p.tsv");
    std::fs::write(&pairs, "anchor\tpositive\na man is playing a guitar.\ta man plays the guitar.\nthe cat sits on the mat.\ta cat is sitting on a rug.\nthree dogs run in the snow.\tdogs are running through snow.\nthe market fell on monday.\tstocks dropped on monday.\n").unwrap();
    let mined = tmp.path().join("m.jsonl");
    let p = embtune(&[
        "pairs",
        "-d",
        pairs.to_str().unwrap(),
        "--from",
        "pairs",
        "--mine",
        "-m",
        MPNET,
        "--num-negatives",
        "1",
        "-o",
        mined.to_str().unwrap(),
    ]);
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&mined)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in &rows {
        assert_ne!(r["negative"], r["positive"], "{r}");
    }
}
