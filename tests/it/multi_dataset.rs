//! Multi-dataset training on the tiny model (the recipes issue): several `--dataset` entries,
//! each batch from one of them (proportional or round-robin), the loss of each logged, exact
//! resume, weights, `[[datasets]]` in a recipe, and a lone `--dataset` equal to `--data`.

use crate::common::{assert_one_line_error, scored_pairs_tsv};
use crate::recipes::{losses_logged, nli_tsv, tensors, tiny_setup, train_with, Tiny};
use serde_json::Value;
use std::path::Path;

fn ok(t: &Tiny, out: &Path, args: &[&str]) -> String {
    let o = train_with(t, out, args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn metrics(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn two(t: &Tiny) -> (String, String) {
    let nli = nli_tsv(&t.dir);
    (
        format!("name=sts;data={};loss=cosent", t.data.display()),
        format!("name=nli;data={};loss=softmax", nli.display()),
    )
}

#[test]
fn two_datasets_train_with_their_own_losses_logged_and_carded() {
    let t = tiny_setup();
    let (sts, nli) = two(&t);
    let out = t.dir.join("m");
    // 32 rows / 8 = 4 batches and 36 / 8 = 5: 9 steps per epoch, proportional.
    ok(
        &t,
        &out,
        &[
            "--dataset",
            &sts,
            "--dataset",
            &nli,
            "--epochs",
            "2",
            "--log-steps",
            "1",
        ],
    );
    let m = metrics(&out);
    let steps: Vec<&Value> = m.iter().filter(|v| v.get("loss").is_some()).collect();
    assert_eq!(steps.len(), 18);
    let sts_steps = steps.iter().filter(|v| v.get("loss_sts").is_some()).count();
    let nli_steps = steps.iter().filter(|v| v.get("loss_nli").is_some()).count();
    assert_eq!(
        (sts_steps, nli_steps),
        (8, 10),
        "every batch of each, each step one dataset"
    );
    for v in &steps {
        let own = v.get("loss_sts").or(v.get("loss_nli")).unwrap();
        assert_eq!(own, &v["loss"], "a one-step window's loss is its dataset's");
    }
    // Both datasets in a seeded random order, not one after the other.
    let order: Vec<bool> = steps.iter().map(|v| v.get("loss_sts").is_some()).collect();
    assert!(order.windows(2).any(|w| w[0] != w[1]) && order[..8] != [true; 8]);
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    for needle in [
        "### sts",
        "### nli",
        "Loss on sts: `CoSENTLoss`",
        "Loss on nli: `SoftmaxLoss`",
        "Proportional",
    ] {
        assert!(card.contains(needle), "card lacks {needle:?}:\n{card}");
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["datasets"].as_array().unwrap().len(), 2);
    // Round robin: one of each in turn until the smaller (4 batches) runs out.
    let rr = t.dir.join("rr");
    ok(
        &t,
        &rr,
        &[
            "--dataset",
            &sts,
            "--dataset",
            &nli,
            "--multi-dataset-sampler",
            "round-robin",
            "--log-steps",
            "1",
        ],
    );
    let order: Vec<bool> = metrics(&rr)
        .iter()
        .filter(|v| v.get("loss").is_some())
        .map(|v| v.get("loss_sts").is_some())
        .collect();
    assert_eq!(order, [true, false, true, false, true, false, true, false]);
}

#[test]
fn a_multi_dataset_run_resumes_exactly() {
    let t = tiny_setup();
    let (sts, nli) = two(&t);
    let base = [
        "--dataset",
        sts.as_str(),
        "--dataset",
        nli.as_str(),
        "--max-steps",
        "8",
        "--save-steps",
        "4",
    ];
    let a = t.dir.join("a");
    ok(&t, &a, &base);
    let ckpt = a.join("checkpoints/checkpoint-4");
    let head = tensors(&ckpt.join("loss_params.safetensors"));
    assert!(
        head.contains_key("loss.nli.classifier.weight"),
        "{:?}",
        head.keys()
    );
    let b = t.dir.join("b");
    let resume = [&base[..], &["--resume", ckpt.to_str().unwrap()]].concat();
    ok(&t, &b, &resume);
    assert_eq!(
        tensors(&b.join("model.safetensors")),
        tensors(&a.join("model.safetensors"))
    );
}

#[test]
fn a_lone_dataset_equals_data_and_loss_and_weight_scales_the_gradient() {
    let t = tiny_setup();
    let a = t.dir.join("a");
    ok(
        &t,
        &a,
        &[
            "-d",
            t.data.to_str().unwrap(),
            "--loss",
            "cosent",
            "--max-steps",
            "3",
        ],
    );
    let b = t.dir.join("b");
    let one = format!("data={};loss=cosent", t.data.display());
    ok(&t, &b, &["--dataset", &one, "--max-steps", "3"]);
    assert_eq!(
        tensors(&a.join("model.safetensors")),
        tensors(&b.join("model.safetensors"))
    );
    // weight=2 doubles the gradient (the norm logged before clipping) of the same first step.
    let c = t.dir.join("c");
    ok(
        &t,
        &c,
        &[
            "--dataset",
            &format!("{one};weight=2"),
            "--max-steps",
            "1",
            "--log-steps",
            "1",
        ],
    );
    let norm = |d: &Path| {
        metrics(d)
            .iter()
            .find_map(|v| v["grad_norm"].as_f64())
            .unwrap()
    };
    let d = t.dir.join("d");
    ok(
        &t,
        &d,
        &["--dataset", &one, "--max-steps", "1", "--log-steps", "1"],
    );
    assert!(
        (norm(&c) / norm(&d) - 2.0).abs() < 1e-4,
        "{} vs {}",
        norm(&c),
        norm(&d)
    );
}

#[test]
fn recipes_take_datasets_tables_and_bad_entries_are_named() {
    let t = tiny_setup();
    let nli = nli_tsv(&t.dir);
    std::fs::copy(&nli, t.dir.join("nli-copy.tsv")).unwrap();
    let recipe = t.dir.join("multi.toml");
    std::fs::write(
        &recipe,
        format!(
            "model = \"{}\"\nbatch-size = 8\nmax-steps = 4\n\n[[datasets]]\nname = \"sts\"\ndata = \"{}\"\nloss = \"cosent\"\n\n[[datasets]]\ndata = \"nli-copy.tsv\"   # relative to the recipe\nloss = \"softmax\"\ncolumns = [\"premise\", \"hypothesis\"]\nweight = 0.5\n",
            t.model.display(),
            t.data.display()
        ),
    )
    .unwrap();
    let out = t.dir.join("r");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args([
            "train",
            "--config",
            recipe.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["datasets"][1]["name"], "nli-copy");
    assert_eq!(cfg["datasets"][1]["weight"], 0.5);
    assert!(losses_logged(&out).len() >= 1);
    let bad = t.dir.join("bad.toml");
    std::fs::write(&bad, "[[datasets]]\ndata = \"x.tsv\"\nloss = \"cosnet\"\n").unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args([
            "train",
            "--config",
            bad.to_str().unwrap(),
            "-m",
            "x",
            "-o",
            "y",
        ])
        .output()
        .unwrap();
    assert_one_line_error(
        &o,
        &["bad.toml", "[[datasets]] entry 1", "cosnet", "not a loss"],
    );
    // A flag that applies to one dataset's loss is accepted (mnrl: --allow-duplicates).
    let mnrl = format!(
        "name=m;data={};loss=mnrl;columns=sentence1,sentence2",
        t.data.display()
    );
    let sts = format!("name=s;data={};loss=cosent", t.data.display());
    let o = train_with(
        &t,
        &t.dir.join("dup"),
        &[
            "--dataset",
            &sts,
            "--dataset",
            &mnrl,
            "--allow-duplicates",
            "--max-steps",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // --dataset with --data is refused; two datasets of one name too.
    let pairs = scored_pairs_tsv(&t.dir, 16);
    let spec = format!("data={};loss=cosent", pairs.display());
    let o = train_with(
        &t,
        &t.dir.join("z"),
        &["--dataset", &spec, "-d", pairs.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let o = train_with(
        &t,
        &t.dir.join("z2"),
        &["--dataset", &spec, "--dataset", &spec],
    );
    assert_one_line_error(&o, &["two datasets are named \"d\""]);
}
