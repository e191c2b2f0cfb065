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
        model.bert.set_compute_dtype(dt);
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

/// `bench train` runs the real loop for warm-up + timed steps and reports what it timed;
/// `bench encode` embeds exactly n texts. Speed is not asserted (benchmarks, not tests).
#[test]
fn bench_commands_report_what_they_timed() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 3);
    let data = common::repo_root().join("data/stsbenchmark/sts-train.csv");
    for loss in ["mnrl", "cosent"] {
        let out = embtune(&[
            "bench",
            "train",
            "--model",
            m.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--loss",
            loss,
            "--batch-size",
            "8",
            "--steps",
            "4",
            "--device",
            "cpu",
        ]);
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

/// Unique STS-B sentences: first occurrence kept, in file order.
#[test]
fn unique_stsb_sentences_drop_repeats() {
    let p = common::repo_root().join("data/stsbenchmark/sts-test.csv");
    let u = embtune::data::read_unique_stsb_sentences(&p).unwrap();
    let set: std::collections::HashSet<&String> = u.iter().collect();
    assert_eq!(set.len(), u.len());
    assert!(u.len() > 2000 && u.len() < 2 * 1379, "{}", u.len());
}
