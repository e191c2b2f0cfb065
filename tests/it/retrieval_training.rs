//! Retrieval fine-tuning parts: GradCache (cached MNRL) gradients against plain MNRL, dropout
//! masks replayed exactly, Matryoshka as the weighted sum of the base loss at each size and
//! `--truncate-dim`, GIST's guide masking, training prompts saved with the model, several
//! evaluation sets, and their bad-input errors.

use crate::common::{assert_one_line_error, embtune};
use crate::families::fixture_model;
use candle_core::{Device, Tensor};
use embtune::loss::{LossKind, LossParams, LossSpec};
use embtune::model::{ModelSpec, SentenceEncoder};
use embtune::train::phases::PhaseTimer;
use embtune::train::step::{self, StepCtx, StepData};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const PAIRS: [(&str, &str); 8] = [
    (
        "who plays the guitar",
        "A man is playing a guitar on stage.",
    ),
    ("sleeping cat", "The cat sat on the mat and slept all day."),
    (
        "market news",
        "Stocks fell sharply on Monday after the announcement.",
    ),
    ("dogs in snow", "Three dogs run across a snowy field."),
    ("rain tomorrow", "It will rain tomorrow in the north."),
    ("orchestra", "The orchestra played a symphony."),
    ("french cat", "Le chat dort déjà."),
    ("embeddings", "Sentence embeddings map text to vectors!"),
];

fn load(family: &str, dropout: Option<f64>) -> SentenceEncoder {
    let mut m = SentenceEncoder::load(
        &ModelSpec {
            model: s(&fixture_model(family)).into(),
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    if let Some(p) = dropout {
        m.set_dropout(p);
    }
    m.seed_dropout(7);
    m
}

/// The largest difference between two gradient sets, relative to the largest gradient entry
/// (some gradients are 0 in theory — key biases under softmax — and differ only by float noise
/// around 1e-10, which a per-tensor ratio would blow up).
fn max_rel_diff(a: &[Option<Tensor>], b: &[Option<Tensor>]) -> f32 {
    let max_abs = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    let (mut worst, mut scale) = (0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
        scale = scale.max(max_abs(y));
        worst = worst.max(max_abs(&(x - y).unwrap()));
    }
    worst / scale.max(1e-12)
}

/// The gradients of one step of `loss` over the 8 pairs, by `kind` of step.
fn step_grads(
    model: &SentenceEncoder,
    loss: LossKind,
    mini: Option<usize>,
) -> (Vec<Option<Tensor>>, f32) {
    step_grads_with(model, loss, mini, false)
}

fn step_grads_with(
    model: &SentenceEncoder,
    loss: LossKind,
    mini: Option<usize>,
    symmetric: bool,
) -> (Vec<Option<Tensor>>, f32) {
    let texts: Vec<&str> = PAIRS.iter().flat_map(|(a, p)| [*a, *p]).collect();
    let toks = model.tokenizer.tokenize(&texts).unwrap();
    let vars: Vec<_> = model.named_vars().into_iter().map(|(_, v)| v).collect();
    let params = LossParams {
        symmetric,
        ..Default::default()
    };
    let loss = LossSpec::Base { kind: loss }.build(&params);
    let ctx = StepCtx {
        model,
        loss: loss.as_ref(),
        data: StepData {
            tokens: &toks,
            cols: 2,
            simcse: false,
            labels: None,
            label_shape: &[],
            prompt_lens: &[0, 0],
        },
        guide: None,
        vars: &vars,
        device: &Device::Cpu,
        weight: 1.0,
    };
    let rows: Vec<usize> = (0..PAIRS.len()).collect();
    let kind = step::for_config(1, mini);
    let out = kind
        .run(&ctx, &[&rows], &mut PhaseTimer::new(&Device::Cpu, false))
        .unwrap();
    let l = out.losses[0].to_scalar::<f32>().unwrap();
    // Copies: a step's gradients share the CPU fused ops' in-place buffers
    // (`ops::cpu::grad_sink`), which the next step on this thread writes again.
    let grads = out
        .grads
        .into_iter()
        .map(|g| g.map(|g| g.copy().unwrap()))
        .collect();
    (grads, l)
}

/// Without dropout, cached MNRL (mini-batches of 3 and of 1) gives plain MNRL's loss and
/// gradients at the same batch of 8, on BERT and on MPNet (relative position bias); the
/// symmetric variant too. Packed (each mini-batch's columns in one pass) and padded (a pass per
/// column).
#[test]
fn gradcache_gradients_equal_plain_mnrl() {
    for (family, packing) in [("bert", true), ("mpnet", true), ("bert", false)] {
        let mut model = load(family, Some(0.0));
        model.set_packing(packing);
        assert_eq!(model.packs(), packing);
        let (plain, lp) = step_grads(&model, LossKind::Mnrl, None);
        for mini in [8, 4, 3, 1] {
            let (cached, lc) = step_grads(&model, LossKind::CachedMnrl, Some(mini));
            assert!(
                (lp - lc).abs() <= 1e-6,
                "{family} mini {mini}: loss {lp} vs {lc}"
            );
            let d = max_rel_diff(&cached, &plain);
            assert!(d <= 1e-5, "{family} mini {mini}: gradients differ by {d:e}");
        }
        // CachedMultipleNegativesSymmetricRankingLoss against the symmetric MNRL.
        let (sym, ls) = step_grads_with(&model, LossKind::Mnrl, None, true);
        let (csym, lcs) = step_grads_with(&model, LossKind::CachedMnrl, Some(3), true);
        assert!(
            (ls - lcs).abs() <= 1e-6 && (ls - lp).abs() > 1e-4,
            "{family}: {ls} {lcs} {lp}"
        );
        let d = max_rel_diff(&csym, &sym);
        assert!(d <= 1e-5, "{family} symmetric: gradients differ by {d:e}");
    }
}

/// With dropout on, the replay draws the masks of the first pass: one mini-batch as large as
/// the batch equals the plain step exactly as far as floats go (same seeds, same order), and
/// mini-batches of 3 equal a graph built over the same mini-batch forwards by hand. A replay
/// with other masks would be off by far more (checked: the plain step of other seeds).
#[test]
fn gradcache_replays_the_dropout_masks() {
    let model = load("bert", Some(0.1));
    let state = model.dropout_state();
    let (plain, _) = step_grads(&model, LossKind::Mnrl, None);
    let after_plain = model.dropout_state();
    model.rewind_dropout(state);
    let (one, _) = step_grads(&model, LossKind::CachedMnrl, Some(PAIRS.len()));
    assert_eq!(
        model.dropout_state(),
        after_plain,
        "the RNG ends where the plain step ends"
    );
    let d = max_rel_diff(&one, &plain);
    assert!(d <= 1e-5, "one mini-batch: {d:e}");
    // Mini-batches of 3 against the same forwards with a graph: each mini-batch's two columns
    // in one packed pass, as a plain step's.
    model.rewind_dropout(state);
    let (cached, _) = step_grads(&model, LossKind::CachedMnrl, Some(3));
    model.rewind_dropout(state);
    let vars: Vec<_> = model.named_vars().into_iter().map(|(_, v)| v).collect();
    assert!(model.packs());
    let mut parts: Vec<Vec<Tensor>> = vec![Vec::new(), Vec::new()];
    for chunk in PAIRS.chunks(3) {
        let toks = [0usize, 1].map(|c| {
            let texts: Vec<&str> = chunk
                .iter()
                .map(|p| if c == 0 { p.0 } else { p.1 })
                .collect();
            model.tokenizer.tokenize(&texts).unwrap()
        });
        let ids: Vec<Vec<&[u32]>> = toks
            .iter()
            .map(|t| t.iter().map(|x| x.ids.as_slice()).collect())
            .collect();
        let b = model.column_batches(&ids, &[], true, &Device::Cpu).unwrap();
        for (c, e) in model
            .embed_columns(&b, true)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            parts[c].push(e);
        }
    }
    let cols: Vec<Tensor> = parts.iter().map(|p| Tensor::cat(p, 0).unwrap()).collect();
    let loss = LossSpec::Base {
        kind: LossKind::Mnrl,
    }
    .build(&LossParams::default());
    let g = loss.compute(&cols, None).unwrap().backward().unwrap();
    let by_hand: Vec<Option<Tensor>> = vars.iter().map(|v| g.get(v.as_tensor()).cloned()).collect();
    let d = max_rel_diff(&cached, &by_hand);
    assert!(d <= 1e-5, "mini-batches of 3 with dropout: {d:e}");
    // Other masks are far off: the yardstick for the two checks above.
    let off = max_rel_diff(&cached, &plain);
    assert!(
        off > 1e-3,
        "dropout masks do not matter here ({off:e}): the test proves nothing"
    );
}

/// Matryoshka's value is the weighted sum of the base loss at each size (embeddings cut and
/// L2-normalised), for a cosine loss and for a distance loss (where the normalising matters).
#[test]
fn matryoshka_is_the_weighted_sum_of_the_base_loss() {
    let dev = Device::Cpu;
    let a = Tensor::randn(0f32, 1., (6, 32), &dev).unwrap();
    let p = Tensor::randn(0f32, 1., (6, 32), &dev).unwrap();
    let n = Tensor::randn(0f32, 1., (6, 32), &dev).unwrap();
    let norm =
        |t: &Tensor, d: usize| embtune::loss::normalize_rows(&t.narrow(1, 0, d).unwrap()).unwrap();
    for (kind, cols) in [
        (LossKind::Mnrl, vec![a.clone(), p.clone()]),
        (LossKind::Triplet, vec![a, p, n]),
    ] {
        let params = LossParams::default();
        let spec = LossSpec::Matryoshka {
            dims: vec![8, 32, 16],
            weights: vec![0.5, 1.0, 2.0],
            loss: Box::new(LossSpec::Base { kind }),
        };
        let got = spec
            .build(&params)
            .compute(&cols, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let base = LossSpec::Base { kind }.build(&params);
        let mut want = 0f32;
        for (d, w) in [(8, 0.5f32), (32, 1.0), (16, 2.0)] {
            let cut: Vec<Tensor> = cols.iter().map(|c| norm(c, d)).collect();
            want += w * base
                .compute(&cut, None)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        }
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{kind:?}: {got} vs {want}"
        );
        assert_eq!(
            spec.st_name(),
            format!("MatryoshkaLoss({})", kind.st_name())
        );
    }
}

/// GIST leaves out exactly the in-batch candidates its guide scores above the positive: with a
/// guide that ranks one wrong positive above the right one, the loss equals the temperature-0.01
/// cross-entropy over the remaining candidates, computed here by hand.
#[test]
fn gist_masks_what_the_guide_calls_false_negatives() {
    let dev = Device::Cpu;
    let t = |v: &[[f32; 2]; 2]| Tensor::new(v, &dev).unwrap();
    // Trained embeddings.
    let a = t(&[[1.0, 0.1], [0.2, 1.0]]);
    let p = t(&[[0.9, 0.3], [0.1, 1.0]]);
    // Guide: anchor 0 is closer to positive 1 than to its own positive 0.
    let ga = t(&[[1.0, 0.0], [0.0, 1.0]]);
    let gp = t(&[[0.6, 0.8], [0.8, 0.6]]);
    let params = LossParams::default();
    let gist = LossSpec::Base {
        kind: LossKind::Gist,
    }
    .build(&params);
    let got = gist
        .compute_guided(&[a.clone(), p.clone()], &[ga.clone(), gp.clone()], None)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let cos = |x: &[f32; 2], y: &[f32; 2]| {
        let d = x[0] * y[0] + x[1] * y[1];
        d / ((x[0] * x[0] + x[1] * x[1]).sqrt() * (y[0] * y[0] + y[1] * y[1]).sqrt())
    };
    let (av, pv) = (a.to_vec2::<f32>().unwrap(), p.to_vec2::<f32>().unwrap());
    let (gav, gpv) = (ga.to_vec2::<f32>().unwrap(), gp.to_vec2::<f32>().unwrap());
    let arr = |v: &Vec<f32>| [v[0], v[1]];
    let mut total = 0f32;
    for i in 0..2 {
        let thr = cos(&arr(&gav[i]), &arr(&gpv[i]));
        // Candidates: positives, anchors, positives (ST's ap, aa, pp blocks).
        let mut logits = Vec::new();
        for j in 0..2 {
            let keep = j == i || cos(&arr(&gav[i]), &arr(&gpv[j])) <= thr;
            logits.push(keep.then(|| cos(&arr(&av[i]), &arr(&pv[j])) / 0.01));
        }
        for j in 0..2 {
            let keep = cos(&arr(&gav[i]), &arr(&gav[j])) <= thr;
            logits.push(keep.then(|| cos(&arr(&av[i]), &arr(&av[j])) / 0.01));
        }
        for j in 0..2 {
            let keep = cos(&arr(&gpv[i]), &arr(&gpv[j])) <= thr;
            logits.push(keep.then(|| cos(&arr(&pv[i]), &arr(&pv[j])) / 0.01));
        }
        // Anchor 0: positive 1 is a false negative by the guide (0.8 > 0.6).
        if i == 0 {
            assert!(logits[1].is_none());
        }
        let kept: Vec<f32> = logits.iter().flatten().copied().collect();
        let m = kept.iter().cloned().fold(f32::MIN, f32::max);
        let lse = m + kept.iter().map(|x| (x - m).exp()).sum::<f32>().ln();
        total += lse - logits[i].unwrap();
    }
    let want = total / 2.0;
    assert!(
        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    // Without the guide it refuses to run.
    assert!(gist.compute(&[a, p], None).is_err());
}

fn write_pairs_jsonl(path: &Path) {
    let rows: String = PAIRS
        .iter()
        .cycle()
        .take(24)
        .enumerate()
        .map(|(i, (q, d))| {
            format!(
                "{}\n",
                serde_json::json!({"query": format!("{q} {i}"), "answer": format!("{d} ({i})")})
            )
        })
        .collect();
    std::fs::write(path, rows).unwrap();
}

/// An STS file of the pairs with made-up scores (an evaluation set for mechanics tests).
fn write_sts(dir: &Path) -> std::path::PathBuf {
    let sts = dir.join("sts.tsv");
    let lines: String = std::iter::once("sentence1\tsentence2\tscore\n".to_string())
        .chain(
            PAIRS
                .iter()
                .enumerate()
                .map(|(i, (a, b))| format!("{a}\t{b}\t{}\n", (i % 5) as f64 / 4.0)),
        )
        .collect();
    std::fs::write(&sts, lines).unwrap();
    sts
}

fn train(args: &[&str]) -> std::process::Output {
    let mut a = vec!["train"];
    a.extend_from_slice(args);
    embtune(&a)
}

/// `--loss cached-mnrl` trains end to end (and says GradCache); `--prompts` are trained with
/// and saved into the output's config_sentence_transformers.json (also as its query/document
/// prompts), so the saved model embeds queries with them.
#[test]
fn cached_mnrl_with_prompts_trains_and_saves_the_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.jsonl");
    write_pairs_jsonl(&data);
    let out = tmp.path().join("out");
    let m = fixture_model("bert");
    let r = train(&[
        "-m",
        s(&m),
        "-d",
        s(&data),
        "-o",
        s(&out),
        "--loss",
        "cached-mnrl",
        "--mini-batch-size",
        "3",
        "-b",
        "8",
        "--max-steps",
        "2",
        "--prompts",
        "anchor=\"query: \",positive=passage: ",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("GradCache"), "{err}");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("config_sentence_transformers.json")).unwrap(),
    )
    .unwrap();
    for (k, v) in [
        ("anchor", "query: "),
        ("positive", "passage: "),
        ("query", "query: "),
        ("document", "passage: "),
    ] {
        assert_eq!(cfg["prompts"][k], v, "{cfg}");
    }
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(tc["step"], "cached");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains("CachedMultipleNegativesRankingLoss"),
        "{card}"
    );
    // The saved model applies its query prompt when asked for it by name.
    let trained = SentenceEncoder::load(
        &ModelSpec {
            model: s(&out).into(),
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    let p = trained
        .prompts
        .resolve(None, None, embtune::model::prompts::Side::Query)
        .unwrap();
    assert_eq!(p.as_deref(), Some("query: "));
}

/// Matryoshka training: the card has the primary metric at each size, `--truncate-dim` cuts
/// embeddings to a prefix (this model has no Normalize, so exactly the first dimensions), and
/// a size larger than the model's is a one-line error before training.
#[test]
fn matryoshka_training_and_truncated_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.jsonl");
    write_pairs_jsonl(&data);
    let sts = write_sts(tmp.path());
    let out = tmp.path().join("out");
    let m = fixture_model("bert");
    let r = train(&[
        "-m",
        s(&m),
        "-d",
        s(&data),
        "-o",
        s(&out),
        "--loss",
        "mnrl",
        "-b",
        "8",
        "--max-steps",
        "2",
        "--matryoshka-dims",
        "32,16,8",
        "--matryoshka-weights",
        "1,1,0.5",
        "--eval-data",
        s(&sts),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains("MatryoshkaLoss(MultipleNegativesRankingLoss)"),
        "{card}"
    );
    assert!(card.contains("By embedding size (Matryoshka)"), "{card}");
    for d in ["| 32 |", "| 16 |", "| 8 |"] {
        assert!(card.contains(d), "{d} missing:\n{card}");
    }
    // --truncate-dim: the first 8 dimensions of the full embedding.
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "A man is playing a guitar.\nStocks fell.\n").unwrap();
    let (full, cut) = (tmp.path().join("full.jsonl"), tmp.path().join("cut.jsonl"));
    for (o, extra) in [(&full, vec![]), (&cut, vec!["--truncate-dim", "8"])] {
        let mut a = vec!["embed", "-m", s(&out), "-d", s(&input), "-o", s(o)];
        a.extend(extra);
        let r = embtune(&a);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let rows = |p: &Path| -> Vec<Vec<f64>> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (f, c) = (rows(&full), rows(&cut));
    assert_eq!(c[0].len(), 8);
    assert_eq!(c[0], f[0][..8].to_vec());
    // similarity --truncate-dim: the cosine of the cut embeddings.
    let r = embtune(&[
        "similarity",
        "-m",
        s(&out),
        "--json",
        "--truncate-dim",
        "8",
        "A man is playing a guitar.",
        "Stocks fell.",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let got = serde_json::from_slice::<serde_json::Value>(&r.stdout).unwrap()["cosine"]
        .as_f64()
        .unwrap();
    let dot: f64 = c[0].iter().zip(&c[1]).map(|(a, b)| a * b).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!(
        (got - dot / (norm(&c[0]) * norm(&c[1]))).abs() < 1e-5,
        "{got}"
    );
    // eval --truncate-dim 8 gives the card's value at 8 dimensions.
    let r = embtune(&[
        "eval",
        "-m",
        s(&out),
        "-d",
        s(&sts),
        "--json",
        "--truncate-dim",
        "8",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v = serde_json::from_slice::<serde_json::Value>(&r.stdout).unwrap()["spearman_cosine"]
        .as_f64()
        .unwrap();
    assert!(
        card.contains(&format!("| 8 | {v:.4} |")),
        "{v:.4} not the card's value at 8:\n{card}"
    );
    let e = embtune(&[
        "embed",
        "-m",
        s(&out),
        "-d",
        s(&input),
        "-o",
        s(&tmp.path().join("x.npy")),
        "--truncate-dim",
        "33",
    ]);
    assert_one_line_error(&e, &["--truncate-dim 33", "32"]);
    let e = train(&[
        "-m",
        s(&m),
        "-d",
        s(&data),
        "-o",
        s(&tmp.path().join("o2")),
        "--loss",
        "mnrl",
        "-b",
        "8",
        "--matryoshka-dims",
        "64,16",
    ]);
    assert_one_line_error(&e, &["--matryoshka-dims", "64", "32"]);
    let e = train(&[
        "-m",
        s(&m),
        "-d",
        s(&data),
        "-o",
        s(&tmp.path().join("o3")),
        "--loss",
        "cached-mnrl",
        "-b",
        "8",
        "--mini-batch-size",
        "0",
    ]);
    assert_one_line_error(&e, &["--mini-batch-size 0", "≥ 1"]);
}

/// GIST with the base model as its guide trains; without a guide it is refused before any
/// work, and a guide flag with another loss is refused naming the losses it applies to.
#[test]
fn gist_trains_with_a_guide_and_needs_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.jsonl");
    write_pairs_jsonl(&data);
    let m = fixture_model("bert");
    for loss in ["gist", "cached-gist"] {
        let out = tmp.path().join(loss);
        let r = train(&[
            "-m",
            s(&m),
            "-d",
            s(&data),
            "-o",
            s(&out),
            "--loss",
            loss,
            "--guide-model",
            s(&m),
            "-b",
            "8",
            "--max-steps",
            "2",
        ]);
        assert!(
            r.status.success(),
            "{loss}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let card = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(card.contains("GISTEmbedLoss"), "{card}");
    }
    let e = train(&[
        "-m",
        s(&m),
        "-d",
        s(&data),
        "-o",
        s(&tmp.path().join("x")),
        "--loss",
        "gist",
    ]);
    assert_one_line_error(&e, &["--guide-model"]);
    let e = train(&[
        "-m",
        s(&m),
        "-d",
        s(&data),
        "-o",
        s(&tmp.path().join("y")),
        "--loss",
        "mnrl",
        "--guide-model",
        s(&m),
    ]);
    assert_one_line_error(&e, &["--guide-model", "gist"]);
}

/// Several evaluation sets: each is evaluated (before step 1 and at the end), metrics.jsonl
/// names each, the first one decides the best model, the card lists both; a retrieval set is
/// recognised by its folder.
#[test]
fn several_evaluation_sets_and_a_retrieval_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.jsonl");
    write_pairs_jsonl(&data);
    let beir = tmp.path().join("beir");
    std::fs::create_dir_all(beir.join("qrels")).unwrap();
    let corpus: String = PAIRS
        .iter()
        .enumerate()
        .map(|(i, (_, d))| {
            format!(
                "{}\n",
                serde_json::json!({"_id": format!("d{i}"), "title": "", "text": d})
            )
        })
        .collect();
    std::fs::write(beir.join("corpus.jsonl"), corpus).unwrap();
    let queries: String = PAIRS
        .iter()
        .enumerate()
        .map(|(i, (q, _))| {
            format!(
                "{}\n",
                serde_json::json!({"_id": format!("q{i}"), "text": q})
            )
        })
        .collect();
    std::fs::write(beir.join("queries.jsonl"), queries).unwrap();
    let qrels: String = (0..PAIRS.len())
        .map(|i| format!("q{i}\td{i}\t1\n"))
        .collect();
    std::fs::write(
        beir.join("qrels/dev.tsv"),
        format!("query-id\tcorpus-id\tscore\n{qrels}"),
    )
    .unwrap();
    let sts = write_sts(tmp.path());
    let out = tmp.path().join("out");
    let r = train(&[
        "-m",
        s(&fixture_model("bert")),
        "-d",
        s(&data),
        "-o",
        s(&out),
        "--loss",
        "mnrl",
        "-b",
        "8",
        "--max-steps",
        "3",
        "--eval-data",
        s(&beir),
        "--eval-split",
        "dev",
        "--eval-data",
        s(&sts),
        "--eval-task",
        "retrieval",
        "--eval-task",
        "sts",
        "--save-best",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("eval").is_some())
        .collect();
    let seen: Vec<(u64, u64)> = lines
        .iter()
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["eval_index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, vec![(0, 0), (0, 1), (3, 0), (3, 1)]);
    assert!(lines[0]["eval"]["cosine_ndcg@10"].is_number());
    assert!(lines[1]["eval"]["spearman_cosine"].is_number());
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("best/embtune_best.json")).unwrap())
            .unwrap();
    assert_eq!(best["metric"], "cosine_ndcg@10");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        card.contains("(task retrieval)") && card.contains("(task sts)"),
        "{card}"
    );
    // The report: the first set's chart, and one chart for the second set.
    let main = std::fs::read_to_string(out.join("eval.svg")).unwrap();
    assert!(main.contains("cosine_ndcg@10") && !main.contains("spearman"));
    let second = std::fs::read_to_string(out.join("eval-1.svg")).unwrap();
    assert!(second.contains("spearman_cosine"));
    // Two tasks for three sets is refused.
    let e = train(&[
        "-m",
        s(&fixture_model("bert")),
        "-d",
        s(&data),
        "-o",
        s(&tmp.path().join("o2")),
        "--loss",
        "mnrl",
        "--eval-data",
        s(&sts),
        "--eval-data",
        s(&sts),
        "--eval-data",
        s(&sts),
        "--eval-task",
        "sts",
        "--eval-task",
        "sts",
    ]);
    assert_one_line_error(&e, &["--eval-task given 2 times for 3 --eval-data"]);
}

/// `pairs --from qrels`: a BEIR folder's training judgments become (query, document) rows —
/// for pubmedqa exactly the shared train_pairs.jsonl — which `train --loss mnrl` takes as they
/// are; with `--mine` negatives come from the folder's corpus.
#[test]
fn qrels_become_training_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::common::shared().join("data/retrieval/pubmedqa-pqal");
    let out = tmp.path().join("pairs.jsonl");
    let r = embtune(&[
        "pairs",
        "--from",
        "qrels",
        "-d",
        s(&dir),
        "--split",
        "train",
        "-o",
        s(&out),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let read = |p: &Path, a: &str, b: &str| -> std::collections::BTreeSet<(String, String)> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v[a].as_str().unwrap().to_string(),
                    v[b].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let got = read(&out, "anchor", "positive");
    assert_eq!(got.len(), 500);
    assert_eq!(
        got,
        read(&dir.join("train_pairs.jsonl"), "query", "positive")
    );
    // Straight into training (a few rows of it, tiny model).
    let few = tmp.path().join("few.jsonl");
    let text = std::fs::read_to_string(&out).unwrap();
    std::fs::write(
        &few,
        text.lines()
            .take(16)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let m = fixture_model("bert");
    let r = train(&[
        "-m",
        s(&m),
        "-d",
        s(&few),
        "-o",
        s(&tmp.path().join("t")),
        "--loss",
        "mnrl",
        "-b",
        "8",
        "--max-steps",
        "1",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Mined negatives from the corpus (a small copy of the folder keeps it quick).
    let small = tmp.path().join("small");
    std::fs::create_dir_all(small.join("qrels")).unwrap();
    let corpus: Vec<String> = std::fs::read_to_string(dir.join("corpus.jsonl"))
        .unwrap()
        .lines()
        .take(60)
        .map(String::from)
        .collect();
    let ids: Vec<String> = corpus
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    std::fs::write(small.join("corpus.jsonl"), corpus.join("\n") + "\n").unwrap();
    std::fs::copy(dir.join("queries.jsonl"), small.join("queries.jsonl")).unwrap();
    let qrels: String = std::fs::read_to_string(dir.join("qrels/train.tsv"))
        .unwrap()
        .lines()
        .filter(|l| ids.iter().any(|i| l.split('\t').nth(1) == Some(i.as_str())))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(small.join("qrels/train.tsv"), qrels).unwrap();
    let mined = tmp.path().join("mined.jsonl");
    let r = embtune(&[
        "pairs",
        "--from",
        "qrels",
        "-d",
        s(&small),
        "--mine",
        "-m",
        s(&m),
        "--num-negatives",
        "2",
        "--output-format",
        "n-tuple",
        "-o",
        s(&mined),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let docs: std::collections::HashSet<String> = corpus
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&mined)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!rows.is_empty());
    for v in &rows {
        for k in ["negative_1", "negative_2"] {
            let n = v[k].as_str().unwrap();
            assert!(
                docs.contains(n) && n != v["positive"].as_str().unwrap(),
                "{k}: {n}"
            );
        }
    }
    // Without --mine the negatives flags have nothing to do.
    let e = embtune(&[
        "pairs",
        "--from",
        "qrels",
        "-d",
        s(&small),
        "--num-negatives",
        "2",
        "-o",
        s(&tmp.path().join("x.jsonl")),
    ]);
    assert_one_line_error(&e, &["--num-negatives", "--mine"]);
}

/// FlagEmbedding's rows (query, pos [..], neg [..]) are read as anchor, positive and
/// negative_1..k — the real MS MARCO rows with 25 mined negatives each train as they are — and
/// a row whose `pos` is not a list is an error naming the line and field.
#[test]
fn flagembedding_rows_train() {
    let tmp = tempfile::tempdir().unwrap();
    let data = crate::common::shared()
        .join("data/retrieval/hard-negatives/flagembedding_msmarco_hn.jsonl");
    let m = fixture_model("bert");
    let out = tmp.path().join("o");
    let r = train(&[
        "-m",
        s(&m),
        "-d",
        s(&data),
        "-o",
        s(&out),
        "--loss",
        "mnrl",
        "-b",
        "4",
        "--max-steps",
        "2",
    ]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("FlagEmbedding rows read as anchor (query), positive (one row per pos) and 25 negatives each"), "{err}");
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(card.contains("`negative_25`"), "{card}");
    // The nq rows: 79 negatives in the poorest row, so 79 for all.
    let nq =
        crate::common::shared().join("data/retrieval/hard-negatives/flagembedding_nq_hn.jsonl");
    let r = embtune(&["pairs", "--check", s(&nq)]);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(
        err.contains("79 negatives each (the fewest any row has; rows hold up to 100)"),
        "{err}"
    );
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"query\": \"q\", \"pos\": [\"p\"], \"neg\": [\"n\"]}\n{\"query\": \"q2\", \"pos\": \"p2\", \"neg\": []}\n").unwrap();
    let e = train(&[
        "-m",
        s(&m),
        "-d",
        s(&bad),
        "-o",
        s(&tmp.path().join("b")),
        "--loss",
        "mnrl",
        "-b",
        "1",
    ]);
    assert_one_line_error(&e, &["bad.jsonl:2", "\"pos\"", "list of texts"]);
}
