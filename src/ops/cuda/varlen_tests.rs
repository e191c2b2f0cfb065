//! Tests of `varlen`: the kernels' loops against the CPU fused attention.

#[cfg(test)]
mod tests {
    use crate::ops::cpu::attention::{attention as cpu_attention, Rows};
    use crate::ops::cuda::varlen::attention;
    use crate::ops::test_util::{max_diff, randn};
    use crate::ops::{Dropout, Packed};
    use candle_core::Tensor;
    use candle_core::Var;
    use std::sync::Arc;

    /// The kernels' loops (varlen_mirror) against the CPU fused attention (another
    /// implementation: blocked per (sequence, head)) on one packed batch: the context, q|k|v's
    /// and the bias's gradients, with and without a bias, a window and dropout.
    #[test]
    fn kernel_loops_match_the_cpu_fused_attention() {
        let lengths = [5, 1, 3, 7];
        let packed = Arc::new(Packed::new(&lengths));
        let (heads, hd) = (2, 4);
        let (t, h) = (packed.tokens(), heads * hd);
        let s = packed.seq();
        let qkv = Var::from_tensor(&randn(&[1, t, 3 * h], 3, 1.0)).unwrap();
        let bias = Var::from_tensor(&randn(&[heads, s, s], 4, 0.5)).unwrap();
        let g = randn(&[1, t, h], 5, 1.0);
        let mut checked = 0;
        for with_bias in [false, true] {
            for window in [None, Some(1)] {
                for drop in [
                    None,
                    Some(Dropout::new(0.3, 11).on_packed(Some(packed.clone()))),
                ] {
                    let b = with_bias.then(|| bias.as_tensor());
                    let run = |ours: bool| {
                        let y = if ours {
                            attention(
                                qkv.as_tensor(),
                                packed.clone(),
                                heads,
                                drop.clone(),
                                b,
                                window,
                            )
                        } else {
                            let rows = Rows::Packed(packed.clone());
                            cpu_attention(qkv.as_tensor(), rows, heads, drop.clone(), b, window)
                        }
                        .unwrap();
                        let grads = (&y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                        let dq = grads.get(qkv.as_tensor()).unwrap().clone();
                        let db = grads.get(bias.as_tensor()).cloned();
                        (y, dq, db)
                    };
                    let (ya, qa, ba) = run(true);
                    let (yb, qb, bb) = run(false);
                    let what = format!(
                        "bias {with_bias}, window {window:?}, dropout {}",
                        drop.is_some()
                    );
                    assert_eq!(ya.dims(), &[1, t, h]);
                    assert!(
                        max_diff(&ya, &yb) < 1e-5,
                        "{what}: context {}",
                        max_diff(&ya, &yb)
                    );
                    assert!(
                        max_diff(&qa, &qb) < 1e-5,
                        "{what}: dqkv {}",
                        max_diff(&qa, &qb)
                    );
                    assert_eq!(ba.is_some(), with_bias);
                    if let (Some(ba), Some(bb)) = (ba, bb) {
                        assert!(
                            max_diff(&ba, &bb) < 1e-5,
                            "{what}: dbias {}",
                            max_diff(&ba, &bb)
                        );
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 8);
        // A sequence attends over its own rows only: changing sequence 3's keys leaves the
        // other sequences' context unchanged, and changes its own.
        let y0 = attention(qkv.as_tensor(), packed.clone(), heads, None, None, None).unwrap();
        let mut v: Vec<f32> = qkv.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let start = packed.start(3);
        v[(start + 2) * 3 * h + h] += 3.0;
        let moved = Tensor::from_vec(v, (1, t, 3 * h), &candle_core::Device::Cpu).unwrap();
        let y1 = attention(&moved, packed.clone(), heads, None, None, None).unwrap();
        let others = |y: &Tensor| y.narrow(1, 0, start).unwrap();
        let own = |y: &Tensor| y.narrow(1, start, lengths[3]).unwrap();
        assert_eq!(max_diff(&others(&y0), &others(&y1)), 0.0);
        assert!(max_diff(&own(&y0), &own(&y1)) > 1e-3);
    }
}
