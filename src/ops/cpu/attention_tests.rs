//! Tests of the CPU fused attention core (`attention.rs`): against the composed candle ops
//! (values and gradients; padding, dropout, a score bias, a sliding window) and packed against
//! padded batches.

#[cfg(test)]
mod tests {
    use crate::ops::composed;
    use crate::ops::cpu::attention::{attention, Rows};
    use crate::ops::cpu::testing::check;
    use crate::ops::test_util::randn;
    use crate::ops::{Dropout, Packed};
    use candle_core::Var;
    use candle_core::{Device, Tensor};
    use std::sync::Arc;

    /// The composed attention (reshape to heads, scores, bias, additive mask, softmax,
    /// dropout as a mask multiplication, weighted sum, heads back side by side), with the
    /// dropout factors of `drop` for element (b, h, i, j).
    fn composed_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: &Tensor,
        heads: usize,
        drop: Option<Dropout>,
        bias: Option<&Tensor>,
        window: Option<usize>,
    ) -> Tensor {
        let (b, s, h) = q.dims3().unwrap();
        let hd = h / heads;
        let split = |t: &Tensor| {
            t.reshape((b, s, heads, hd))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(q), split(k), split(v));
        let scores = (q.matmul(&k.t().unwrap().contiguous().unwrap()).unwrap()
            * (1.0 / (hd as f64).sqrt()))
        .unwrap();
        let scores = match bias {
            Some(bias) => scores.broadcast_add(&bias.unsqueeze(0).unwrap()).unwrap(),
            None => scores,
        };
        let scores = match window {
            Some(w) => {
                let m = composed::window_mask(s, w, candle_core::DType::F32, &Device::Cpu).unwrap();
                scores.broadcast_add(&m).unwrap()
            }
            None => scores,
        };
        let add = composed::additive_attention_mask(mask, candle_core::DType::F32).unwrap();
        let probs = composed::softmax_last_dim(&scores.broadcast_add(&add).unwrap()).unwrap();
        let probs = match drop {
            Some(d) => {
                let n = b * heads * s * s;
                let f: Vec<f32> = (0..n as u64).map(|i| d.factor(i)).collect();
                let f = Tensor::from_vec(f, (b, heads, s, s), &Device::Cpu).unwrap();
                probs.mul(&f).unwrap()
            }
            None => probs,
        };
        probs
            .matmul(&v)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((b, s, h))
            .unwrap()
    }

    /// The fused op and the composed ops agree in value and in the gradients of q, k, v (and of
    /// the score bias when there is one), with padding, with and without dropout, with and
    /// without a sliding window (narrower than the sentences, so it masks).
    #[test]
    fn attention_matches_the_composed_reference_with_padding_dropout_bias_and_window() {
        let (b, s, h, heads) = (3, 11, 24, 3);
        let lens = [11usize, 6, 1];
        let mut keep = vec![0f32; b * s];
        for (i, &l) in lens.iter().enumerate() {
            keep[i * s..i * s + l].iter_mut().for_each(|x| *x = 1.0);
        }
        let mask = Tensor::from_vec(
            keep.iter().map(|&x| x as u32).collect::<Vec<_>>(),
            (b, s),
            &Device::Cpu,
        )
        .unwrap();
        let keep = Arc::new(keep);
        let bias_var = Var::from_tensor(&randn(&[heads, s, s], 9, 1.5)).unwrap();
        for (drop, with_bias, window) in [
            (None, false, None),
            (Some(Dropout::new(0.2, 1234)), false, None),
            (None, true, None),
            (Some(Dropout::new(0.2, 77)), true, None),
            (None, false, Some(2)),
            (Some(Dropout::new(0.2, 5)), false, Some(3)),
        ] {
            let bias = with_bias.then_some(bias_var.as_tensor());
            let q = Var::from_tensor(&randn(&[b, s, h], 6, 2.0)).unwrap();
            let k = Var::from_tensor(&randn(&[b, s, h], 7, 2.0)).unwrap();
            let v = Var::from_tensor(&randn(&[b, s, h], 8, 1.0)).unwrap();
            let qkv = Tensor::cat(&[q.as_tensor(), k.as_tensor(), v.as_tensor()], 2).unwrap();
            let fused = attention(
                &qkv,
                Rows::Keep(keep.clone()),
                heads,
                drop.clone(),
                bias,
                window,
            )
            .unwrap();
            let composed = composed_attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &mask,
                heads,
                drop,
                bias,
                window,
            );
            // Padded queries are compared too, except where a window holds only padding:
            // there the fused kernel attends to nothing (zeros) and the additive mask to
            // everything — outputs nobody pools.
            let (fused, composed) = match window {
                None => (fused, composed),
                Some(_) => {
                    let q_keep = Tensor::from_vec(keep.to_vec(), (b, s, 1), &Device::Cpu).unwrap();
                    (
                        fused.broadcast_mul(&q_keep).unwrap(),
                        composed.broadcast_mul(&q_keep).unwrap(),
                    )
                }
            };
            let mut vars = vec![("q", &q), ("k", &k), ("v", &v)];
            if bias.is_some() {
                vars.push(("bias", &bias_var));
            }
            check(&vars, &fused, &composed, 1e-5, 1e-5);
        }
    }

    /// A packed batch (sequences back to back, `[1, T, 3H]`) gives the padded batch's context
    /// rows and gradients (q|k|v and the score bias), with and without dropout: the packed
    /// kernel draws the padded layout's dropout counters.
    #[test]
    fn packed_attention_equals_padded_attention_on_the_real_rows() {
        use crate::ops::test_util::max_diff;
        let (b, s, h, heads) = (3, 11, 24, 3);
        let lens = [9usize, 11, 1];
        let packed = Arc::new(Packed::new(&lens));
        let mut keep = vec![0f32; b * s];
        let mut real = Vec::new();
        for (i, &l) in lens.iter().enumerate() {
            keep[i * s..i * s + l].iter_mut().for_each(|x| *x = 1.0);
            real.extend((0..l).map(|j| (i * s + j) as u32));
        }
        let real = Tensor::new(real.as_slice(), &Device::Cpu).unwrap();
        let keep = Arc::new(keep);
        let weights = randn(&[packed.tokens(), h], 3, 1.0);
        for (drop, with_bias) in [
            (None, false),
            (Some(Dropout::new(0.2, 1234)), false),
            (Some(Dropout::new(0.1, 8)), true),
        ] {
            let qkv = Var::from_tensor(&randn(&[b, s, 3 * h], 6, 2.0)).unwrap();
            let bias = Var::from_tensor(&randn(&[heads, s, s], 9, 1.5)).unwrap();
            let bias_t = with_bias.then_some(bias.as_tensor());
            let gather = |t: &Tensor, w: usize| {
                t.reshape((b * s, w))
                    .unwrap()
                    .index_select(&real, 0)
                    .unwrap()
            };
            let padded = attention(
                qkv.as_tensor(),
                Rows::Keep(keep.clone()),
                heads,
                drop.clone(),
                bias_t,
                None,
            )
            .unwrap();
            let padded = gather(&padded, h);
            let packed_in = gather(qkv.as_tensor(), 3 * h).unsqueeze(0).unwrap();
            let packed_out = attention(
                &packed_in,
                Rows::Packed(packed.clone()),
                heads,
                drop.clone().map(|d| d.on_packed(Some(packed.clone()))),
                bias_t,
                None,
            )
            .unwrap();
            assert_eq!(packed_out.dims(), [1, packed.tokens(), h]);
            let packed_out = packed_out.squeeze(0).unwrap();
            assert!(
                max_diff(&padded, &packed_out) < 1e-6,
                "{drop:?} {with_bias}"
            );
            let grads = |y: &Tensor| {
                let g = (y * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let gq = gather(g.get(qkv.as_tensor()).unwrap(), 3 * h);
                (gq, g.get(bias.as_tensor()).cloned())
            };
            let (ga, ba) = grads(&padded);
            let (gb, bb) = grads(&packed_out);
            assert!(max_diff(&ga, &gb) < 1e-5, "{drop:?} {with_bias}");
            assert!(
                ga.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 1.0
            );
            if with_bias {
                let (ba, bb) = (ba.unwrap(), bb.unwrap());
                assert!(max_diff(&ba, &bb) < 1e-5);
            }
        }
    }
}
