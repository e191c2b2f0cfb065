//! Trainer parity with sentence-transformers' own trainer (the recipes issue): 20 CoSENT steps
//! on all-MiniLM-L6-v2, the first 320 STS-B train rows in file order, dropout off, the Python
//! trainer's settings (tests/fixtures/trainer/cosent-20.json, made by
//! scripts/make-trainer-reference.py with SentenceTransformerTrainer and a sequential batch
//! sampler). Every tensor's 64 sampled weights must end within 1e-5 of Python's — while the
//! steps move them by far more than that.

use crate::common::{embtune, stsb};
use candle_core::Device;
use serde_json::Value;

#[test]
fn twenty_cosent_steps_end_where_the_python_trainer_ends() {
    let fixture = crate::common::repo_root().join("tests/fixtures/trainer/cosent-20.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let d = &r["trainer_defaults"];
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let wd = d["weight_decay"].as_f64().unwrap().to_string();
    let clip = d["max_grad_norm"].as_f64().unwrap().to_string();
    let train = stsb("train");
    let args = [
        "train",
        "-m",
        "sentence-transformers/all-MiniLM-L6-v2",
        "-d",
        train.to_str().unwrap(),
        "--format",
        "stsb",
        "--loss",
        "cosent",
        "--batch-size",
        "16",
        "--max-steps",
        "20",
        "--lr",
        "2e-5",
        "--warmup-ratio",
        "0.1",
        "--max-seq-length",
        "128",
        "--no-shuffle",
        "--dropout",
        "0",
        "--weight-decay",
        &wd,
        "--max-grad-norm",
        &clip,
        "--seed",
        "42",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ];
    let o = embtune(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ours = candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
    let (mut worst, mut worst_name, mut moved, mut compared) = (0f64, String::new(), 0f64, 0);
    for (name, t) in r["tensors"].as_object().unwrap() {
        let w = ours
            .get(name)
            .unwrap_or_else(|| panic!("{name}: not in our saved model"))
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        assert_eq!(w.len() as u64, t["numel"].as_u64().unwrap(), "{name}");
        let pos = t["positions"].as_array().unwrap();
        for (k, p) in pos.iter().enumerate() {
            let i = p.as_u64().unwrap() as usize;
            let st = t["after"][k].as_f64().unwrap();
            let diff = (w[i] - st).abs();
            if diff > worst {
                worst = diff;
                worst_name = format!("{name}[{i}]");
            }
            moved = moved.max((st - t["before"][k].as_f64().unwrap()).abs());
            compared += 1;
        }
    }
    eprintln!("trainer parity: {compared} weights, largest difference {worst:e} at {worst_name}, moved up to {moved:e}");
    assert!(compared > 5000, "{compared} weights compared");
    // The steps move the weights well past the tolerance, so agreeing means training alike.
    assert!(
        moved > 1e-4,
        "20 steps moved the sampled weights by only {moved:e}"
    );
    assert!(
        worst <= 1e-5,
        "largest difference {worst:e} at {worst_name} (moved up to {moved:e})"
    );
}
