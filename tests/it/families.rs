//! Every encoder family against its Python reference (tests/fixtures/<family>/, made by
//! scripts/make-fixtures.py with transformers 5.24 + sentence-transformers 6.2): token ids, last
//! hidden states ≤ 1e-5, pooled embeddings ≤ 1e-5 and the gradient of every parameter ≤ 1e-4, on
//! every execution path (composed candle ops, CPU fused, the CUDA path's ops run on the CPU);
//! then one training step, save → load, and every subcommand on each family.

use crate::common::{embtune, repo_root};
use candle_core::{DType, Device, Tensor};
use embtune::model::{ModelSpec, SentenceEncoder};
use embtune::ops::Exec;
use std::collections::HashMap;
use std::path::PathBuf;

pub const FAMILIES: [&str; 9] = [
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "distilbert",
    "mpnet",
    "modernbert",
    "nomic_bert",
    "gte",
];

pub const PATHS: [Exec; 3] = [Exec::Composed, Exec::CpuFused, Exec::CudaFused];

pub fn fixture(family: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(family)
}

pub fn fixture_model(family: &str) -> PathBuf {
    fixture(family).join("model")
}

pub fn load(family: &str) -> SentenceEncoder {
    let spec = ModelSpec {
        model: fixture_model(family).to_string_lossy().into_owned(),
        ..Default::default()
    };
    SentenceEncoder::load(&spec, &Device::Cpu).unwrap_or_else(|e| panic!("{family}: {e:#}"))
}

struct Reference {
    texts: Vec<String>,
    max_seq_length: usize,
    t: HashMap<String, Tensor>,
}

fn reference(family: &str) -> Reference {
    let dir = fixture(family);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let t =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    Reference {
        texts: meta["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        max_seq_length: meta["max_seq_length"].as_u64().unwrap() as usize,
        t,
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F32).unwrap() - b.to_dtype(DType::F32).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The fixture's texts tokenized and padded as sentence-transformers does (same ids).
fn batch(model: &SentenceEncoder, r: &Reference) -> embtune::tokenize::TokenBatch {
    let texts: Vec<&str> = r.texts.iter().map(|s| s.as_str()).collect();
    model.tokenizer.encode(&texts, &Device::Cpu).unwrap()
}

#[test]
fn token_ids_and_max_seq_length_match_sentence_transformers() {
    for family in FAMILIES {
        let (model, r) = (load(family), reference(family));
        // ST 6 keeps max_seq_length as tokenizer_config.json's model_max_length only.
        assert_eq!(
            model.tokenizer.max_seq_length(),
            r.max_seq_length,
            "{family}"
        );
        assert_eq!(model.family(), family);
        let b = batch(&model, &r);
        let want = r.t["input_ids"].to_dtype(DType::U32).unwrap();
        assert_eq!(
            b.input_ids.to_vec2::<u32>().unwrap(),
            want.to_vec2::<u32>().unwrap(),
            "{family}: token ids"
        );
        let mask = r.t["attention_mask"].to_dtype(DType::U32).unwrap();
        assert_eq!(
            b.attention_mask.to_vec2::<u32>().unwrap(),
            mask.to_vec2::<u32>().unwrap()
        );
        // The long text was cut at max_seq_length.
        assert_eq!(b.input_ids.dim(1).unwrap(), r.max_seq_length, "{family}");
    }
}

/// `hidden: [B, S, H]` with padded positions zeroed (`mask: [B, S]`).
fn real_tokens(hidden: &Tensor, mask: &Tensor) -> Tensor {
    let m = mask.to_dtype(DType::F32).unwrap().unsqueeze(2).unwrap();
    hidden
        .to_dtype(DType::F32)
        .unwrap()
        .broadcast_mul(&m)
        .unwrap()
}

/// Hidden states at every real token and pooled embeddings within 1e-5 of transformers, on every
/// execution path. Padded positions are left out: they are pooled by nobody, and where a
/// sliding window (ModernBERT) holds only padding their value is undefined (transformers' eager
/// and sdpa attention disagree there by 4e-3).
#[test]
fn forward_matches_transformers_on_every_path() {
    for family in FAMILIES {
        let r = reference(family);
        for exec in PATHS {
            let mut model = load(family);
            model.set_exec(exec);
            let b = batch(&model, &r);
            let hidden = model.hidden_states(&b).unwrap();
            let mask = &r.t["attention_mask"];
            let dh = max_diff(
                &real_tokens(&hidden, mask),
                &real_tokens(&r.t["hidden"], mask),
            );
            let emb = model.embed_inference(&b).unwrap();
            let de = max_diff(&emb, &r.t["embeddings"]);
            eprintln!("{family} {exec}: hidden {dh:.2e}, embeddings {de:.2e}");
            assert!(
                dh <= 1e-5,
                "{family} {exec}: hidden states differ by {dh:e}"
            );
            assert!(de <= 1e-5, "{family} {exec}: embeddings differ by {de:e}");
        }
    }
}

/// The gradient of sum(embeddings · weights) with respect to every parameter within 1e-4 of
/// torch's, on every execution path; the same parameter set on both sides.
#[test]
fn every_gradient_matches_torch_on_every_path() {
    for family in FAMILIES {
        let r = reference(family);
        let want: HashMap<&str, &Tensor> =
            r.t.iter()
                .filter_map(|(k, v)| k.strip_prefix("grad.").map(|n| (n, v)))
                .collect();
        for exec in PATHS {
            let mut model = load(family);
            model.set_exec(exec);
            let b = batch(&model, &r);
            let emb = model.embed_batch(&b, false).unwrap();
            let loss = (emb * &r.t["weights"]).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let vars = model.named_vars();
            let mut names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            names.sort();
            let mut want_names: Vec<&str> = want.keys().copied().collect();
            want_names.sort();
            assert_eq!(names, want_names, "{family}: parameter names");
            let mut worst = (0f32, String::new());
            for (name, var) in &vars {
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{family} {exec}: no gradient for {name}"));
                let d = max_diff(g, want[name.as_str()]);
                if d > worst.0 {
                    worst = (d, name.clone());
                }
            }
            eprintln!(
                "{family} {exec}: worst gradient {:.2e} ({})",
                worst.0, worst.1
            );
            assert!(
                worst.0 <= 1e-4,
                "{family} {exec}: gradient of {} differs by {:e}",
                worst.1,
                worst.0
            );
        }
    }
}

fn run_ok(args: &[&str]) -> std::process::Output {
    let out = embtune(args);
    assert!(
        out.status.success(),
        "embtune {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `train` (CoSENT, 2 steps) on each family: the loss is finite, every weight moved or kept by
/// name, the saved folder loads back and embeds exactly as the model in memory did; then
/// `embed`, `eval`, `pairs --mine` and `similarity` run on the trained folder.
#[test]
fn every_subcommand_runs_on_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    let data = crate::common::scored_pairs_tsv(tmp.path(), 24);
    let texts = tmp.path().join("t.txt");
    std::fs::write(
        &texts,
        "a man is playing a guitar\nthe cat sat\nle chat dort déjà\n",
    )
    .unwrap();
    for family in FAMILIES {
        let out = tmp.path().join(family);
        let cfg = embtune::train::TrainConfig {
            model: ModelSpec {
                model: fixture_model(family).to_string_lossy().into_owned(),
                ..Default::default()
            },
            data: data.clone(),
            loss: embtune::loss::LossKind::Cosent,
            batch_size: 8,
            max_steps: Some(2),
            output: out.clone(),
            progress: false,
            ..Default::default()
        };
        let (report, trained) =
            embtune::train::train(&cfg).unwrap_or_else(|e| panic!("{family}: {e:#}"));
        assert!(report.last_loss.is_some_and(f64::is_finite), "{family}");
        let before = load(family);
        let moved = trained
            .named_vars()
            .iter()
            .zip(before.named_vars())
            .map(|((n, a), (m, b))| {
                assert_eq!(n, &m);
                max_diff(a.as_tensor(), b.as_tensor())
            })
            .fold(0f32, f32::max);
        assert!(moved > 1e-5, "{family}: training moved no weight");
        // save → load → identical outputs.
        let spec = ModelSpec {
            model: out.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let reloaded = SentenceEncoder::load(&spec, &Device::Cpu).unwrap();
        assert_eq!(reloaded.family(), family);
        let r = reference(family);
        let (b1, b2) = (batch(&trained, &r), batch(&reloaded, &r));
        let d = max_diff(
            &trained.embed_inference(&b1).unwrap(),
            &reloaded.embed_inference(&b2).unwrap(),
        );
        assert_eq!(d, 0.0, "{family}: reloaded model embeds differently");
        let m = out.to_str().unwrap();
        let npy = tmp.path().join(format!("{family}.npy"));
        run_ok(&[
            "embed",
            "-m",
            m,
            "-i",
            texts.to_str().unwrap(),
            "-o",
            npy.to_str().unwrap(),
            "-q",
        ]);
        assert!(std::fs::metadata(&npy).unwrap().len() > 128);
        let ev = run_ok(&[
            "eval",
            "-m",
            m,
            "--data",
            data.to_str().unwrap(),
            "--task",
            "sts",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
        assert!(v["spearman_cosine"].as_f64().is_some(), "{family}: {v}");
        let pairs = tmp.path().join(format!("{family}-pairs.tsv"));
        std::fs::write(&pairs, "anchor\tpositive\nthe cat sat\ta cat is sitting\na man plays\tthe man is playing\nle chat dort\tle chat est là\ndogs run\ttwo dogs are running\n").unwrap();
        let mined = tmp.path().join(format!("{family}-mined.tsv"));
        run_ok(&[
            "pairs",
            "-d",
            pairs.to_str().unwrap(),
            "--from",
            "pairs",
            "--mine",
            "-m",
            m,
            "--num-negatives",
            "1",
            "-o",
            mined.to_str().unwrap(),
        ]);
        let rows = std::fs::read_to_string(&mined).unwrap();
        assert!(rows.lines().count() >= 2, "{family}: {rows}");
        let sim = run_ok(&[
            "similarity",
            "-m",
            m,
            "the cat sat",
            "a cat is sitting",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&sim.stdout).unwrap();
        let cos = v["cosine"].as_f64().unwrap_or(f64::NAN);
        assert!((-1.0..=1.0).contains(&cos), "{family}: {v}");
    }
}

/// A copy of a family's fixture model to break.
fn broken_copy(family: &str, dir: &std::path::Path) -> PathBuf {
    let m = dir.join(family);
    crate::common::copy_dir(&fixture_model(family), &m);
    m
}

fn edit_json(path: &std::path::Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn embed_with(model: &std::path::Path, dir: &std::path::Path) -> std::process::Output {
    let input = dir.join("in.txt");
    std::fs::write(&input, "hello world\n").unwrap();
    let out = dir.join("o.npy");
    embtune(&[
        "embed",
        "-m",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
}

#[test]
fn an_unsupported_model_type_is_one_line_listing_the_supported_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let m = broken_copy("mpnet", tmp.path());
    edit_json(&m.join("config.json"), |v| v["model_type"] = "gpt2".into());
    let e = crate::common::assert_one_line_error(
        &embed_with(&m, tmp.path()),
        &["config.json", "\"gpt2\"", "not supported"],
    );
    for f in FAMILIES {
        assert!(e.contains(f), "{e}");
    }
}

#[test]
fn a_config_that_disagrees_with_the_weights_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    for (family, field) in [
        ("distilbert", "hidden_dim"),
        ("xlm-roberta", "intermediate_size"),
    ] {
        let m = broken_copy(family, tmp.path());
        edit_json(&m.join("config.json"), |v| v[field] = 40.into());
        crate::common::assert_one_line_error(
            &embed_with(&m, tmp.path()),
            &[
                "model.safetensors",
                "tensor-shape mismatch",
                "expected [40, 32]",
            ],
        );
    }
}

#[test]
fn a_tokenizer_with_ids_past_the_table_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let m = broken_copy("roberta", tmp.path());
    edit_json(&m.join("tokenizer.json"), |v| {
        let added = v["added_tokens"].as_array_mut().unwrap();
        let mut extra = added[0].clone();
        extra["id"] = 300.into();
        extra["content"] = "<extra>".into();
        added.push(extra);
    });
    crate::common::assert_one_line_error(
        &embed_with(&m, tmp.path()),
        &["tokenizer.json", "token id 300", "vocab_size is 300"],
    );
}

#[test]
fn a_missing_relative_attention_table_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let m = broken_copy("mpnet", tmp.path());
    let p = m.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    assert!(t.remove("encoder.relative_attention_bias.weight").is_some());
    candle_core::safetensors::save(&t, &p).unwrap();
    crate::common::assert_one_line_error(
        &embed_with(&m, tmp.path()),
        &[
            "model.safetensors",
            "missing tensors: encoder.relative_attention_bias.weight",
        ],
    );
}

/// The rotary families' bad inputs, each a one-line error naming the file before any work: a
/// sliding window wider than the positions (ModernBERT), a rotary fraction outside (0, 1]
/// (NomicBERT), a missing gate weight (NomicBERT's `fc12`), a gated up-projection of one half's
/// size (GTE's `up_gate_proj` `[I, H]` for `[2I, H]`).
#[test]
fn rotary_family_bad_inputs_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let m = broken_copy("modernbert", tmp.path());
    edit_json(&m.join("config.json"), |v| v["local_attention"] = 64.into());
    crate::common::assert_one_line_error(
        &embed_with(&m, tmp.path()),
        &[
            "config.json",
            "local_attention = 64",
            "max_position_embeddings",
        ],
    );
    let m = broken_copy("nomic_bert", tmp.path());
    edit_json(&m.join("config.json"), |v| {
        v["rotary_emb_fraction"] = 1.5.into()
    });
    crate::common::assert_one_line_error(
        &embed_with(&m, tmp.path()),
        &["config.json", "rotary_emb_fraction = 1.5 is outside (0, 1]"],
    );
    let m = tmp.path().join("nomic-gate");
    crate::common::copy_dir(&fixture_model("nomic_bert"), &m);
    let p = m.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    assert!(t.remove("encoder.layers.1.mlp.fc12.weight").is_some());
    candle_core::safetensors::save(&t, &p).unwrap();
    crate::common::assert_one_line_error(
        &embed_with(&m, tmp.path()),
        &[
            "model.safetensors",
            "missing tensors: encoder.layers.1.mlp.fc12.weight",
        ],
    );
    let m = broken_copy("gte", tmp.path());
    let p = m.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &Device::Cpu).unwrap();
    let name = "encoder.layer.0.mlp.up_gate_proj.weight";
    let half = t[name].narrow(0, 0, 37).unwrap();
    t.insert(name.to_string(), half);
    candle_core::safetensors::save(&t, &p).unwrap();
    crate::common::assert_one_line_error(
        &embed_with(&m, tmp.path()),
        &[
            "model.safetensors",
            "tensor-shape mismatch",
            "expected [74, 32]",
        ],
    );
}
