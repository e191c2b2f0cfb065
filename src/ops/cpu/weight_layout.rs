//! How the CPU products read a linear weight: row-major `[out, in]`, or the transpose of a
//! contiguous `[in, out]` (inference loads keep it so: `model::weights::store_linears_transposed`,
//! the layout gemm reads without re-packing it on every call), and the blocked transpose that
//! makes it. Depends on candle, rayon and `dense` (its `View`).

use super::dense::View;
use candle_core::{bail, CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

/// Whether `l` (2-D) is the transpose of a contiguous tensor: `[out, in]` with strides `[1, out]`.
fn is_transposed(l: &Layout) -> bool {
    matches!((l.dims(), l.stride()), ([out, _], [1, so]) if so == out)
}

/// `Wᵀ` as the product's right operand `[in, out]`: from a row-major `[out, in]` weight, or read
/// as it is from one kept transposed.
pub(super) fn weight_view<'a>(s: &'a CpuStorage, l: &Layout) -> Result<View<'a>> {
    let (out, inp) = l.shape().dims2()?;
    let CpuStorage::F32(v) = s else {
        bail!("linear: expected an f32 weight");
    };
    let start = l.start_offset();
    let data = v
        .get(start..start + out * inp)
        .ok_or_else(|| candle_core::Error::Msg("linear: weight out of its storage".into()))?;
    if l.is_contiguous() {
        Ok(View(data, 1, inp))
    } else if is_transposed(l) {
        Ok(View(data, out, 1))
    } else {
        bail!("linear: the weight must be contiguous or a contiguous tensor's transpose")
    }
}

/// `w` as the op takes it: as it is when contiguous or kept transposed, else a contiguous copy.
pub(super) fn weight_operand(w: &Tensor) -> Result<Tensor> {
    let l = w.layout();
    if w.rank() == 2 && (l.is_contiguous() || is_transposed(l)) {
        Ok(w.clone())
    } else {
        w.contiguous()
    }
}

/// `src[rows × cols]` row-major → its transpose `[cols × rows]`, in 32 × 32 blocks on rayon's
/// pool (inference loads keep linear weights this way: `model::weights`).
pub fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 32;
    let mut dst = vec![0f32; rows * cols];
    if rows == 0 || cols == 0 {
        return dst;
    }
    // Each task writes B rows of the result (B columns of the source).
    dst.par_chunks_mut(B * rows)
        .enumerate()
        .for_each(|(jb, block)| {
            let j0 = jb * B;
            let nj = block.len() / rows;
            for i0 in (0..rows).step_by(B) {
                for i in i0..(i0 + B).min(rows) {
                    let row = &src[i * cols + j0..i * cols + j0 + nj];
                    for (dj, &v) in row.iter().enumerate() {
                        block[dj * rows + i] = v;
                    }
                }
            }
        });
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_every_element() {
        for (r, c) in [(1, 1), (3, 70), (70, 3), (33, 65), (64, 32)] {
            let src: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
            let t = transpose(&src, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], src[i * c + j], "{r}×{c} at ({i}, {j})");
                }
            }
        }
    }
}
