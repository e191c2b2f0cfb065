//! Data-parallel training with the in-process thread backend (the multi-GPU issue's CPU
//! checks; `--test-thread-ranks` is a test double): 2 ranks at per-rank batch 8 train exactly as
//! one device at batch 8 with --grad-accum 2 for losses computed per rank, MNRL with
//! --gather-across-devices (plain, cached, symmetric) as one device at batch 16, and a resumed 2-rank run ends where the
//! straight one ends; evaluation during training, sharded across the ranks, gives the same
//! scores. Dropout is off where devices are compared (their masks differ by design).

use crate::common::tiny;
use crate::recipes::{tensors, train_with, Tiny};
use serde_json::Value;
use std::path::Path;

pub(crate) fn setup() -> Tiny {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let model = dir.join("tiny");
    tiny::write_tiny_model(&model, 3);
    let data = crate::common::scored_pairs_tsv(&dir, 64);
    Tiny {
        _tmp: tmp,
        dir,
        model,
        data,
    }
}

pub(crate) fn ok(t: &Tiny, out: &Path, args: &[&str]) {
    let mut a = vec!["-d", t.data.to_str().unwrap(), "--log-steps", "1", "-q"];
    a.extend_from_slice(args);
    let o = train_with(t, out, &a);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

pub(crate) fn norms(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["grad_norm"].as_f64())
        .collect()
}

/// The primary metric of every evaluation during training, in order.
fn evals(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["eval"]["spearman_cosine"].as_f64())
        .collect()
}

/// Largest weight difference of two saved models.
pub(crate) fn weight_diff(a: &Path, b: &Path) -> f32 {
    let (x, y) = (
        tensors(&a.join("model.safetensors")),
        tensors(&b.join("model.safetensors")),
    );
    assert_eq!(x.len(), y.len());
    x.iter()
        .flat_map(|(k, v)| v.iter().zip(&y[k]).map(|(p, q)| (p - q).abs()))
        .fold(0f32, f32::max)
}

/// And how far training moved the weights (so the comparison is not of untouched copies).
pub(crate) fn moved(t: &Tiny, out: &Path) -> f32 {
    let (x, y) = (
        tensors(&t.model.join("model.safetensors")),
        tensors(&out.join("model.safetensors")),
    );
    x.iter()
        .flat_map(|(k, v)| v.iter().zip(&y[k]).map(|(p, q)| (p - q).abs()))
        .fold(0f32, f32::max)
}

#[test]
fn two_ranks_equal_gradient_accumulation_for_per_rank_losses() {
    let t = setup();
    let data = t.data.to_str().unwrap().to_string();
    let common = [
        "--max-steps",
        "10",
        "--dropout",
        "0",
        "--warmup-ratio",
        "0",
        "--eval-data",
        &data,
        "--eval-steps",
        "5",
    ];
    for loss in ["cosine", "cosent", "mnrl"] {
        let one = t.dir.join(format!("one-{loss}"));
        let two = t.dir.join(format!("two-{loss}"));
        let l = ["--loss", loss, "-b", "8"];
        ok(
            &t,
            &one,
            &[&common[..], &l, &["--grad-accum", "2"]].concat(),
        );
        ok(
            &t,
            &two,
            &[&common[..], &l, &["--test-thread-ranks", "2"]].concat(),
        );
        let (a, b) = (norms(&one), norms(&two));
        assert_eq!(a.len(), 10);
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-6 * x.max(1.0),
                "{loss}: grad norms {a:?} vs {b:?}"
            );
        }
        let d = weight_diff(&one, &two);
        assert!(d <= 1e-5, "{loss}: weights differ by {d} after 10 steps");
        // Evaluation during training is sharded across the ranks and gathered: the same scores.
        let (ea, eb) = (evals(&one), evals(&two));
        assert_eq!(ea.len(), 3, "{loss}: evaluations at steps 0, 5, 10");
        for (x, y) in ea.iter().zip(&eb) {
            assert!(
                (x - y).abs() <= 1e-6,
                "{loss}: evaluations {ea:?} vs {eb:?}"
            );
        }
        assert!(
            moved(&t, &one) > 1e-3,
            "{loss}: training should move the weights"
        );
    }
}

#[test]
fn gathered_mnrl_on_two_ranks_equals_one_device_with_the_global_batch() {
    let t = setup();
    // lr 1e-4: the gathered loss adds up the same terms in another order than the global one
    // (gradient norms agree to 2e-7 relative); at the tiny model's 1e-3 Adam's first steps
    // amplify that to 1.2e-5 in the weights after 8 steps, at 1e-4 to 1.3e-6.
    let common = [
        "--loss",
        "mnrl",
        "--max-steps",
        "8",
        "--dropout",
        "0",
        "--warmup-ratio",
        "0",
        "--lr",
        "1e-4",
    ];
    let two_ranks = [
        "-b",
        "8",
        "--test-thread-ranks",
        "2",
        "--gather-across-devices",
    ];
    // Plain MNRL, GradCache (mini-batches of 4) and the symmetric variant (anchors gathered too).
    let cached = ["--loss", "cached-mnrl", "--mini-batch-size", "4"];
    for (name, extra) in [
        ("plain", &[][..]),
        ("cached", &cached[..]),
        ("symmetric", &["--symmetric"][..]),
    ] {
        let one = t.dir.join(format!("one-{name}"));
        ok(&t, &one, &[&common[..], extra, &["-b", "16"]].concat());
        let two = t.dir.join(format!("two-{name}"));
        ok(&t, &two, &[&common[..], extra, &two_ranks[..]].concat());
        let (a, b) = (norms(&one), norms(&two));
        for (x, y) in a.iter().zip(&b) {
            assert!(
                (x - y).abs() <= 1e-6 * x.max(1.0),
                "{name}: grad norms {a:?} vs {b:?}"
            );
        }
        let d = weight_diff(&one, &two);
        assert!(
            d <= 1e-5,
            "{name}: gathered MNRL differs from the global batch by {d}"
        );
        assert!(moved(&t, &one) > 1e-4, "training should move the weights");
    }
    // Without gathering each rank sees only its own 8 candidates: a different loss.
    let local = t.dir.join("local");
    ok(&t, &local, &[&common[..], &two_ranks[..4]].concat());
    assert!(weight_diff(&t.dir.join("one-plain"), &local) > 1e-4);
}

#[test]
fn a_resumed_two_rank_run_ends_bitwise_where_the_straight_one_ends() {
    let t = setup();
    // Dropout on: every rank's masks must come back after the resume.
    let flags = [
        "--loss",
        "cosent",
        "-b",
        "8",
        "--max-steps",
        "8",
        "--save-steps",
        "4",
        "--test-thread-ranks",
        "2",
    ];
    let a = t.dir.join("a");
    ok(&t, &a, &flags);
    let b = t.dir.join("b");
    let ckpt = a.join("checkpoints/checkpoint-4");
    ok(
        &t,
        &b,
        &[&flags[..], &["--resume", ckpt.to_str().unwrap()]].concat(),
    );
    assert_eq!(weight_diff(&a, &b), 0.0);
    // Another number of ranks is refused: the recipe changed.
    let one_rank = [&flags[..8], &["--resume", ckpt.to_str().unwrap()]].concat();
    let mut args = vec!["-d", t.data.to_str().unwrap()];
    args.extend(one_rank);
    let o = train_with(&t, &t.dir.join("c"), &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("ranks 2 → null"),
        "{err}"
    );
    // --gather-across-devices with a per-rank loss is refused.
    let o = train_with(
        &t,
        &t.dir.join("d"),
        &[
            "-d",
            t.data.to_str().unwrap(),
            "--loss",
            "cosent",
            "--gather-across-devices",
            "--test-thread-ranks",
            "2",
        ],
    );
    crate::common::assert_one_line_error(&o, &["--gather-across-devices is for mnrl"]);
    // … and on one device it has no effect: refused too.
    let o = train_with(
        &t,
        &t.dir.join("e"),
        &[
            "-d",
            t.data.to_str().unwrap(),
            "--loss",
            "mnrl",
            "--gather-across-devices",
        ],
    );
    crate::common::assert_one_line_error(&o, &["--gather-across-devices", "data-parallel ranks"]);
}

#[test]
fn gathered_gist_trains_through_the_plain_and_the_cached_step_alike() {
    let t = setup();
    let guide = t.dir.join("guide");
    tiny::write_tiny_model(&guide, 9);
    let common = [
        "--guide-model",
        guide.to_str().unwrap(),
        "--max-steps",
        "6",
        "--dropout",
        "0",
        "--warmup-ratio",
        "0",
        "--lr",
        "1e-4",
        "-b",
        "8",
        "--test-thread-ranks",
        "2",
    ];
    let plain = t.dir.join("gist");
    ok(
        &t,
        &plain,
        &[&common[..], &["--loss", "gist", "--gather-across-devices"]].concat(),
    );
    // GradCache in mini-batches of 4 computes the same gathered loss.
    let cached = t.dir.join("cached-gist");
    let c = [
        "--loss",
        "cached-gist",
        "--mini-batch-size",
        "4",
        "--gather-across-devices",
    ];
    ok(&t, &cached, &[&common[..], &c].concat());
    let d = weight_diff(&plain, &cached);
    assert!(d <= 1e-5, "cached gathered GIST differs by {d}");
    assert!(moved(&t, &plain) > 1e-4, "training should move the weights");
    // Each rank's own candidates only: another loss.
    let local = t.dir.join("gist-local");
    ok(&t, &local, &[&common[..], &["--loss", "gist"]].concat());
    assert!(weight_diff(&plain, &local) > 1e-5);
}
