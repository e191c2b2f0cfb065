//! Parameter gradients written in place, for the CPU fused path. candle's backward adds every
//! gradient it is handed into a fresh zero tensor (`GradStore::or_insert`, then `add`, serially on
//! the calling thread): for a parameter that is a buffer the size of the parameter zeroed, then
//! summed into a third, every step — 47 MB three times for BERT's word embeddings, and the
//! main thread's largest serial stretch of a step (the profile in BENCHMARKS.md).
//!
//! A training step registers its trainable parameters here ([`begin_step`]). The fused ops whose
//! backward owns a parameter's gradient (linear's weight and bias, the embedding table) then write
//! it straight into a buffer this module keeps per parameter across steps — the step's first write
//! overwrites (a dense write) or clears the rows the last step used (a row write), later writes
//! add — and hand candle no gradient for it. [`grad`] gives the buffer out. A buffer given out by
//! one step stays valid until the next step's first write to it; the trainer drops a step's
//! gradients after its optimizer update, before the next backward. Kept per thread (a run whose
//! ranks are threads has one per rank); nothing is registered outside a training step, so tests
//! and inference see candle's usual gradients. Depends on candle.

use candle_core::{bail, CpuStorage, DType, Device, InplaceOp1, Layout, Result, Tensor, TensorId};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

/// One parameter's gradient buffer.
struct Slot {
    buf: Tensor,
    /// The step that last wrote it.
    written: u64,
    /// Whether values of an earlier step may sit anywhere in it (a dense write); else only in
    /// `rows`.
    dense: bool,
    /// The rows an earlier row write touched.
    rows: Vec<u32>,
}

#[derive(Default)]
struct Sink {
    active: HashSet<TensorId>,
    step: u64,
    slots: HashMap<TensorId, Slot>,
}

thread_local! {
    static SINK: RefCell<Sink> = RefCell::new(Sink::default());
}

/// While alive, the registered parameters' gradients go to this thread's sink. Dropping it ends
/// the registration (the buffers, and the gradients already given out, stay).
pub struct StepGuard(());

impl Drop for StepGuard {
    fn drop(&mut self) {
        SINK.with(|s| s.borrow_mut().active.clear());
    }
}

/// Starts a step whose gradients of `params` (those that are f32 CPU tensors) are written here.
/// One step at a time per thread: a second one while the first is registered would take its
/// gradients, so it is an error.
pub fn begin_step<'a>(params: impl IntoIterator<Item = &'a Tensor>) -> Result<StepGuard> {
    SINK.with(|s| {
        let mut s = s.borrow_mut();
        if !s.active.is_empty() {
            bail!("internal: a training step began while another was running on this thread");
        }
        s.active = params
            .into_iter()
            .filter(|t| t.device().is_cpu() && t.dtype() == DType::F32)
            .map(|t| t.id())
            .collect();
        s.step += 1;
        let active = std::mem::take(&mut s.active);
        s.slots.retain(|id, _| active.contains(id));
        s.active = active;
        Ok(StepGuard(()))
    })
}

/// Frees this thread's buffers (the end of a run: they are the size of the parameters).
pub fn release() {
    SINK.with(|s| s.borrow_mut().slots.clear());
}

/// Whether a training step is registered on this thread.
pub(crate) fn active() -> bool {
    SINK.with(|s| !s.borrow().active.is_empty())
}

/// Whether `t`'s gradient goes to the sink in this step.
pub(crate) fn takes(t: &Tensor) -> bool {
    SINK.with(|s| s.borrow().active.contains(&t.id()))
}

/// This step's gradient of `t`, if the sink took one.
pub fn grad(t: &Tensor) -> Option<Tensor> {
    SINK.with(|s| {
        let s = s.borrow();
        let slot = s.slots.get(&t.id())?;
        (s.active.contains(&t.id()) && slot.written == s.step).then(|| slot.buf.clone())
    })
}

/// Where the gradient of a weight (or bias) goes: into the sink's buffers of its parts, to candle
/// (a tracked tensor), or nowhere (a constant, or a parameter the running step does not train:
/// not computed).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum GradTo {
    Sink,
    Candle,
    Nowhere,
}

/// `t`'s [`GradTo`]; `parts`: the parameters a detached `t` was joined from.
pub(crate) fn grad_to(t: &Tensor, parts: Option<&[Tensor]>) -> Result<GradTo> {
    Ok(match parts {
        Some(parts) if parts.iter().all(takes) => GradTo::Sink,
        Some(_) => bail!("internal: a joined parameter's backward ran outside its training step"),
        None if takes(t) => GradTo::Sink,
        // A parameter the running step does not train (frozen, or the base weights under LoRA):
        // nothing reads its gradient, so it is not computed.
        None if t.is_variable() && active() => GradTo::Nowhere,
        None if t.track_op() => GradTo::Candle,
        None => GradTo::Nowhere,
    })
}

/// How a write treats what the buffer holds.
enum Write<'f> {
    /// `f(buf, fresh)`: when `fresh` (the step's first write) it must write every element.
    Dense(&'f mut dyn FnMut(&mut [f32], bool) -> Result<()>),
    /// `f(buf)` adds into rows `rows` of width `width` (cleared first on the step's first write).
    Rows {
        rows: &'f [u32],
        width: usize,
        f: &'f mut dyn FnMut(&mut [f32]) -> Result<()>,
    },
}

/// Writes `t`'s gradient with `w`. The slot is taken out of the sink while `w` runs (so nothing
/// is borrowed across the kernel) and put back after.
fn write(t: &Tensor, w: Write) -> Result<()> {
    let (slot, step) = SINK.with(|s| {
        let mut s = s.borrow_mut();
        let step = s.step;
        (s.slots.remove(&t.id()), step)
    });
    let mut slot = match slot {
        Some(slot) => slot,
        None => Slot {
            buf: Tensor::zeros(t.shape(), DType::F32, &Device::Cpu)?,
            written: 0,
            dense: false,
            rows: Vec::new(),
        },
    };
    let fresh = slot.written != step;
    let result = match w {
        Write::Dense(f) => {
            slot.dense = true;
            slot.rows.clear();
            slot.buf
                .inplace_op1(&InPlace(RefCell::new(|b: &mut [f32]| f(b, fresh))))
        }
        Write::Rows { rows, width, f } => {
            // On the step's first write, the last step's rows (or all of it) are cleared.
            let dense = slot.dense;
            let old = match fresh {
                true => std::mem::take(&mut slot.rows),
                false => Vec::new(),
            };
            slot.dense = slot.dense && !fresh;
            slot.rows.extend_from_slice(rows);
            slot.buf.inplace_op1(&InPlace(RefCell::new(|b: &mut [f32]| {
                if fresh && dense {
                    b.fill(0.0);
                } else if fresh {
                    for &r in &old {
                        let r = r as usize * width;
                        if let Some(row) = b.get_mut(r..r + width) {
                            row.fill(0.0);
                        }
                    }
                }
                f(b)
            })))
        }
    };
    slot.written = step;
    SINK.with(|s| s.borrow_mut().slots.insert(t.id(), slot));
    result
}

/// Writes the whole gradient of `t`: `f(buf, fresh)` must overwrite every element when `fresh`
/// and add otherwise.
pub(crate) fn write_dense(
    t: &Tensor,
    mut f: impl FnMut(&mut [f32], bool) -> Result<()>,
) -> Result<()> {
    write(t, Write::Dense(&mut f))
}

/// Adds into rows `rows` (each `width` wide) of `t`'s gradient with `f`.
pub(crate) fn write_rows(
    t: &Tensor,
    rows: &[u32],
    width: usize,
    mut f: impl FnMut(&mut [f32]) -> Result<()>,
) -> Result<()> {
    write(
        t,
        Write::Rows {
            rows,
            width,
            f: &mut f,
        },
    )
}

/// Runs a closure once on a tensor's f32 storage.
struct InPlace<F>(RefCell<F>);

impl<F: FnMut(&mut [f32]) -> Result<()>> InplaceOp1 for InPlace<F> {
    fn name(&self) -> &'static str {
        "embtune-grad-sink-write"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> Result<()> {
        let (CpuStorage::F32(v), Some((a, b))) = (s, l.contiguous_offsets()) else {
            bail!("gradient sink: expected a contiguous f32 buffer");
        };
        let mut f = self.0.borrow_mut();
        (*f)(&mut v[a..b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::{embedding, linear, linear_joined};
    use crate::ops::test_util::{max_diff, randn};
    use candle_core::Var;

    /// q|k|v joined, a plain linear and an embedding table, over two backward passes a step (the
    /// second pass uses other ids and inputs), for two steps.
    #[test]
    fn sunk_gradients_equal_candles_over_accumulated_passes_and_steps() {
        let (h, v) = (8, 11);
        let var = |shape: &[usize], seed| Var::from_tensor(&randn(shape, seed, 0.5)).unwrap();
        let (wq, wk, wv, wo) = (
            var(&[h, h], 1),
            var(&[h, h], 2),
            var(&[h, h], 3),
            var(&[4, 3 * h], 4),
        );
        let (bq, bk, bv, bo) = (var(&[h], 5), var(&[h], 6), var(&[h], 7), var(&[4], 8));
        let table = var(&[v, h], 9);
        let params = [&wq, &wk, &wv, &wo, &bq, &bk, &bv, &bo, &table];
        let pass = |ids: &[u32], seed: u64| {
            let ids = Tensor::new(ids, &Device::Cpu).unwrap();
            let x = embedding(table.as_tensor(), &ids).unwrap();
            let x = (x + randn(&[ids.dim(0).unwrap(), h], seed, 0.3)).unwrap();
            let qkv = linear_joined(
                &x,
                &[wq.as_tensor(), wk.as_tensor(), wv.as_tensor()],
                &[bq.as_tensor(), bk.as_tensor(), bv.as_tensor()],
            )
            .unwrap();
            let y = linear(&qkv.tanh().unwrap(), wo.as_tensor(), bo.as_tensor()).unwrap();
            (y.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap()
        };
        let passes: [[(&[u32], u64); 2]; 2] = [
            [(&[1, 4, 4, 7, 2], 20), (&[4, 9, 1], 21)],
            [(&[3, 3, 10], 22), (&[0, 3, 5, 6], 23)],
        ];
        for step in passes {
            // candle's gradients, summed over the passes as the trainer sums them.
            let mut want: Vec<Option<Tensor>> = vec![None; params.len()];
            for &(ids, seed) in &step {
                let g = pass(ids, seed).backward().unwrap();
                for (w, p) in want.iter_mut().zip(params) {
                    let gp = g.get(p.as_tensor()).unwrap().clone();
                    *w = Some(match w.take() {
                        Some(a) => (a + gp).unwrap(),
                        None => gp,
                    });
                }
            }
            let guard = begin_step(params.iter().map(|p| p.as_tensor())).unwrap();
            for &(ids, seed) in &step {
                let g = pass(ids, seed).backward().unwrap();
                for p in params {
                    assert!(g.get(p.as_tensor()).is_none(), "candle got a sunk gradient");
                }
            }
            for (w, p) in want.iter().zip(params) {
                let (w, got) = (w.as_ref().unwrap(), grad(p.as_tensor()).unwrap());
                assert!(max_diff(w, &got) <= 1e-6, "{:?}", p.dims());
            }
            drop(guard);
        }
    }

    /// A frozen weight and table (variables the step did not register) get no gradient, from
    /// the sink or from candle, while the input's gradient and the trained bias are right.
    #[test]
    fn a_steps_untrained_parameters_get_no_gradient() {
        let var = |shape: &[usize], seed| Var::from_tensor(&randn(shape, seed, 0.5)).unwrap();
        let (w, b, table) = (var(&[5, 4], 1), var(&[5], 2), var(&[7, 4], 3));
        let x = var(&[3, 4], 4);
        let ids = Tensor::new(&[1u32, 6, 1], &Device::Cpu).unwrap();
        let loss = || {
            let e = (embedding(table.as_tensor(), &ids).unwrap() + x.as_tensor()).unwrap();
            let y = linear(&e, w.as_tensor(), b.as_tensor()).unwrap();
            y.sqr().unwrap().sum_all().unwrap()
        };
        let want = loss().backward().unwrap();
        let guard = begin_step([b.as_tensor()]).unwrap();
        let got = loss().backward().unwrap();
        assert!(got.get(w.as_tensor()).is_none() && got.get(table.as_tensor()).is_none());
        assert!(grad(w.as_tensor()).is_none() && grad(table.as_tensor()).is_none());
        let dx = (
            want.get(x.as_tensor()).unwrap(),
            got.get(x.as_tensor()).unwrap(),
        );
        assert!(max_diff(dx.0, dx.1) <= 1e-6);
        let db = grad(b.as_tensor()).unwrap();
        assert!(max_diff(want.get(b.as_tensor()).unwrap(), &db) <= 1e-6);
        drop(guard);
        assert!(loss().backward().unwrap().get(w.as_tensor()).is_some());
    }

    #[test]
    fn a_step_overwrites_then_adds_and_row_writes_clear_the_last_steps_rows() {
        let p = Var::zeros((4, 2), DType::F32, &Device::Cpu).unwrap();
        let q = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let t = p.as_tensor();
        let read = |t: &Tensor| grad(t).map(|g| g.to_vec2::<f32>().unwrap());
        {
            let _g = begin_step([t]).unwrap();
            assert!(takes(t) && !takes(q.as_tensor()));
            assert_eq!(read(t), None);
            let add = |rows: &[u32], v: f32| {
                write_rows(t, rows, 2, |b| {
                    rows.iter().for_each(|&r| b[r as usize * 2] += v);
                    Ok(())
                })
                .unwrap()
            };
            add(&[1, 3], 1.0);
            add(&[1], 2.0);
            assert_eq!(
                read(t),
                Some(vec![vec![0., 0.], vec![3., 0.], vec![0., 0.], vec![1., 0.]])
            );
        }
        assert!(!takes(t), "the guard ends the registration");
        assert_eq!(read(t), None);
        let _g = begin_step([t]).unwrap();
        assert_eq!(read(t), None, "nothing written in this step yet");
        write_rows(t, &[2], 2, |b| {
            b[5] = 7.0;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            read(t),
            Some(vec![vec![0., 0.], vec![0., 0.], vec![0., 7.], vec![0., 0.]]),
            "the last step's rows are cleared by this step's first write"
        );
        write_dense(t, |b, fresh| {
            assert!(!fresh);
            b.iter_mut().for_each(|x| *x += 1.0);
            Ok(())
        })
        .unwrap();
        drop(_g);
        let _g = begin_step([t]).unwrap();
        write_dense(t, |b, fresh| {
            assert!(fresh);
            b.fill(5.0);
            Ok(())
        })
        .unwrap();
        write_rows(t, &[0], 2, |b| {
            b[0] += 1.0;
            Ok(())
        })
        .unwrap();
        drop(_g);
        let _g = begin_step([t]).unwrap();
        write_rows(t, &[3], 2, |b| {
            b[6] += 1.0;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            read(t),
            Some(vec![vec![0., 0.], vec![0., 0.], vec![0., 0.], vec![1., 0.]]),
            "after a dense step a row write clears the whole buffer"
        );
    }
}
