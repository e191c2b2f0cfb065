//! Packed batches (every text of a pass back to back, no padding; `ops::packed`) against padded
//! ones: the same embeddings, losses and gradients up to float reassociation, with dropout on —
//! a packed pass draws the padded layout's dropout counters, so both drop the same elements.
//! On the real model (STS-B train pairs, CoSENT; per column and joint), on every family fixture
//! that packs, and through `embtune train` with and without `--no-packing`.

use crate::common::{embtune_cmd_offline, load_real, real_model_dir, stsb};
use crate::families::{load, FAMILIES};
use candle_core::{Device, Tensor};
use embtune::loss::{build, LossKind, LossParams};
use embtune::model::SentenceEncoder;
use embtune::ops::Exec;

/// Embeddings (per column), the loss and every parameter's gradient of one CoSENT pass in
/// train mode (dropout seeded by `seed`).
fn pass(
    enc: &mut SentenceEncoder,
    ids: &[Vec<&[u32]>],
    joint: bool,
    seed: u64,
) -> (Vec<Vec<f32>>, f32, Vec<Vec<f32>>) {
    let dev = Device::Cpu;
    let n = ids[0].len();
    let labels: Vec<f32> = (0..n).map(|i| (i % 5) as f32 / 4.0).collect();
    let labels = Tensor::new(labels.as_slice(), &dev).unwrap();
    let loss = build(LossKind::Cosent, &LossParams::default());
    enc.seed_dropout(seed);
    let batches = enc.column_batches(ids, &[], joint, &dev).unwrap();
    let packed = batches.batches.iter().all(|b| b.packed.is_some());
    assert_eq!(packed, enc.packs());
    let embs = enc.embed_columns(&batches, true).unwrap();
    let l = loss.compute(&embs, Some(&labels)).unwrap();
    let g = l.backward().unwrap();
    let grads = enc
        .named_vars()
        .iter()
        .map(|(_, v)| {
            let g = g.get(v.as_tensor()).unwrap();
            g.flatten_all().unwrap().to_vec1().unwrap()
        })
        .collect();
    let e = embs
        .iter()
        .map(|e| e.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    (e, l.to_scalar::<f32>().unwrap(), grads)
}

fn max_diff(x: &[f32], y: &[f32]) -> f32 {
    assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max)
}

/// Packed and padded passes of `enc` over `ids` agree: embeddings and loss within `tol`, every
/// gradient within `tol` of the largest gradient (at least 1); returns the largest differences.
fn assert_packed_equals_padded(
    what: &str,
    enc: &mut SentenceEncoder,
    ids: &[Vec<&[u32]>],
    joint: bool,
    tol: f32,
) -> (f32, f32) {
    enc.set_packing(false);
    assert!(!enc.packs());
    let (ea, la, ga) = pass(enc, ids, joint, 5);
    enc.set_packing(true);
    assert!(enc.packs(), "{what}: the packed path is not taken");
    let (eb, lb, gb) = pass(enc, ids, joint, 5);
    let de = ea
        .iter()
        .zip(&eb)
        .map(|(x, y)| max_diff(x, y))
        .fold(0f32, f32::max);
    assert!(de <= tol, "{what}: embeddings differ by {de}");
    assert!((la - lb).abs() <= tol, "{what}: loss {la} vs {lb}");
    let gmax = ga.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
    assert!(gmax > 0.0, "{what}: no gradient");
    let dg = ga
        .iter()
        .zip(&gb)
        .map(|(x, y)| max_diff(x, y))
        .fold(0f32, f32::max);
    assert!(
        dg <= tol * gmax.max(1.0),
        "{what}: gradients differ by {dg} (largest {gmax})"
    );
    // Another dropout seed changes the result: the masks were on and are the same above.
    let (_, lc, _) = pass(enc, ids, joint, 6);
    assert!((lc - lb).abs() > 1e-6, "{what}: dropout had no effect");
    (de, dg)
}

/// One CoSENT step of all-MiniLM-L6-v2 on 16 STS-B train pairs, dropout on: packed and padded
/// agree to 1e-6 in embeddings, loss and gradients — per text column and with both columns in
/// one pass (where padding would pad each column to the longest text of both).
#[test]
fn packed_training_step_equals_padded_on_the_real_model() {
    let mut enc = load_real();
    assert_eq!(enc.exec(), Exec::CpuFused);
    let rows: Vec<Vec<String>> = std::fs::read_to_string(stsb("train"))
        .unwrap()
        .lines()
        .take(16)
        .map(|l| l.split('\t').skip(5).take(2).map(str::to_string).collect())
        .collect();
    let cols: Vec<Vec<&str>> = (0..2)
        .map(|c| rows.iter().map(|r| r[c].as_str()).collect())
        .collect();
    let toks: Vec<_> = cols
        .iter()
        .map(|c| enc.tokenizer.tokenize(c).unwrap())
        .collect();
    let ids: Vec<Vec<&[u32]>> = toks
        .iter()
        .map(|t| t.iter().map(|x| x.ids.as_slice()).collect())
        .collect();
    let lens: Vec<usize> = toks[0].iter().map(|t| t.ids.len()).collect();
    assert!(
        lens.iter().min() < lens.iter().max(),
        "no padding to remove"
    );
    for joint in [false, true] {
        let (de, dg) = assert_packed_equals_padded("real model", &mut enc, &ids, joint, 1e-6);
        eprintln!("joint {joint}: embeddings {de:.2e}, gradients {dg:.2e}");
    }
}

/// Every family fixture packs on both fused paths and agrees with its padded passes: the
/// post-norm families (BERT, RoBERTa, XLM-R, CamemBERT, DistilBERT, MPNet with its relative
/// position bias) and the rotary ones (ModernBERT with its local windows, NomicBERT, GTE:
/// rotary positions from each sequence's start). The CUDA path runs here on the CPU: its ops'
/// CPU forwards are the kernels' loops (the variable-length attention of `ops::cuda::varlen`,
/// the packed rows' dropout counters of the sublayer-end kernel), against its own padded path.
#[test]
fn every_family_packs_and_equals_its_padded_pass() {
    let mut padded_only: Vec<String> = Vec::new();
    for (family, exec) in FAMILIES
        .iter()
        .flat_map(|f| [(*f, Exec::CpuFused), (*f, Exec::CudaFused)])
    {
        let what = format!("{family} on {}", exec.name());
        let mut enc = load(family);
        enc.set_exec(exec);
        enc.set_dropout(0.1);
        let texts = [
            "a short one",
            "the second text of this column is quite a bit longer than the first",
            "x",
        ];
        let others = ["b", "c d e f g", "a text of medium length"];
        let toks = [&texts[..], &others[..]].map(|t| enc.tokenizer.tokenize(t).unwrap());
        let ids: Vec<Vec<&[u32]>> = toks
            .iter()
            .map(|t| t.iter().map(|x| x.ids.as_slice()).collect())
            .collect();
        if !enc.packs() {
            padded_only.push(what);
            continue;
        }
        for joint in [false, true] {
            assert_packed_equals_padded(&what, &mut enc, &ids, joint, 1e-5);
        }
        // Eval mode without a graph (what embed and eval run): the same embeddings.
        let refs: Vec<&[u32]> = ids[0].clone();
        let padded = enc.tokenizer.pad(&refs, &Device::Cpu).unwrap();
        let packed = enc.batch(&refs, &Device::Cpu).unwrap();
        assert!(packed.packed.is_some() && padded.packed.is_none());
        let a: Vec<f32> = enc
            .embed_inference(&padded)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = enc
            .embed_inference(&packed)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(
            max_diff(&a, &b) < 1e-5,
            "{what}: inference {}",
            max_diff(&a, &b)
        );
    }
    assert!(padded_only.is_empty(), "{padded_only:?} pad");
}

/// `embtune train` packs by default (both text columns in one pass) and `--no-packing` pads:
/// with dropout on and the padded run also in one pass (`EMBTUNE_JOINT_FORWARD=1`), the two
/// runs log the same losses (the same masks), and train_config.json records which ran.
#[test]
fn no_packing_trains_padded_with_the_same_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let model = real_model_dir();
    let data = stsb("train");
    let run = |extra: &[&str], joint: Option<&str>| -> (Vec<f64>, serde_json::Value) {
        let out_dir = tmp.path().join(format!("o{}{joint:?}", extra.len()));
        let mut args = vec![
            "train",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--format",
            "stsb",
            "--loss",
            "cosent",
            "--batch-size",
            "8",
            "--max-steps",
            "3",
            "--log-steps",
            "1",
            "--output",
            out_dir.to_str().unwrap(),
            "-q",
        ];
        args.extend_from_slice(extra);
        let mut cmd = embtune_cmd_offline();
        cmd.env_remove("EMBTUNE_JOINT_FORWARD");
        if let Some(j) = joint {
            cmd.env("EMBTUNE_JOINT_FORWARD", j);
        }
        let out = cmd.args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let losses = std::fs::read_to_string(out_dir.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64())
            .collect();
        let cfg = serde_json::from_str(
            &std::fs::read_to_string(out_dir.join("train_config.json")).unwrap(),
        )
        .unwrap();
        (losses, cfg)
    };
    let (packed, cp) = run(&[], None);
    let (padded, cq) = run(&["--no-packing"], Some("1"));
    assert_eq!(cp["packing"], true, "{cp}");
    assert_eq!(cq["packing"], false, "{cq}");
    assert_eq!(packed.len(), 3);
    for (a, b) in packed.iter().zip(&padded) {
        assert!((a - b).abs() < 1e-5, "{packed:?} vs {padded:?}");
    }
    // Padded per column (the CPU's padded default) draws other masks: the packed run was joint.
    let (separate, _) = run(&["--no-packing"], None);
    assert!(
        packed
            .iter()
            .zip(&separate)
            .any(|(a, b)| (a - b).abs() > 1e-6),
        "{packed:?} vs {separate:?}"
    );
}

/// `encode` (embed, eval) packs too, and `--max-tokens-per-batch` splits the length-sorted
/// texts into smaller batches: the same embeddings as padded batches of `--batch-size` texts.
#[test]
fn packed_and_token_budgeted_encoding_equal_padded_encoding() {
    use embtune::encode::{batches, encode, EncodeOptions};
    let mut model = load_real();
    let texts: Vec<String> = std::fs::read_to_string(stsb("test"))
        .unwrap()
        .lines()
        .take(80)
        .map(|l| l.split('\t').nth(5).unwrap().to_string())
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let opts = |max_tokens| EncodeOptions {
        batch_size: 32,
        max_tokens,
        ..Default::default()
    };
    model.set_packing(false);
    let padded = encode(&model, &refs, &opts(None)).unwrap();
    model.set_packing(true);
    let packed = encode(&model, &refs, &opts(None)).unwrap();
    let budget = encode(&model, &refs, &opts(Some(96))).unwrap();
    assert!(max_diff(&padded.data, &packed.data) < 1e-5);
    assert!(max_diff(&padded.data, &budget.data) < 1e-5);
    // The budget did split: 32 texts of these lengths hold more than 96 tokens.
    let mut lens: Vec<usize> = model
        .tokenizer
        .tokenize(&refs)
        .unwrap()
        .iter()
        .map(|t| t.ids.len())
        .collect();
    lens.sort_by(|a, b| b.cmp(a));
    let spans = batches(&lens, 32, Some(96), true);
    assert!(spans.len() > 80usize.div_ceil(32), "{spans:?}");
    assert!(spans
        .iter()
        .all(|s| s.len() == 1 || lens[s.clone()].iter().sum::<usize>() <= 96));
}
