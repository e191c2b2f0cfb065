//! Helpers shared by the model's unit tests (compiled for tests only; the lint test treats
//! code after `#[cfg(test)]` as test code).

#[cfg(test)]
pub use helpers::*;

#[cfg(test)]
mod helpers {
    use candle_core::{Device, Tensor, Var};
    /// Uniform values in `[-scale, scale)` from a seeded stream, as a CPU f32 tensor.
    pub fn randn(shape: &[usize], seed: u64, scale: f32) -> Tensor {
        let mut rng = crate::rng::Rng::with_stream(seed, 5);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Largest absolute element-wise difference.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        max_abs(&(a - b).unwrap())
    }

    /// Largest absolute element.
    pub fn max_abs(a: &Tensor) -> f32 {
        a.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Gradients of `Σ fused·r` and `Σ composed·r` for each named variable: for each, the max
    /// abs difference and the largest |gradient| of the fused side (to check it is not zero).
    pub fn grad_diffs(
        fused: &Tensor,
        composed: &Tensor,
        r: &Tensor,
        vars: &[(&str, &Var)],
    ) -> Vec<(String, f32, f32)> {
        let grads = |t: &Tensor| (t * r).unwrap().sum_all().unwrap().backward().unwrap();
        let (gf, gc) = (grads(fused), grads(composed));
        vars.iter()
            .map(|(name, v)| {
                let (a, c) = (
                    gf.get(v.as_tensor()).unwrap(),
                    gc.get(v.as_tensor()).unwrap(),
                );
                (name.to_string(), max_diff(a, c), max_abs(a))
            })
            .collect()
    }
}
