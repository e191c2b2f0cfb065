//! Loss parity with sentence-transformers on the real model (../shared/reference/loss_reference.json)
//! and autograd-vs-finite-difference gradient checks for every loss.

use crate::common;
use candle_core::{DType, Device, Tensor, Var};
use embtune::loss::{build, LossKind, LossParams};
use serde_json::Value;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Each column embedded as its own padded batch, eval mode, max_seq_length 128 — as the reference.
#[test]
fn losses_match_sentence_transformers_on_the_first_16_stsb_pairs() {
    let r: Value = serde_json::from_str(
        &std::fs::read_to_string(common::shared().join("reference/loss_reference.json")).unwrap(),
    )
    .unwrap();
    let mut spec = common::real_spec();
    spec.max_seq_length = Some(r["max_seq_length"].as_u64().unwrap() as usize);
    let model = embtune::model::SentenceEncoder::load(&spec, &Device::Cpu).unwrap();
    let embed = |texts: &[String]| {
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        model
            .embed_batch(&model.tokenizer.encode(&refs, &Device::Cpu).unwrap(), false)
            .unwrap()
    };
    let s1 = embed(&strings(&r["sentence1"]));
    let s2 = embed(&strings(&r["sentence2"]));
    let neg = embed(&strings(&r["triplet_negatives_sentence2_rotated_by_one"]));
    let f32s = |k: &str| -> Tensor {
        let v: Vec<f32> = r[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        Tensor::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap()
    };
    let sim = f32s("similarity_labels_score_div_5");
    let bin = f32s("contrastive_labels_score_ge_2.5");
    let cases: Vec<(&str, LossKind, Vec<Tensor>, Option<&Tensor>)> = vec![
        (
            "CoSENTLoss",
            LossKind::Cosent,
            vec![s1.clone(), s2.clone()],
            Some(&sim),
        ),
        (
            "CosineSimilarityLoss",
            LossKind::Cosine,
            vec![s1.clone(), s2.clone()],
            Some(&sim),
        ),
        (
            "MultipleNegativesRankingLoss",
            LossKind::Mnrl,
            vec![s1.clone(), s2.clone()],
            None,
        ),
        (
            "ContrastiveLoss",
            LossKind::Contrastive,
            vec![s1.clone(), s2.clone()],
            Some(&bin),
        ),
        (
            "TripletLoss",
            LossKind::Triplet,
            vec![s1.clone(), s2.clone(), neg.clone()],
            None,
        ),
    ];
    for (name, kind, embs, labels) in cases {
        let want = r["losses"][name]["value"].as_f64().unwrap();
        let got = build(kind, &LossParams::default())
            .compute(&embs, labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64;
        // The reference values are rounded to 6 decimals: allow that on top of 1e-4 relative.
        let tol = 1e-4 * want.abs() + 5e-7;
        eprintln!("{name}: embtune {got:.6} vs sentence-transformers {want:.6}");
        assert!(
            (got - want).abs() <= tol,
            "{name}: {got} vs reference {want}"
        );
    }
}

fn random(rng: &mut embtune::rng::Rng, b: usize, d: usize) -> Var {
    let v: Vec<f64> = (0..b * d).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    Var::from_tensor(&Tensor::from_vec(v, (b, d), &Device::Cpu).unwrap()).unwrap()
}

/// Gradients w.r.t. the embeddings against central differences (f64), for every loss and distance.
#[test]
fn every_loss_gradient_matches_finite_differences() {
    use embtune::loss::Distance;
    let mut rng = embtune::rng::Rng::new(11);
    let (b, d) = (6, 5);
    let score = Tensor::new(&[0.9f64, 0.1, 0.5, 0.7, 0.2, 0.95], &Device::Cpu).unwrap();
    let binary = Tensor::new(&[1f64, 0., 1., 0., 1., 0.], &Device::Cpu).unwrap();
    let classes = Tensor::new(&[0f64, 2., 1., 1., 0., 2.], &Device::Cpu).unwrap();
    let margins = Tensor::new(&[0.3f64, -0.2, 0.8, 0.1, 0.0, 0.5], &Device::Cpu).unwrap();
    let teacher = random(&mut rng, b, d).as_tensor().clone();
    let p = |distance: Option<Distance>, margin: Option<f64>, symmetric: bool| LossParams {
        distance,
        margin,
        symmetric,
        ..Default::default()
    };
    let cases: Vec<(LossKind, LossParams, usize, Option<&Tensor>)> = vec![
        (LossKind::Cosent, p(None, None, false), 2, Some(&score)),
        // d = 5: AnglE pads an odd dimension with a zero.
        (LossKind::Angle, p(None, None, false), 2, Some(&score)),
        (LossKind::Cosine, p(None, None, false), 2, Some(&score)),
        (LossKind::Mnrl, p(None, None, false), 2, None),
        (LossKind::Mnrl, p(None, None, true), 3, None),
        (
            LossKind::Contrastive,
            p(None, None, false),
            2,
            Some(&binary),
        ),
        (
            LossKind::Contrastive,
            p(Some(Distance::Euclidean), Some(2.0), false),
            2,
            Some(&binary),
        ),
        (
            LossKind::OnlineContrastive,
            p(None, Some(1.5), false),
            2,
            Some(&binary),
        ),
        (LossKind::Triplet, p(None, None, false), 3, None),
        (
            LossKind::Triplet,
            p(Some(Distance::Cosine), Some(0.5), false),
            3,
            None,
        ),
        (
            LossKind::Triplet,
            p(Some(Distance::Manhattan), Some(4.0), false),
            3,
            None,
        ),
        (LossKind::Mse, p(None, None, false), 2, Some(&teacher)),
        (LossKind::MarginMse, p(None, None, false), 3, Some(&margins)),
        (LossKind::Softmax, p(None, None, false), 2, Some(&classes)),
    ];
    for (kind, params, cols, labels) in cases {
        let loss = build(kind, &params);
        // Softmax's classifier (f32, applied in the embeddings' f64).
        let init = embtune::loss::head::HeadInit {
            dim: d,
            num_classes: 3,
            teacher_dim: d,
            teacher_projection: false,
            device: &Device::Cpu,
            seed: 1,
        };
        loss.init(&init).unwrap();
        let vars: Vec<Var> = (0..cols).map(|_| random(&mut rng, b, d)).collect();
        let f = |vs: &[Var]| {
            let ts: Vec<Tensor> = vs.iter().map(|v| v.as_tensor().clone()).collect();
            loss.compute(&ts, labels).unwrap()
        };
        let l = f(&vars);
        assert_eq!(l.dtype(), DType::F64);
        let grads = l.backward().unwrap();
        let mut nonzero = false;
        for (c, v) in vars.iter().enumerate() {
            let g: Vec<f64> = grads
                .get(v.as_tensor())
                .map(|g| g.flatten_all().unwrap().to_vec1().unwrap())
                .unwrap_or(vec![0.0; b * d]);
            let orig: Vec<f64> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            for k in 0..b * d {
                let eps = 1e-6;
                let at = |delta: f64| {
                    let mut x = orig.clone();
                    x[k] += delta;
                    v.set(&Tensor::from_vec(x, (b, d), &Device::Cpu).unwrap())
                        .unwrap();
                    f(&vars).to_scalar::<f64>().unwrap()
                };
                let fd = (at(eps) - at(-eps)) / (2.0 * eps);
                v.set(&Tensor::from_vec(orig.clone(), (b, d), &Device::Cpu).unwrap())
                    .unwrap();
                // Relative 1e-4, with an absolute floor for round-off of the differences (~1e-9).
                let tol = 1e-4 * g[k].abs().max(fd.abs()) + 1e-7;
                assert!(
                    (g[k] - fd).abs() <= tol,
                    "{kind:?} {params:?} column {c} [{k}]: autograd {} vs fd {fd}",
                    g[k]
                );
                nonzero |= g[k].abs() > 1e-6;
            }
        }
        assert!(nonzero, "{kind:?}: all gradients zero");
    }
}

/// AnglELoss and its angle similarity equal sentence-transformers 6.2's on fixed embeddings
/// (tests/fixtures/losses/angle.json, scripts/make-loss-reference.py): even and odd dimensions,
/// and 384 dimensions at batch 16.
#[test]
fn angle_loss_equals_sentence_transformers() {
    let path = common::repo_root().join("tests/fixtures/losses/angle.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let loss = build(LossKind::Angle, &LossParams::default());
    for case in r["cases"].as_array().unwrap() {
        let (b, d) = (
            case["b"].as_u64().unwrap() as usize,
            case["d"].as_u64().unwrap() as usize,
        );
        let t = |k: &str| -> Tensor {
            let v: Vec<f64> = case[k]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect();
            Tensor::from_vec(v, (b, d), &Device::Cpu).unwrap()
        };
        let labels: Vec<f64> = case["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let (e1, e2) = (t("e1"), t("e2"));
        let sims: Vec<f64> = embtune::loss::pairwise_angle(&e1, &e2)
            .unwrap()
            .to_vec1()
            .unwrap();
        for (ours, st) in sims.iter().zip(case["angle_sim"].as_array().unwrap()) {
            assert!(
                (ours - st.as_f64().unwrap()).abs() < 1e-12,
                "d {d}: {ours} vs {st}"
            );
        }
        let y = Tensor::from_vec(labels, b, &Device::Cpu).unwrap();
        let l: f64 = loss
            .compute(&[e1, e2], Some(&y))
            .unwrap()
            .to_scalar()
            .unwrap();
        let st = case["loss"].as_f64().unwrap();
        assert!(
            (l - st).abs() < 1e-9 * st.abs().max(1.0),
            "d {d}: loss {l} vs {st}"
        );
    }
}

/// A nested JSON array of numbers as an f64 tensor of its shape.
fn nested(v: &Value) -> Tensor {
    fn walk(v: &Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<f64>) {
        match v.as_array() {
            Some(a) => {
                if shape.len() == depth {
                    shape.push(a.len());
                }
                a.iter().for_each(|x| walk(x, depth + 1, shape, out));
            }
            None => out.push(v.as_f64().unwrap()),
        }
    }
    let (mut shape, mut out) = (Vec::new(), Vec::new());
    walk(v, 0, &mut shape, &mut out);
    Tensor::from_vec(out, shape, &Device::Cpu).unwrap()
}

/// MSELoss (one teacher embedding for all columns, one per column, a projection into a wider
/// teacher space), MarginMSELoss (one and two negatives, raw scores) and SoftmaxLoss (a fixed
/// classifier) equal sentence-transformers 6.2's on fixed embeddings
/// (tests/fixtures/losses/distill.json, scripts/make-loss-reference.py).
#[test]
fn distillation_and_softmax_losses_equal_sentence_transformers() {
    use embtune::loss::distill::{MarginMse, Mse};
    use embtune::loss::head::LinearHead;
    use embtune::loss::softmax::Softmax;
    use embtune::loss::Loss;
    let path = common::repo_root().join("tests/fixtures/losses/distill.json");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cols: Vec<Tensor> = r["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(nested)
        .collect();
    let head =
        |c: &Value| LinearHead::from_tensors(&nested(&c["weight"]), &nested(&c["bias"])).unwrap();
    let cases: Vec<(&str, Box<dyn Loss>)> = vec![
        ("mse_broadcast", Box::new(Mse::with_projection(None))),
        ("mse_per_column", Box::new(Mse::with_projection(None))),
        (
            "mse_projection",
            Box::new(Mse::with_projection(Some(head(&r["mse_projection"])))),
        ),
        ("margin_one", Box::new(MarginMse)),
        ("margin_two", Box::new(MarginMse)),
        ("margin_scores", Box::new(MarginMse)),
        (
            "softmax",
            Box::new(Softmax::with_classifier(head(&r["softmax"]))),
        ),
    ];
    for (name, loss) in cases {
        let c = &r[name];
        let n = c["columns"].as_u64().unwrap() as usize;
        let labels = nested(&c["labels"]);
        let ours: f64 = loss
            .compute(&cols[..n], Some(&labels))
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_scalar()
            .unwrap();
        let st = c["loss"].as_f64().unwrap();
        assert!(
            (ours - st).abs() < 1e-9 * st.abs().max(1.0),
            "{name}: embtune {ours} vs sentence-transformers {st}"
        );
    }
}
