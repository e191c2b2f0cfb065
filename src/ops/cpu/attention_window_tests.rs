//! The CPU fused attention with a sliding window and on long sentences (the blocked forward of
//! `attention_long`), against full attention on the composed ops under the additive masks.

#[cfg(test)]
mod tests {
    use crate::ops::composed;
    use crate::ops::cpu::attention::attention;
    use crate::ops::cpu::testing::check;
    use crate::ops::test_util::randn;
    use crate::ops::Dropout;
    use candle_core::Var;
    use candle_core::{Device, Tensor};
    use std::sync::Arc;

    /// Sentences longer than a few 16-column blocks, so a windowed row computes only its own
    /// key range: the fused op still equals full attention under the additive window mask
    /// (values and gradients, with dropout), at the real tokens.
    #[test]
    fn windowed_rows_compute_only_their_keys_and_agree() {
        agrees_with_full_attention(
            45,
            &[45, 30],
            &[(None, Some(5)), (Some(Dropout::new(0.1, 9)), Some(17))],
        );
    }

    /// Sentences of at least `attention_long::LONG` tokens take the blocked-product forward
    /// (the backward stays the per-row kernel): full and windowed, with dropout and padding
    /// (the second sentence ends inside the last block).
    #[test]
    fn long_sentences_take_the_blocked_forward_and_agree() {
        let s = crate::ops::cpu::attention_long::LONG + 44;
        agrees_with_full_attention(
            s,
            &[s, s - 70],
            &[
                (None, None),
                (Some(Dropout::new(0.1, 3)), Some(40)),
                (None, Some(7)),
            ],
        );
    }

    fn agrees_with_full_attention(
        s: usize,
        lens: &[usize],
        cases: &[(Option<Dropout>, Option<usize>)],
    ) {
        let (b, h, heads) = (lens.len(), 16, 2);
        let mut keep = vec![0f32; b * s];
        for (i, &l) in lens.iter().enumerate() {
            keep[i * s..i * s + l].iter_mut().for_each(|x| *x = 1.0);
        }
        let mask: Vec<u32> = keep.iter().map(|&x| x as u32).collect();
        let mask = Tensor::from_vec(mask, (b, s), &Device::Cpu).unwrap();
        let q_keep = Tensor::from_vec(keep.clone(), (b, s, 1), &Device::Cpu).unwrap();
        let keep = Arc::new(keep);
        for &(ref drop, w) in cases {
            let q = Var::from_tensor(&randn(&[b, s, h], 1, 2.0)).unwrap();
            let k = Var::from_tensor(&randn(&[b, s, h], 2, 2.0)).unwrap();
            let v = Var::from_tensor(&randn(&[b, s, h], 3, 1.0)).unwrap();
            let qkv = Tensor::cat(&[q.as_tensor(), k.as_tensor(), v.as_tensor()], 2).unwrap();
            let fused = attention(
                &qkv,
                crate::ops::cpu::attention::Rows::Keep(keep.clone()),
                heads,
                drop.clone(),
                None,
                w,
            )
            .unwrap();
            let split = |t: &Tensor| {
                t.reshape((b, s, heads, h / heads))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (qh, kh, vh) = (
                split(q.as_tensor()),
                split(k.as_tensor()),
                split(v.as_tensor()),
            );
            let scale = 1.0 / ((h / heads) as f64).sqrt();
            let mut scores =
                (qh.matmul(&kh.t().unwrap().contiguous().unwrap()).unwrap() * scale).unwrap();
            if let Some(w) = w {
                let m = composed::window_mask(s, w, candle_core::DType::F32, &Device::Cpu).unwrap();
                scores = scores.broadcast_add(&m).unwrap();
            }
            let scores = scores
                .broadcast_add(
                    &composed::additive_attention_mask(&mask, candle_core::DType::F32).unwrap(),
                )
                .unwrap();
            let mut probs = composed::softmax_last_dim(&scores).unwrap();
            if let Some(d) = drop {
                let f: Vec<f32> = (0..(b * heads * s * s) as u64)
                    .map(|i| d.factor(i))
                    .collect();
                probs = probs
                    .mul(&Tensor::from_vec(f, (b, heads, s, s), &Device::Cpu).unwrap())
                    .unwrap();
            }
            let composed = probs
                .matmul(&vh)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
                .reshape((b, s, h))
                .unwrap();
            let at_tokens = |t: &Tensor| t.broadcast_mul(&q_keep).unwrap();
            check(
                &[("q", &q), ("k", &k), ("v", &v)],
                &at_tokens(&fused),
                &at_tokens(&composed),
                1e-5,
                1e-5,
            );
        }
    }
}
