//! The recipes issue's training options on the tiny model: layer freezing (frozen weights
//! bit for bit as loaded, no optimizer state for them, the rest trained; bad counts refused).

use crate::common::{assert_one_line_error, scored_pairs_tsv, tiny};
use candle_core::Device;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

pub(crate) fn tensors(path: &Path) -> BTreeMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

pub(crate) struct Tiny {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) model: PathBuf,
    pub(crate) data: PathBuf,
}

pub(crate) fn tiny_setup() -> Tiny {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let model = dir.join("tiny");
    tiny::write_tiny_model(&model, 3);
    let data = scored_pairs_tsv(&dir, 32);
    Tiny {
        _tmp: tmp,
        dir,
        model,
        data,
    }
}

fn train(t: &Tiny, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "-m",
        t.model.to_str().unwrap(),
        "-d",
        t.data.to_str().unwrap(),
        "--loss",
        "cosent",
        "-b",
        "8",
        "--lr",
        "1e-3",
        "--warmup-ratio",
        "0",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    std::process::Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args(&args)
        .output()
        .unwrap()
}

#[test]
fn frozen_parameters_keep_their_values_and_get_no_optimizer_state() {
    let t = tiny_setup();
    let out = t.dir.join("frozen");
    let o = train(
        &t,
        &out,
        &[
            "--max-steps",
            "4",
            "--save-steps",
            "2",
            "--freeze-embeddings",
            "--freeze-layers",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = tensors(&t.model.join("model.safetensors"));
    let after = tensors(&out.join("model.safetensors"));
    let (mut frozen, mut moved) = (0, 0);
    for (name, b) in &before {
        let a = &after[name];
        let is_frozen = name.starts_with("embeddings.") || name.starts_with("encoder.layer.0.");
        if is_frozen {
            assert_eq!(a, b, "{name} is frozen but changed");
            frozen += 1;
        } else if name.starts_with("encoder.layer.1.") && a != b {
            moved += 1;
        }
    }
    assert!(frozen >= 20, "only {frozen} frozen tensors compared");
    assert!(
        moved >= 10,
        "layer 1 should train; only {moved} tensors moved"
    );
    // The checkpoint's optimizer state holds the trainable parameters only.
    let opt = tensors(&out.join("checkpoints/checkpoint-2/optimizer.safetensors"));
    assert!(opt.keys().any(|k| k.starts_with("m.encoder.layer.1.")));
    assert!(
        !opt.keys()
            .any(|k| k.contains("embeddings.") || k.contains("encoder.layer.0.")),
        "frozen parameters have optimizer state: {:?}",
        opt.keys()
            .filter(|k| k.contains("layer.0."))
            .collect::<Vec<_>>()
    );
    // Without freezing, the same run moves the embeddings.
    let free = t.dir.join("free");
    let o = train(&t, &free, &["--max-steps", "4"]);
    assert!(o.status.success());
    let w = tensors(&free.join("model.safetensors"));
    assert_ne!(
        w["embeddings.word_embeddings.weight"],
        before["embeddings.word_embeddings.weight"]
    );
}

#[test]
fn freezing_more_layers_than_the_model_has_is_refused() {
    let t = tiny_setup();
    let o = train(&t, &t.dir.join("x"), &["--freeze-layers", "3"]);
    assert_one_line_error(&o, &["--freeze-layers 3", "2 layers"]);
    // Only the pooler would be left, and a pooled loss gives it no gradient.
    let o = train(
        &t,
        &t.dir.join("y"),
        &["--freeze-layers", "2", "--freeze-embeddings"],
    );
    assert_one_line_error(&o, &["nothing the loss reaches", "freeze fewer layers"]);
}

/// Pairs with NLI-style class names.
pub(crate) fn nli_tsv(dir: &Path) -> PathBuf {
    let p = dir.join("nli.tsv");
    let names = ["entailment", "neutral", "contradiction"];
    let rows: String = (0..36)
        .map(|i| format!("a sentence {i}\tanother one {}\t{}\n", i % 7, names[i % 3]))
        .collect();
    std::fs::write(&p, format!("premise\thypothesis\tlabel\n{rows}")).unwrap();
    p
}

/// (query, positive, negative) rows.
fn triplets_tsv(dir: &Path, with_margin: bool) -> PathBuf {
    let p = dir.join(if with_margin { "tm.tsv" } else { "t.tsv" });
    let rows: String = (0..24)
        .map(|i| {
            let m = if with_margin {
                format!("\t0.{}", i % 9)
            } else {
                String::new()
            };
            format!("query {i}\tanswer {i}\tsomething else {}{m}\n", i + 3)
        })
        .collect();
    let head = if with_margin {
        "query\tpositive\tnegative\tmargin\n"
    } else {
        "query\tpositive\tnegative\n"
    };
    std::fs::write(&p, format!("{head}{rows}")).unwrap();
    p
}

fn run_ok(t: &Tiny, data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["-d", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = train_with(t, out, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `train` with the tiny model and any other flags (a later `-d` / `--loss` wins).
pub(crate) fn train_with(t: &Tiny, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "-m",
        t.model.to_str().unwrap(),
        "-b",
        "8",
        "--lr",
        "1e-3",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    std::process::Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args(&args)
        .output()
        .unwrap()
}

pub(crate) fn losses_logged(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .collect()
}

#[test]
fn softmax_trains_a_classifier_that_resumes_exactly_and_is_not_saved() {
    let t = tiny_setup();
    let data = nli_tsv(&t.dir);
    let a = t.dir.join("a");
    let flags = [
        "--loss",
        "softmax",
        "--max-steps",
        "6",
        "--save-steps",
        "3",
        "--log-steps",
        "1",
    ];
    let log = run_ok(&t, &data, &a, &flags);
    assert!(
        log.contains("contradiction=0, entailment=1, neutral=2"),
        "class names are numbered and said: {log}"
    );
    let ckpt = a.join("checkpoints/checkpoint-3");
    let head = tensors(&ckpt.join("loss_params.safetensors"));
    assert_eq!(head["loss.classifier.weight"].len(), 3 * 3 * 32);
    assert_eq!(head["loss.classifier.bias"].len(), 3);
    let opt = tensors(&ckpt.join("optimizer.safetensors"));
    assert!(
        opt.contains_key("m.loss.classifier.weight"),
        "the classifier trains"
    );
    let saved = tensors(&a.join("model.safetensors"));
    assert!(
        !saved.keys().any(|k| k.contains("classifier")),
        "the classifier is not part of the model"
    );
    // Resume from step 3 ends bitwise where the straight run ends (the classifier's values
    // and moments come back from the checkpoint).
    let b = t.dir.join("b");
    let resume = [&flags[..], &["--resume", ckpt.to_str().unwrap()]].concat();
    run_ok(&t, &data, &b, &resume);
    assert_eq!(tensors(&b.join("model.safetensors")), saved);
    let l = losses_logged(&a);
    assert!(
        l.len() == 6 && l.iter().all(|x| x.is_finite() && *x > 0.0),
        "{l:?}"
    );
}

#[test]
fn mse_distils_a_teacher_model_or_file_and_a_wider_teacher_needs_a_projection() {
    let t = tiny_setup();
    let teacher = t.dir.join("teacher");
    tiny::write_tiny_model(&teacher, 9);
    // One column: the student learns the teacher's embeddings; the loss falls.
    let single = t.dir.join("single.tsv");
    let rows: String = (0..32).map(|i| format!("text number {i}\n")).collect();
    std::fs::write(&single, format!("text\n{rows}")).unwrap();
    let a = t.dir.join("a");
    run_ok(
        &t,
        &single,
        &a,
        &[
            "--loss",
            "mse",
            "--teacher",
            teacher.to_str().unwrap(),
            "--epochs",
            "6",
            "--log-steps",
            "4",
        ],
    );
    let l = losses_logged(&a);
    assert!(l.last().unwrap() < &(0.7 * l[0]), "mse should fall: {l:?}");
    // The same labels from a .npy file (the teacher's embeddings, written by `embed`).
    let npy = t.dir.join("teacher.npy");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args([
            "embed",
            "-m",
            teacher.to_str().unwrap(),
            "-i",
            single.to_str().unwrap(),
            "--column",
            "text",
            "-o",
            npy.to_str().unwrap(),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = t.dir.join("b");
    run_ok(
        &t,
        &single,
        &b,
        &[
            "--loss",
            "mse",
            "--teacher",
            npy.to_str().unwrap(),
            "--epochs",
            "6",
            "--log-steps",
            "4",
        ],
    );
    let lb = losses_logged(&b);
    for (x, y) in l.iter().zip(&lb) {
        assert!(
            (x - y).abs() < 1e-5 * x.abs().max(1e-3),
            "file {lb:?} vs model {l:?}"
        );
    }
    // A 64-d teacher for the 32-d student: refused (a projection is not guessed), and with
    // --teacher-projection a projection on the loss.
    let wide = t.dir.join("wide");
    tiny::write_tiny_model_sized(&wide, 9, 64);
    let o = train_with(
        &t,
        &t.dir.join("c0"),
        &[
            "-d",
            single.to_str().unwrap(),
            "--loss",
            "mse",
            "--teacher",
            wide.to_str().unwrap(),
            "--max-steps",
            "2",
        ],
    );
    assert_one_line_error(
        &o,
        &[
            "teacher's embeddings have 64 dimensions",
            "student's 32",
            "--teacher-projection",
        ],
    );
    let c = t.dir.join("c");
    let log = run_ok(
        &t,
        &single,
        &c,
        &[
            "--loss",
            "mse",
            "--teacher",
            wide.to_str().unwrap(),
            "--teacher-projection",
            "--max-steps",
            "2",
        ],
    );
    assert!(log.contains("projection 32 → 64"), "{log}");
    // A file whose rows do not match is refused before training.
    let other = triplets_tsv(&t.dir, false);
    let o = train_with(
        &t,
        &t.dir.join("d"),
        &[
            "-d",
            other.to_str().unwrap(),
            "--loss",
            "mse",
            "--teacher",
            npy.to_str().unwrap(),
        ],
    );
    assert_one_line_error(&o, &["teacher.npy", "shape [32, 32]", "expected 24 rows"]);
    let o = train_with(
        &t,
        &t.dir.join("e"),
        &["-d", single.to_str().unwrap(), "--loss", "mse"],
    );
    assert_one_line_error(&o, &["--loss mse needs --teacher"]);
}

#[test]
fn margin_mse_takes_teacher_margins_from_a_model_or_a_column() {
    let t = tiny_setup();
    let teacher = t.dir.join("teacher");
    tiny::write_tiny_model(&teacher, 9);
    let data = triplets_tsv(&t.dir, false);
    let a = t.dir.join("a");
    let log = run_ok(
        &t,
        &data,
        &a,
        &[
            "--loss",
            "margin-mse",
            "--teacher",
            teacher.to_str().unwrap(),
            "--epochs",
            "4",
            "--log-steps",
            "3",
        ],
    );
    assert!(log.contains("teacher labels: 24 rows × [1]"), "{log}");
    let l = losses_logged(&a);
    assert!(l.last().unwrap() < &l[0], "margin-mse should fall: {l:?}");
    let with = triplets_tsv(&t.dir, true);
    run_ok(
        &t,
        &with,
        &t.dir.join("b"),
        &[
            "--loss",
            "margin-mse",
            "--label-column",
            "margin",
            "--max-steps",
            "2",
        ],
    );
    // Without a teacher and without a margin column: the loss says what it needs.
    let o = train_with(
        &t,
        &t.dir.join("c"),
        &["-d", data.to_str().unwrap(), "--loss", "margin-mse"],
    );
    assert_one_line_error(&o, &["margin-mse", "teacher labels"]);
}

/// (adapter A, adapter B) of each adapted module in a PEFT adapter file.
fn peft_pairs(dir: &Path) -> BTreeMap<String, (Vec<f32>, Vec<f32>, usize)> {
    let t = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap();
    let mut out = BTreeMap::new();
    for (k, a) in &t {
        let Some(module) = k
            .strip_prefix("base_model.model.")
            .and_then(|m| m.strip_suffix(".lora_A.weight"))
        else {
            continue;
        };
        let b = &t[&format!("base_model.model.{module}.lora_B.weight")];
        let r = a.dims()[0];
        let v = |x: &candle_core::Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        out.insert(module.to_string(), (v(a), v(b), r));
    }
    out
}

#[test]
fn lora_trains_only_adapters_saves_merged_and_as_peft_and_resumes_exactly() {
    let t = tiny_setup();
    let a = t.dir.join("a");
    let flags = [
        "--lora-rank",
        "4",
        "--lora-alpha",
        "8",
        "--lora-targets",
        "query,value",
        "--save-adapter",
        "--max-steps",
        "6",
        "--save-steps",
        "3",
    ];
    let log = train(&t, &a, &flags);
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
    let before = tensors(&t.model.join("model.safetensors"));
    let after = tensors(&a.join("model.safetensors"));
    // Only the adapted weights differ in the merged model, and by exactly s·B·A.
    let adapter = t.dir.join("a/adapter");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (cfg["peft_type"].as_str(), cfg["r"].as_u64()),
        (Some("LORA"), Some(4))
    );
    assert_eq!(cfg["target_modules"], serde_json::json!(["query", "value"]));
    let pairs = peft_pairs(&adapter);
    assert_eq!(
        pairs.len(),
        2 * 2,
        "query and value of both layers: {:?}",
        pairs.keys()
    );
    let scale = 8.0 / 4.0;
    for (name, b) in &before {
        let module = name.strip_suffix(".weight").unwrap_or(name);
        match pairs.get(module) {
            None => assert_eq!(&after[name], b, "{name} is not adapted but changed"),
            Some((la, lb, r)) => {
                let (out, inp) = (lb.len() / r, la.len() / r);
                let mut worst = 0f32;
                for o in 0..out {
                    for i in 0..inp {
                        let d: f32 = (0..*r).map(|k| lb[o * r + k] * la[k * inp + i]).sum();
                        let want = b[o * inp + i] + scale as f32 * d;
                        worst = worst.max((after[name][o * inp + i] - want).abs());
                    }
                }
                assert!(
                    worst < 1e-6,
                    "{name}: merged differs from W + s·B·A by {worst}"
                );
                assert_ne!(&after[name], b, "{name} should have moved");
            }
        }
    }
    // The checkpoint: adapters and their moments only, no model copy.
    let ckpt = a.join("checkpoints/checkpoint-3");
    assert!(!ckpt.join("model").exists());
    let opt = tensors(&ckpt.join("optimizer.safetensors"));
    assert!(
        !opt.is_empty() && opt.keys().all(|k| k.contains(".lora_")),
        "{:?}",
        opt.keys()
    );
    // Resume from step 3: bitwise the straight run's merged model and adapter.
    let b = t.dir.join("b");
    let resume = [&flags[..], &["--resume", ckpt.to_str().unwrap()]].concat();
    let o = train(&t, &b, &resume);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(tensors(&b.join("model.safetensors")), after);
    assert_eq!(peft_pairs(&b.join("adapter")), pairs);
    // Bad combinations and targets are one-line errors before training.
    let o = train(
        &t,
        &t.dir.join("c"),
        &["--lora-rank", "4", "--freeze-layers", "1"],
    );
    assert_one_line_error(&o, &["do not combine with --lora-rank"]);
    let o = train(
        &t,
        &t.dir.join("d"),
        &["--lora-rank", "4", "--lora-targets", "qkv"],
    );
    assert_one_line_error(&o, &["--lora-targets qkv", "query", "value", "dense"]);
}
