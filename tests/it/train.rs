//! Training end to end on the tiny model: the loss goes down, the saved model reloads to the same
//! embeddings, exact resume (in process, after SIGINT, after SIGKILL), and bad input refused
//! before step 1.

use crate::common::{assert_one_line_error, tiny};
use candle_core::Device;
use embtune::encode::{encode, EncodeOptions};
use embtune::loss::{build, LossKind, LossParams};
use embtune::model::{ModelSpec, SentenceEncoder};
use embtune::train::TrainConfig;
use std::path::{Path, PathBuf};
use std::process::Command;

/// 48 scored pairs over a small vocabulary: similar pairs share words.
fn write_pairs(path: &Path) {
    let words = [
        "cat", "dog", "car", "tree", "sun", "rain", "blue", "red", "fast", "slow", "big", "small",
    ];
    let mut rng = embtune::rng::Rng::new(5);
    let mut s = String::from("sentence1\tsentence2\tscore\n");
    for i in 0..48 {
        let a: Vec<&str> = (0..4).map(|_| words[rng.below(words.len())]).collect();
        let similar = i % 2 == 0;
        let b: Vec<&str> = if similar {
            a.iter().rev().copied().collect()
        } else {
            (0..4).map(|_| words[rng.below(words.len())]).collect()
        };
        s.push_str(&format!(
            "{}\t{}\t{}\n",
            a.join(" "),
            b.join(" "),
            if similar { 0.9 } else { 0.1 }
        ));
    }
    std::fs::write(path, s).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    model: PathBuf,
    data: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let model = dir.join("tiny");
    tiny::write_tiny_model(&model, 3);
    let data = dir.join("pairs.tsv");
    write_pairs(&data);
    Fixture {
        _tmp: tmp,
        dir,
        model,
        data,
    }
}

fn config(f: &Fixture, out: &str, steps: usize) -> TrainConfig {
    TrainConfig {
        model: ModelSpec {
            model: f.model.to_string_lossy().into_owned(),
            ..Default::default()
        },
        data: f.data.clone(),
        loss: LossKind::Cosent,
        output: f.dir.join(out),
        max_steps: Some(steps),
        batch_size: 8,
        lr: 1e-3,
        log_steps: 1,
        ..Default::default()
    }
}

/// Evaluation during training: STS on the training file itself.
fn sts_eval_on_train_data(cfg: &mut TrainConfig, f: &Fixture) {
    cfg.eval = vec![embtune::train::EvalSpec {
        data: f.data.clone(),
        format: None,
        task: embtune::eval::EvalTask::Sts,
        columns: None,
        score_scale: None,
        split: None,
    }];
}

/// Mean eval-mode loss over the whole file.
fn data_loss(model_dir: &Path, data: &Path) -> f64 {
    let m = SentenceEncoder::load(
        &ModelSpec {
            model: model_dir.to_string_lossy().into_owned(),
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let set = embtune::train::data::TrainSet::read(
        data,
        None,
        &Default::default(),
        &Default::default(),
        true,
    )
    .unwrap();
    let col = |c: usize| {
        let t: Vec<&str> = set.texts.iter().map(|r| r[c].as_str()).collect();
        m.embed_batch(&m.tokenizer.encode(&t, &Device::Cpu).unwrap(), false)
            .unwrap()
    };
    let labels =
        candle_core::Tensor::new(set.labels.clone().unwrap().as_slice(), &Device::Cpu).unwrap();
    build(LossKind::Cosent, &LossParams::default())
        .compute(&[col(0), col(1)], Some(&labels))
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let mut t: Vec<(String, Vec<f32>)> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

#[test]
fn short_run_lowers_the_loss_and_the_saved_model_reloads_identically() {
    let f = fixture();
    let cfg = config(&f, "out", 30);
    let before = data_loss(&f.model, &f.data);
    let (report, trained) = embtune::train::train(&cfg).unwrap();
    let after = data_loss(&cfg.output, &f.data);
    assert!(after < before * 0.9, "loss {before} → {after}");
    assert_eq!(report.steps, 30);
    let texts = ["cat dog", "blue car fast", "rain"];
    let reloaded = SentenceEncoder::load(
        &ModelSpec {
            model: cfg.output.to_string_lossy().into_owned(),
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let a = encode(&trained, &texts, &EncodeOptions::default()).unwrap();
    let b = encode(&reloaded, &texts, &EncodeOptions::default()).unwrap();
    assert_eq!(a.data, b.data);
    // metrics.jsonl: one line per step, ≥ 6 significant digits of loss, lr 0 at the first update.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(cfg.output.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30);
    assert_eq!(lines[0]["lr"], 0.0);
    for k in [
        "step",
        "epoch",
        "loss",
        "lr",
        "grad_norm",
        "examples_per_sec",
    ] {
        assert!(lines[5].get(k).is_some(), "metrics line lacks {k}");
    }
    let saved: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(cfg.output.join("train_config.json")).unwrap(),
    )
    .unwrap();
    // The execution path chosen once for the model, recorded with the config.
    assert_eq!(saved["exec"], "cpu-fused");
    assert_eq!(saved["family"], "bert");
    assert_eq!(saved["batch_size"], cfg.batch_size);
}

#[test]
fn resume_from_a_midway_checkpoint_gives_bitwise_identical_weights() {
    let f = fixture();
    let mut straight = config(&f, "straight", 12);
    straight.save_steps = Some(6);
    embtune::train::run(&straight).unwrap();
    let ckpt = straight.output.join("checkpoints/checkpoint-6");
    assert!(ckpt.join("trainer_state.json").is_file());
    let mut resumed = config(&f, "resumed", 12);
    resumed.save_steps = Some(6);
    resumed.resume = Some(ckpt);
    embtune::train::run(&resumed).unwrap();
    assert!(
        weights(&straight.output) == weights(&resumed.output),
        "resumed weights differ"
    );
    // Metrics after the checkpoint are logged once, by the resumed run.
    let n = std::fs::read_to_string(resumed.output.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(n, 6);
}

#[test]
fn a_partial_checkpoint_is_never_resumed_from() {
    let f = fixture();
    let mut cfg = config(&f, "out", 6);
    cfg.save_steps = Some(3);
    embtune::train::run(&cfg).unwrap();
    // What a kill during a checkpoint write leaves: a temporary directory with partial content.
    let partial = cfg.output.join("checkpoints/.checkpoint-5.tmp-99999");
    std::fs::create_dir_all(partial.join("model")).unwrap();
    std::fs::write(partial.join("trainer_state.json"), "{\"step\": 5, trunc").unwrap();
    let chosen = embtune::train::checkpoint::resolve(&cfg.output).unwrap();
    assert!(chosen.ends_with("checkpoint-3"), "{}", chosen.display());
}

/// Every checkpoint carries a manifest (size + sha256 of each file); `--resume` verifies it: a
/// damaged newest checkpoint is skipped for the previous one, and naming it directly is an
/// error that says which file is wrong.
#[test]
fn damaged_checkpoints_are_detected_by_their_manifest() {
    use embtune::train::checkpoint::{resolve, verify};
    let f = fixture();
    let mut cfg = config(&f, "out", 6);
    cfg.save_steps = Some(2);
    embtune::train::run(&cfg).unwrap();
    let c2 = cfg.output.join("checkpoints/checkpoint-2");
    let c4 = cfg.output.join("checkpoints/checkpoint-4");
    verify(&c2).unwrap();
    verify(&c4).unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c4.join("manifest.json")).unwrap()).unwrap();
    let paths: Vec<&str> = m
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in [
        "optimizer.safetensors",
        "trainer_state.json",
        "model/model.safetensors",
        "model/config.json",
    ] {
        assert!(paths.contains(&p), "{p} not in {paths:?}");
    }
    // One flipped byte in the optimizer moments.
    let opt = c4.join("optimizer.safetensors");
    let mut bytes = std::fs::read(&opt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&opt, &bytes).unwrap();
    let e = format!("{:#}", resolve(&c4).unwrap_err());
    assert!(
        e.contains("optimizer.safetensors") && e.contains("sha256"),
        "{e}"
    );
    assert!(resolve(&cfg.output).unwrap().ends_with("checkpoint-2"));
    // A truncated model file, and a stray file.
    let w = c2.join("model/model.safetensors");
    let len = std::fs::metadata(&w).unwrap().len();
    let fh = std::fs::OpenOptions::new().write(true).open(&w).unwrap();
    fh.set_len(len - 10).unwrap();
    let e = format!("{:#}", verify(&c2).unwrap_err());
    assert!(
        e.contains("model/model.safetensors") && e.contains("bytes"),
        "{e}"
    );
    let e = format!("{:#}", resolve(&cfg.output).unwrap_err());
    assert!(
        e.contains("no checkpoint there passes its manifest check"),
        "{e}"
    );
    let c6 = cfg.output.join("checkpoints/checkpoint-6");
    assert!(
        !c6.exists(),
        "the final step writes the model, not a checkpoint"
    );
    std::fs::write(c2.join("stray.txt"), "x").unwrap();
    let e = format!("{:#}", verify(&c2).unwrap_err());
    assert!(e.contains("stray.txt"), "{e}");
}

fn train_cmd(f: &Fixture, out: &Path, steps: usize, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embtune"));
    c.args([
        "train",
        "-m",
        f.model.to_str().unwrap(),
        "-d",
        f.data.to_str().unwrap(),
        "--loss",
        "cosent",
        "-o",
        out.to_str().unwrap(),
    ])
    .args([
        "--max-steps",
        &steps.to_string(),
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
        "-q",
    ])
    .args(extra);
    c
}

#[test]
fn sigint_saves_a_checkpoint_and_resume_matches_the_straight_run() {
    let f = fixture();
    let steps = 400;
    let straight = f.dir.join("straight");
    assert!(train_cmd(&f, &straight, steps, &[])
        .output()
        .unwrap()
        .status
        .success());
    let out = f.dir.join("interrupted");
    // --log-steps is not part of the recipe: log every step so we can see training under way.
    let mut child = train_cmd(&f, &out, steps, &["--log-steps", "1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let logged = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let t0 = std::time::Instant::now();
    while logged(&out.join("metrics.jsonl")) < 3 && t0.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit status after SIGINT");
    let ckpts = embtune::train::checkpoint::list(&out);
    assert_eq!(ckpts.len(), 1, "one checkpoint saved on interrupt");
    assert!(
        ckpts[0].0 > 0 && ckpts[0].0 < steps,
        "interrupted at step {}",
        ckpts[0].0
    );
    let r = train_cmd(&f, &out, steps, &["--resume", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        weights(&straight) == weights(&out),
        "weights after SIGINT + resume differ from the straight run"
    );
}

#[test]
fn sigkill_at_random_moments_then_resume_matches_the_straight_run() {
    // The kill test of issue 7: ≥ 20 SIGKILLs at random moments of a run that writes a
    // checkpoint every 2 steps (so many kills land inside a checkpoint write), a resume after
    // each; every checkpoint left behind must verify against its manifest, and the final weights
    // must equal the uninterrupted run's bitwise.
    let f = fixture();
    let steps = 1500;
    let every = ["--save-steps", "2", "--save-total-limit", "3"];
    let straight = f.dir.join("straight");
    assert!(train_cmd(&f, &straight, steps, &every)
        .output()
        .unwrap()
        .status
        .success());
    let out = f.dir.join("killed");
    let mut rng = embtune::rng::Rng::new(2024);
    let (mut kills, mut mid_write) = (0, 0);
    for _round in 0..80 {
        if kills >= 20 {
            break;
        }
        let mut cmd = train_cmd(&f, &out, steps, &every);
        if !embtune::train::checkpoint::list(&out).is_empty() {
            cmd.args(["--resume", out.to_str().unwrap()]);
        }
        let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(
            100 + rng.below(300) as u64,
        ));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
            child.wait().unwrap();
            let mark = format!(".tmp-{}", child.id());
            let tmp_left = std::fs::read_dir(out.join("checkpoints"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(&mark));
            mid_write += tmp_left as usize;
        } else {
            let o = child.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round after {kills} kills failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            break; // finished before the kill: nothing left to interrupt
        }
        for (_, c) in embtune::train::checkpoint::list(&out) {
            embtune::train::checkpoint::verify(&c)
                .unwrap_or_else(|e| panic!("after kill {kills}: {e:#}"));
        }
    }
    eprintln!("kill test: {kills} SIGKILLs, {mid_write} of them during a checkpoint write");
    assert!(
        kills >= 20,
        "only {kills} kills: the runs finished too soon; make them longer"
    );
    assert!(mid_write >= 1, "no kill landed inside a checkpoint write");
    let mut cmd = train_cmd(&f, &out, steps, &every);
    if !embtune::train::checkpoint::list(&out).is_empty() {
        cmd.args(["--resume", out.to_str().unwrap()]);
    }
    let r = cmd.output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        weights(&straight) == weights(&out),
        "weights after {kills} SIGKILLs + resume differ from the straight run"
    );
}

fn train_err(f: &Fixture, data: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embtune"));
    c.args([
        "train",
        "-m",
        f.model.to_str().unwrap(),
        "-d",
        data.to_str().unwrap(),
        "-o",
        f.dir.join("o").to_str().unwrap(),
        "-q",
    ])
    .args(extra);
    c.output().unwrap()
}

#[test]
fn loss_data_mismatch_is_refused_before_training() {
    let f = fixture();
    let out = train_err(&f, &f.data, &["--loss", "triplet"]);
    assert_one_line_error(
        &out,
        &[
            "pairs.tsv",
            "loss triplet expects 3 text columns and no label column",
            "the data has 2 text columns",
        ],
    );
    assert!(!f.dir.join("o/metrics.jsonl").exists());
    let out = train_err(&f, &f.data, &["--loss", "contrastive"]);
    assert_one_line_error(&out, &["pairs.tsv:2", "expected a label 0 or 1"]);
}

#[test]
fn nan_and_non_numeric_scores_are_refused() {
    let f = fixture();
    for (bad, what) in [("nan", "NaN"), ("high", "text")] {
        let p = f.dir.join(format!("bad-{what}.tsv"));
        std::fs::write(
            &p,
            format!("sentence1\tsentence2\tscore\na b\tc d\t0.5\ne f\tg h\t{bad}\n"),
        )
        .unwrap();
        let out = train_err(&f, &p, &["--loss", "cosent", "--batch-size", "1"]);
        assert_one_line_error(
            &out,
            &[
                &format!("bad-{what}.tsv:3"),
                "field \"score\"",
                "expected a finite number",
            ],
        );
    }
}

#[test]
fn empty_training_file_is_refused() {
    let f = fixture();
    let p = f.dir.join("empty.tsv");
    std::fs::write(&p, "sentence1\tsentence2\tscore\n").unwrap();
    let out = train_err(&f, &p, &["--loss", "cosent"]);
    assert_one_line_error(&out, &["empty.tsv", "no data rows"]);
}

#[test]
fn batch_larger_than_the_data_is_refused() {
    let f = fixture();
    let out = train_err(&f, &f.data, &["--loss", "cosent", "--batch-size", "100"]);
    assert_one_line_error(
        &out,
        &[
            "--batch-size 100 is larger than the training data (48 rows",
            "pairs.tsv",
        ],
    );
}

#[test]
fn unwritable_output_directory_is_refused() {
    let f = fixture();
    let blocker = f.dir.join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let out_dir = blocker.join("out");
    let out = Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args([
            "train",
            "-m",
            f.model.to_str().unwrap(),
            "-d",
            f.data.to_str().unwrap(),
            "--loss",
            "cosent",
            "-o",
            out_dir.to_str().unwrap(),
            "-q",
        ])
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        &["output directory", "a-file/out", "cannot be created"],
    );
}

#[test]
fn mnrl_trains_simcse_style_on_a_single_column() {
    let f = fixture();
    let single = f.dir.join("single.txt");
    std::fs::write(
        &single,
        (0..20)
            .map(|i| format!("text number {i} here\n"))
            .collect::<String>(),
    )
    .unwrap();
    let mut cfg = config(&f, "simcse", 3);
    cfg.data = single;
    cfg.loss = LossKind::Mnrl;
    cfg.batch_size = 4;
    let r = embtune::train::run(&cfg).unwrap();
    assert!(r.last_loss.unwrap().is_finite());
}

#[test]
fn save_total_limit_keeps_the_newest_checkpoints() {
    let f = fixture();
    let mut cfg = config(&f, "out", 8);
    cfg.save_steps = Some(2);
    cfg.save_total_limit = Some(2);
    embtune::train::run(&cfg).unwrap();
    let steps: Vec<usize> = embtune::train::checkpoint::list(&cfg.output)
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, vec![4, 6]);
}

#[test]
fn evaluation_during_training_is_logged_and_save_best_keeps_the_best() {
    let f = fixture();
    let mut cfg = config(&f, "out", 6);
    sts_eval_on_train_data(&mut cfg, &f);
    cfg.eval_steps = Some(2);
    cfg.save_best = true;
    let r = embtune::train::run(&cfg).unwrap();
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(cfg.output.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("eval").is_some())
        .collect();
    assert_eq!(
        evals
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![0, 2, 4, 6],
        "an evaluation before step 1, then every 2 steps"
    );
    let scores: Vec<f64> = evals
        .iter()
        .map(|v| v["eval"]["spearman_cosine"].as_f64().unwrap())
        .collect();
    let (best, at) = r.best.unwrap();
    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
    assert_eq!(best, max);
    assert_eq!(
        at as u64,
        evals[scores.iter().position(|s| *s == max).unwrap()]["step"]
            .as_u64()
            .unwrap()
    );
    // Step 0 is the base model's score.
    let t = embtune::data::read_table(&f.data, None, &Default::default()).unwrap();
    let sts = embtune::eval::build(
        embtune::eval::EvalTask::Sts,
        &t,
        &["sentence1".into(), "sentence2".into(), "score".into()],
        1.0,
    )
    .unwrap();
    let base = SentenceEncoder::load(&cfg.model, &Device::Cpu).unwrap();
    assert_eq!(
        sts.evaluate(&base, &EncodeOptions::default())
            .unwrap()
            .primary_value(),
        scores[0]
    );
    // The kept best model scores exactly the best value.
    let m = SentenceEncoder::load(
        &ModelSpec {
            model: cfg.output.join("best").to_string_lossy().into_owned(),
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let t = embtune::data::read_table(&f.data, None, &Default::default()).unwrap();
    let ev = embtune::eval::build(
        embtune::eval::EvalTask::Sts,
        &t,
        &["sentence1".into(), "sentence2".into(), "score".into()],
        1.0,
    )
    .unwrap();
    assert_eq!(
        ev.evaluate(&m, &EncodeOptions::default())
            .unwrap()
            .primary_value(),
        best
    );
}

/// Without dropout, MSE-based CosineSimilarityLoss over 2 micro-batches of 4 equals one batch of 8.
#[test]
fn gradient_accumulation_matches_the_larger_batch() {
    let f = fixture();
    let run = |name: &str, batch: usize, accum: usize| {
        let mut cfg = config(&f, name, 3);
        cfg.loss = LossKind::Cosine;
        cfg.batch_size = batch;
        cfg.grad_accum = accum;
        cfg.dropout = Some(0.0);
        cfg.max_grad_norm = 0.0;
        embtune::train::run(&cfg).unwrap();
        weights(&cfg.output)
    };
    let a = run("accum", 4, 2);
    let b = run("big", 8, 1);
    let mut worst = 0f32;
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            worst = worst.max((x - y).abs());
        }
    }
    assert!(worst < 1e-5, "max weight difference {worst}");
    let c = run("small", 4, 1);
    assert!(
        a.iter().zip(&c).any(|(x, y)| x.1 != y.1),
        "accumulation must differ from the small batch alone"
    );
}

/// The output directory gets a model card: base model, stack, data with examples, loss, the
/// non-default hyperparameters, the loss table from metrics.jsonl, the evaluation table filled
/// from this run, and usage snippets.
#[test]
fn a_model_card_is_written_with_this_runs_numbers() {
    let f = fixture();
    let mut cfg = config(&f, "out", 6);
    sts_eval_on_train_data(&mut cfg, &f);
    cfg.eval_steps = Some(3);
    let r = embtune::train::run(&cfg).unwrap();
    let card = std::fs::read_to_string(cfg.output.join("README.md")).unwrap();
    let ev = r.final_eval.unwrap();
    let spearman = ev.get("spearman_cosine").unwrap();
    for needle in [
        format!("base_model: {}", f.model.display()),
        "`CoSENTLoss` (`--loss cosent`)".to_string(),
        "Pooling (mean) → Normalize".to_string(),
        "48 rows; text columns `sentence1`, `sentence2`, label `score`".to_string(),
        "`lr`: 0.001".to_string(),
        "`batch_size`: 8".to_string(),
        format!("| spearman_cosine (primary) | {spearman:.4} |"),
        "from sentence_transformers import SentenceTransformer".to_string(),
        "text-embeddings-inference".to_string(),
    ] {
        assert!(card.contains(&needle), "card lacks {needle:?}:\n{card}");
    }
    // The loss table is metrics.jsonl's.
    let first: serde_json::Value = std::fs::read_to_string(cfg.output.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v.get("loss").is_some())
        .unwrap();
    let row = format!(
        "| 1 | {:.3} | {:.4} |",
        first["epoch"].as_f64().unwrap(),
        first["loss"].as_f64().unwrap()
    );
    assert!(card.contains(&row), "card lacks {row:?}:\n{card}");
    // An example row of the data.
    let line2 = std::fs::read_to_string(&f.data)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let first_text = line2.split('\t').next().unwrap();
    assert!(
        card.contains(first_text),
        "card lacks the first example {first_text:?}"
    );
}

/// report.html and the SVG charts come from metrics.jsonl: the loss polyline has one point per
/// logged step, its highest loss is its highest point, and the evaluation chart has one point
/// per evaluation.
#[test]
fn the_training_report_plots_this_runs_metrics() {
    let f = fixture();
    let mut cfg = config(&f, "out", 8);
    sts_eval_on_train_data(&mut cfg, &f);
    cfg.eval_steps = Some(4);
    embtune::train::run(&cfg).unwrap();
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(cfg.output.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses: Vec<f64> = metrics.iter().filter_map(|v| v["loss"].as_f64()).collect();
    assert_eq!(losses.len(), 8);
    let points = |svg: &str, series: &str| -> Vec<(f64, f64)> {
        let tag = format!("data-series=\"{series}\"");
        let at = svg
            .find(&tag)
            .unwrap_or_else(|| panic!("no series {series}"));
        let rest = &svg[at..];
        let p0 = rest.find("points=\"").unwrap() + 8;
        let p1 = p0 + rest[p0..].find('"').unwrap();
        rest[p0..p1]
            .split(' ')
            .map(|xy| {
                let (x, y) = xy.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect()
    };
    let loss_svg = std::fs::read_to_string(cfg.output.join("loss.svg")).unwrap();
    let pts = points(&loss_svg, "loss");
    assert_eq!(pts.len(), losses.len());
    assert!(
        pts.windows(2).all(|w| w[0].0 < w[1].0),
        "x grows with the step"
    );
    let argmax = |v: &[f64]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let ys: Vec<f64> = pts.iter().map(|p| -p.1).collect(); // SVG y grows downwards
    assert_eq!(argmax(&ys), argmax(&losses));
    assert_eq!(points(&loss_svg, "smoothed (EMA 0.8)").len(), losses.len());
    let eval_svg = std::fs::read_to_string(cfg.output.join("eval.svg")).unwrap();
    // Before step 1, at step 4 and at the end.
    assert_eq!(points(&eval_svg, "spearman_cosine").len(), 3);
    for name in ["lr.svg", "grad_norm.svg"] {
        assert!(cfg.output.join(name).is_file(), "{name}");
    }
    let html = std::fs::read_to_string(cfg.output.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("training loss") && html.contains("evaluation"));
    assert!(
        !html.contains("<script") && !html.contains("src="),
        "the report must be self-contained"
    );
}
