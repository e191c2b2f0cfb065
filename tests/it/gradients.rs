//! Gradients flow: every trainable parameter of the real model gets a finite, non-zero gradient
//! through pooling and a simple loss; on a tiny f64 model, autograd matches central finite
//! differences. Also dropout semantics of `forward_t`.

use crate::common::{self, tiny};
use candle_core::{DType, Device, Tensor, Var};
use embtune::model::SentenceEncoder;

/// A simple loss on sentence embeddings: 1 − mean cosine of the (a, b) pairs.
fn pair_loss(model: &SentenceEncoder, a: &[&str], b: &[&str], train: bool) -> Tensor {
    let dev = model.device().clone();
    let ea = model
        .embed_batch(&model.tokenizer.encode(a, &dev).unwrap(), train)
        .unwrap();
    let eb = model
        .embed_batch(&model.tokenizer.encode(b, &dev).unwrap(), train)
        .unwrap();
    let na = embtune::model::pooling::l2_normalize(&ea).unwrap();
    let nb = embtune::model::pooling::l2_normalize(&eb).unwrap();
    let cos = (na * nb).unwrap().sum(1).unwrap().mean_all().unwrap();
    (cos.ones_like().unwrap() - cos).unwrap()
}

#[test]
fn every_real_parameter_gets_a_finite_nonzero_gradient() {
    let model = common::load_real();
    let a = [
        "a man is playing a flute .",
        "a woman is slicing an onion .",
    ];
    let b = ["a man plays the flute .", "someone is cutting vegetables ."];
    let loss = pair_loss(&model, &a, &b, true);
    let grads = loss.backward().unwrap();
    let vars = model.named_vars();
    assert_eq!(vars.len(), 5 + 6 * 16, "parameter count");
    let mut bad = Vec::new();
    for (name, var) in &vars {
        match grads.get(var.as_tensor()) {
            None => bad.push(format!("{name}: no gradient")),
            Some(g) => {
                let v: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
                if v.iter().any(|x| !x.is_finite()) {
                    bad.push(format!("{name}: non-finite gradient"));
                } else if v.iter().all(|x| *x == 0.0) {
                    bad.push(format!("{name}: all-zero gradient"));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "parameters without a usable gradient: {bad:?}"
    );
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// Central differences on a tiny f64 model: relative error ≤ 1e-6 for sampled entries of every
/// parameter tensor (dropout off, so the function is deterministic).
#[test]
fn tiny_encoder_gradients_match_finite_differences() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny::tiny_encoder(dir.path(), 3, DType::F64, false);
    let a = ["the cat sat", "dogs run fast!"];
    let b = ["a cat is sitting", "quick dog"];
    let loss = pair_loss(&model, &a, &b, false);
    let grads = loss.backward().unwrap();
    let eps = 1e-6;
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for (name, var) in model.named_vars() {
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let orig: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        // Word embeddings: only rows of tokens that occur get gradient; pick the largest entries.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&i, &j| g[j].abs().total_cmp(&g[i].abs()));
        for &k in idx.iter().take(3) {
            let fd = central_difference(&model, &var, &orig, k, eps, &a, &b);
            let denom = g[k].abs().max(fd.abs()).max(1e-8);
            let rel = (g[k] - fd).abs() / denom;
            assert!(
                rel <= 1e-4,
                "{name}[{k}]: autograd {} vs finite difference {fd} (rel {rel:e})",
                g[k]
            );
            worst = worst.max(rel);
            checked += 1;
        }
    }
    assert!(checked >= 3 * (5 + 2 * 16));
    assert!(worst <= 1e-4);
}

fn central_difference(
    model: &SentenceEncoder,
    var: &Var,
    orig: &[f64],
    k: usize,
    eps: f64,
    a: &[&str],
    b: &[&str],
) -> f64 {
    let shape = var.as_tensor().shape().clone();
    let eval_at = |delta: f64| {
        let mut v = orig.to_vec();
        v[k] += delta;
        var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
            .unwrap();
        scalar(&pair_loss(model, a, b, false))
    };
    let plus = eval_at(eps);
    let minus = eval_at(-eps);
    var.set(&Tensor::from_vec(orig.to_vec(), shape, &Device::Cpu).unwrap())
        .unwrap();
    (plus - minus) / (2.0 * eps)
}

fn embed(model: &SentenceEncoder, texts: &[&str], train: bool) -> Vec<Vec<f32>> {
    let batch = model.tokenizer.encode(texts, model.device()).unwrap();
    model.embed_batch(&batch, train).unwrap().to_vec2().unwrap()
}

#[test]
fn dropout_is_real_seeded_and_off_in_eval_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = tiny::tiny_encoder(dir.path(), 5, DType::F32, false);
    let texts = ["hello world", "a much longer sentence with more tokens"];
    let eval1 = embed(&model, &texts, false);
    let eval2 = embed(&model, &texts, false);
    assert_eq!(eval1, eval2, "train=false must be deterministic");

    model.seed_dropout(42);
    let t1 = embed(&model, &texts, true);
    let t2 = embed(&model, &texts, true);
    assert_ne!(t1, t2, "two train=true calls must draw different masks");
    assert_ne!(t1, eval1, "train=true must differ from eval mode");

    model.seed_dropout(42);
    let t1_again = embed(&model, &texts, true);
    assert_eq!(t1, t1_again, "the same seed must give identical outputs");

    model.set_dropout(0.0);
    assert_eq!(
        embed(&model, &texts, true),
        eval1,
        "dropout 0 makes train mode deterministic"
    );
}
