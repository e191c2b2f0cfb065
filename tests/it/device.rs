//! Device and precision selection, mixed precision on the real model, and the `bench` /
//! `check-device` commands (on this CPU-only build; scripts/gpu-check.sh runs them on a GPU).

use crate::common::{self, assert_one_line_error, embtune, tiny};
use candle_core::DType;
use embtune::encode::{encode, EncodeOptions};

/// bf16 and f16 compute (weights cast on the fly, LayerNorm/softmax in f32, f32 output) stays
/// within 1e-2 of f32 on the real model — and really computes in half precision (not equal).
#[test]
fn half_precision_compute_stays_close_to_f32_on_the_real_model() {
    let mut model = common::load_real();
    let texts = [
        "A man is playing a guitar.",
        "A woman is slicing an onion into thin rings on a wooden board.",
        "Three dogs run across a snowy field",
        "The stock market fell sharply on Monday after the announcement.",
    ];
    let opts = EncodeOptions::default();
    let f32e = encode(&model, &texts, &opts).unwrap();
    for dt in [DType::BF16, DType::F16] {
        model.set_compute_dtype(dt);
        let h = encode(&model, &texts, &opts).unwrap();
        let d = f32e
            .data
            .iter()
            .zip(&h.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-2, "{dt:?}: max abs diff {d}");
        assert!(
            d > 1e-5,
            "{dt:?}: identical to f32 ({d}): no half precision compute?"
        );
        assert!(h.data.iter().all(|x| x.is_finite()));
    }
}

#[test]
fn cuda_device_on_a_cpu_build_is_a_clear_error() {
    if embtune::device::CUDA_BUILT {
        return; // this test is about CPU-only builds; gpu-check.sh covers CUDA builds
    }
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "hello\nworld\n").unwrap();
    let out = embtune(&[
        "embed",
        "--model",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("o.npy").to_str().unwrap(),
        "--device",
        "cuda:1",
    ]);
    assert_one_line_error(
        &out,
        &["cuda:1", "built without CUDA support", "--features cuda"],
    );
    let out = embtune(&[
        "check-device",
        "--model",
        m.to_str().unwrap(),
        "--device",
        "cuda",
    ]);
    assert_one_line_error(&out, &["built without CUDA support"]);
    let out = embtune(&[
        "embed",
        "--model",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("o.npy").to_str().unwrap(),
        "--device",
        "tpu",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected cpu, cuda, cuda:<index> or auto")
    );
}

#[test]
fn half_precision_on_the_cpu_is_refused_with_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let out = embtune(&[
        "embed",
        "--model",
        m.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        tmp.path().join("o.npy").to_str().unwrap(),
        "--device",
        "cpu",
        "--dtype",
        "bf16",
    ]);
    assert_one_line_error(&out, &["--dtype", "needs a CUDA device", "--dtype f32"]);
}

/// `bench train` on `model` and `data` at batch 8, 4 timed steps, on the CPU.
fn bench_train_args<'a>(model: &'a std::path::Path, data: &'a std::path::Path) -> Vec<&'a str> {
    vec![
        "bench",
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "8",
        "--steps",
        "4",
        "--device",
        "cpu",
    ]
}

/// `bench train` runs the real loop for warm-up + timed steps and reports what it timed;
/// `bench encode` embeds exactly n texts. Speed is not asserted (benchmarks, not tests).
#[test]
fn bench_commands_report_what_they_timed() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 3);
    let data = common::repo_root().join("data/stsbenchmark/sts-train.csv");
    for loss in ["mnrl", "cosent"] {
        let mut args = bench_train_args(&m, &data);
        args.extend_from_slice(&["--loss", loss]);
        let out = embtune(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["job"], "train");
        assert_eq!(v["loss"], loss);
        assert_eq!(v["steps"], 4);
        assert_eq!(v["examples"], 32);
        assert!(v["pairs_per_sec"].as_f64().unwrap() > 0.0);
        assert!(v["last_loss"].as_f64().unwrap().is_finite());
    }
    let out = embtune(&[
        "bench",
        "encode",
        "--model",
        m.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--batch-size",
        "16",
        "--n",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sentences"], 100);
    assert!(v["device"].as_str().unwrap().starts_with("cpu"));
}

/// `bench train --phases` adds per-phase times of the timed steps (each phase a part of the
/// step, finished after it was issued) without changing the training itself; plain runs have
/// no phases, and other jobs refuse the flag.
#[test]
fn bench_train_phases_split_the_step_without_changing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 3);
    let data = common::repo_root().join("data/stsbenchmark/sts-train.csv");
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = bench_train_args(&m, &data);
        args.extend_from_slice(extra);
        let out = embtune(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let plain = run(&[]);
    let phased = run(&["--phases"]);
    assert!(plain.get("phases").is_none(), "{plain}");
    assert!(plain.get("cuda").is_none(), "{plain}");
    assert_eq!(plain["first_loss"], phased["first_loss"]);
    assert_eq!(plain["last_loss"], phased["last_loss"]);
    let ph = &phased["phases"];
    assert_eq!(ph["steps"], 4);
    let names: Vec<&str> = ph["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "batch",
            "forward",
            "loss",
            "backward",
            "accumulate",
            "optimizer"
        ]
    );
    let mut sum = 0.0;
    for p in ph["phases"].as_array().unwrap() {
        let (issue, fin) = (
            p["issue_ms"].as_f64().unwrap(),
            p["finished_ms"].as_f64().unwrap(),
        );
        assert!(issue >= 0.0 && fin >= issue, "{p}");
        sum += fin;
    }
    for p in &ph["phases"].as_array().unwrap()[1..4] {
        assert!(p["finished_ms"].as_f64().unwrap() > 0.0, "{p}");
    }
    let step_ms = phased["seconds"].as_f64().unwrap() * 1e3 / 4.0;
    assert!(
        sum <= step_ms * 1.001,
        "phases {sum} ms > step {step_ms} ms"
    );
    let out = embtune(&[
        "bench",
        "encode",
        "--model",
        m.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--phases",
    ]);
    assert_one_line_error(&out, &["--phases", "bench train"]);
}

/// The device check's harness with the CPU as the device under test (a GPU run is
/// scripts/gpu-check.sh): the model under test takes the CUDA path's ops (fused LayerNorm,
/// attention softmax + dropout, bias + GELU, bias + dropout + residual + LayerNorm, with
/// their backwards) on the CPU, and
/// every check passes against the CPU fast path — embeddings, six losses and their gradients,
/// dropout masks, gradient norm, AdamW steps — and its packed passes (the variable-length
/// attention's kernel loops) equal its padded ones.
#[test]
fn device_check_harness_runs_every_check() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 5);
    let spec = embtune::model::ModelSpec {
        model: m.to_str().unwrap().into(),
        ..Default::default()
    };
    let data = common::repo_root().join("data/stsbenchmark/sts-train.csv");
    let rows = embtune::devcheck::compare(&spec, &candle_core::Device::Cpu, &data).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    for want in [
        "embeddings f32",
        "embeddings bf16",
        "loss cosent",
        "gradients triplet",
        "dropout seeded on device",
        "dropout masks CPU = device",
        "gradient norm (relative)",
        "weights after 3 AdamW steps",
        "packed = padded embeddings",
        "packed = padded gradients",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    println!("{}", embtune::devcheck::to_text(&rows));
    for r in &rows {
        assert!(r.pass, "{r:?}");
    }
    // Two different op paths: close, not the same code (else the check proves nothing).
    let f32_diff = rows
        .iter()
        .find(|r| r.name == "embeddings f32")
        .unwrap()
        .value;
    assert!(f32_diff > 0.0 && f32_diff < 1e-5, "{f32_diff}");
    assert!(embtune::devcheck::to_text(&rows).lines().count() == rows.len() + 1);
}

/// One encoder pass over all text columns (what training does on a GPU) gives each column the
/// embeddings and the gradients of separate passes — with columns of different lengths, so the
/// joint batch pads one of them further.
#[test]
fn joint_forward_of_columns_equals_separate_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut enc = tiny::tiny_encoder(tmp.path(), 11, DType::F32, true);
    enc.set_dropout(0.0);
    let a = ["a short one", "two", "the third text is a bit longer", "x"];
    let b = [
        "a much longer second column text with many words in it",
        "b",
        "c d e",
        "y z",
    ];
    let tok = |t: &[&str]| enc.tokenizer.tokenize(t).unwrap();
    let (ta, tb) = (tok(&a), tok(&b));
    let ids: Vec<Vec<&[u32]>> = [&ta, &tb]
        .iter()
        .map(|t| t.iter().map(|x| x.ids.as_slice()).collect())
        .collect();
    let dev = candle_core::Device::Cpu;
    let labels = candle_core::Tensor::new(&[0.9f32, 0.1, 0.5, 0.3], &dev).unwrap();
    let loss = embtune::loss::build(
        embtune::loss::LossKind::Cosent,
        &embtune::loss::LossParams::default(),
    );
    let run = |joint: bool| {
        let batches = enc.column_batches(&ids, &[], joint, &dev).unwrap();
        assert_eq!(batches.batches.len(), if joint { 1 } else { 2 });
        let embs = enc.embed_columns(&batches, true).unwrap();
        let l = loss.compute(&embs, Some(&labels)).unwrap();
        let g = l.backward().unwrap();
        let grads: Vec<Vec<f32>> = enc
            .named_vars()
            .iter()
            .map(|(_, v)| {
                g.get(v.as_tensor())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        let e: Vec<Vec<f32>> = embs
            .iter()
            .map(|e| e.flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        (e, l.to_scalar::<f32>().unwrap(), grads)
    };
    let (es, ls, gs) = run(false);
    let (ej, lj, gj) = run(true);
    let maxd = |x: &[f32], y: &[f32]| {
        assert_eq!(x.len(), y.len());
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max)
    };
    for (x, y) in es.iter().zip(&ej) {
        assert!(maxd(x, y) < 1e-5, "embeddings differ by {}", maxd(x, y));
    }
    assert!((ls - lj).abs() < 1e-5, "{ls} vs {lj}");
    let gmax = gs.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    assert!(gmax > 0.0);
    for (x, y) in gs.iter().zip(&gj) {
        assert!(
            maxd(x, y) < 1e-5 * gmax.max(1.0),
            "gradients differ by {}",
            maxd(x, y)
        );
    }
}

/// The training loop with the joint pass forced on (EMBTUNE_JOINT_FORWARD=1; the GPU default
/// when it pads little)
/// trains as the per-column passes do: same losses with dropout off (and, with dropout on,
/// other masks — so the joint pass did run).
#[test]
fn training_with_a_joint_forward_matches_per_column_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 4);
    let data = common::scored_pairs_tsv(tmp.path(), 48);
    let losses = |joint: &str, dropout: &str| -> Vec<f64> {
        let out_dir = tmp.path().join(format!("o{joint}-{dropout}"));
        let out = common::embtune_cmd_offline()
            .env("EMBTUNE_JOINT_FORWARD", joint)
            .args([
                "train",
                "--model",
                m.to_str().unwrap(),
                "--data",
                data.to_str().unwrap(),
                "--loss",
                "cosent",
                "--batch-size",
                "8",
                "--max-steps",
                "4",
                "--log-steps",
                "1",
                "--dropout",
                dropout,
                "--device",
                "cpu",
                "--output",
                out_dir.to_str().unwrap(),
                "-q",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(out_dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
            .collect()
    };
    let (sep, joint) = (losses("0", "0"), losses("1", "0"));
    assert_eq!(sep.len(), 4);
    assert_eq!(joint.len(), 4);
    for (a, b) in sep.iter().zip(&joint) {
        assert!((a - b).abs() < 1e-5, "{sep:?} vs {joint:?}");
    }
    assert!(sep.windows(2).any(|w| w[0] != w[1]), "{sep:?}");
    // With dropout the passes draw different masks: the joint one really ran.
    let (sep, joint) = (losses("0", "0.1"), losses("1", "0.1"));
    assert!(
        sep.iter().zip(&joint).any(|(a, b)| (a - b).abs() > 1e-6),
        "{sep:?} vs {joint:?}"
    );
}

/// Unique STS-B sentences: first occurrence kept, in file order.
#[test]
fn unique_stsb_sentences_drop_repeats() {
    let p = common::repo_root().join("data/stsbenchmark/sts-test.csv");
    let u = embtune::data::read_unique_stsb_sentences(&p).unwrap();
    let set: std::collections::HashSet<&String> = u.iter().collect();
    assert_eq!(set.len(), u.len());
    assert!(u.len() > 2000 && u.len() < 2 * 1379, "{}", u.len());
}
