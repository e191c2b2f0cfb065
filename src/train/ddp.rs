//! Data parallelism inside the training loop: which micro-batches of a step are this rank's,
//! and the one all-reduce per step that makes every rank's update the same. The plan of steps
//! is built once for all ranks with `--grad-accum × ranks` micro-batches per step, so rank r
//! takes micro-batches `r·accum … (r+1)·accum` of it — a run on N ranks at per-rank batch b is a
//! single-device run at batch b with `--grad-accum N` (and the same order). After its local
//! backward each rank scales its gradients by (its micro-batches / the step's), the ranks sum
//! them (one flat buffer: gradients, which parameters got one, the loss sum and count,
//! examples), and every rank then clips on the same global norm and takes the same
//! AdamW step. Dropout is re-seeded per (seed, rank, step) so a resumed run draws the masks of
//! the straight one. Rank 0 alone writes (metrics, evaluation, checkpoints, the model).
//! Which ranks this process runs ([`role`], [`run_ranks`]): it launches `--devices` workers, is
//! one of them (its communicator from `dist::launch::connect`, checked by [`recipe_key`]), runs
//! alone, or runs `--test-thread-ranks` threads with the in-process backend (`spawn_threads`, the
//! test double of `dist::threads`, not a speed-up). Depends on dist, signals, device, candle.

use super::step::StepOutput;
use super::TrainConfig;
use crate::dist::Collective;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::sync::Arc;

/// This rank's micro-batches of a step (`accum` each; fewer or none in an epoch's last step).
pub fn rank_slice<'a>(batches: &'a [Vec<usize>], rank: usize, accum: usize) -> Vec<&'a [usize]> {
    batches
        .iter()
        .skip(rank * accum)
        .take(accum)
        .map(|b| b.as_slice())
        .collect()
}

/// The dropout seed of `rank` at `step` (several ranks only: a single device keeps one stream).
pub fn dropout_seed(seed: u64, rank: usize, step: usize) -> u64 {
    let mut h = seed ^ 0x5DEE_CE66_D1CE_4E5B;
    for v in [rank as u64, step as u64] {
        h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    h
}

/// Every rank's setup went well (`ok`), else an error on every rank — so no rank waits for one
/// that stopped.
pub fn agree(comm: &dyn Collective, ok: bool) -> Result<()> {
    if comm.world() == 1 {
        return Ok(());
    }
    let mut v = [(!ok) as u8 as f32];
    comm.all_reduce_sum(&mut v)?;
    if v[0] > 0.0 && ok {
        anyhow::bail!("another rank failed to start (its error is reported by it)");
    }
    Ok(())
}

/// The signal any rank saw before this step (a rank that saw none reports SIGINT's number).
pub fn any_signal(comm: &dyn Collective, mine: Option<i32>) -> Result<Option<i32>> {
    let mut v = [mine.is_some() as u8 as f32];
    comm.all_reduce_sum(&mut v)?;
    Ok((v[0] > 0.0).then(|| mine.unwrap_or(2)))
}

/// Sums `out` over the ranks (see the module header); `mine`/`total`: this rank's and the
/// step's micro-batches. Every rank gets the same result. The flat buffer stays on the
/// device (NCCL sums it there; the CPU backends through the host).
pub fn reduce(
    comm: &dyn Collective,
    out: StepOutput,
    vars: &[Var],
    mine: usize,
    total: usize,
) -> Result<StepOutput> {
    let weight = mine as f64 / total.max(1) as f64;
    let dev = vars
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(Device::Cpu);
    let mut parts = Vec::with_capacity(vars.len() + 1);
    for (g, v) in out.grads.iter().zip(vars) {
        parts.push(match g {
            Some(g) => (g.to_dtype(DType::F32)? * weight)?.flatten_all()?,
            None => Tensor::zeros(v.as_tensor().elem_count(), DType::F32, &dev)?,
        });
    }
    let mut loss_sum = 0f32;
    for l in &out.losses {
        loss_sum += l.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    }
    let mut tail: Vec<f32> = out.grads.iter().map(|g| g.is_some() as u8 as f32).collect();
    tail.extend([loss_sum, out.losses.len() as f32, out.examples as f32]);
    parts.push(Tensor::new(tail.as_slice(), &dev)?);
    let summed = comm.all_reduce_tensor(&Tensor::cat(&parts, 0)?)?;
    let n: usize = vars.iter().map(|v| v.as_tensor().elem_count()).sum();
    let tail = summed.narrow(0, n, vars.len() + 3)?.to_vec1::<f32>()?;
    let mut grads = Vec::with_capacity(vars.len());
    let mut at = 0;
    for (i, v) in vars.iter().enumerate() {
        let t = v.as_tensor();
        let len = t.elem_count();
        grads.push(if tail[i] > 0.0 {
            Some(
                summed
                    .narrow(0, at, len)?
                    .reshape(t.shape())?
                    .to_dtype(t.dtype())?,
            )
        } else {
            None
        });
        at += len;
    }
    let k = vars.len();
    let mean = tail[k] / tail[k + 1].max(1.0);
    Ok(StepOutput {
        grads,
        losses: vec![Tensor::new(mean, &dev)?],
        examples: tail[k + 2] as usize,
    })
}

/// What this process is for a `--devices` run (`plan`): a worker (`cfg` becomes its rank's:
/// world size, device, communicator to be) — `Ok(None)`, go on training — or the launcher,
/// which checks `cfg`, starts the workers, waits, and returns the exit code.
pub fn role(plan: &crate::dist::launch::Plan, cfg: &mut TrainConfig) -> Result<Option<i32>> {
    use crate::dist::launch::{launch, Worker};
    cfg.ranks = plan.world();
    let Some(w) = Worker::from_env()? else {
        // The whole recipe is checked here, before any worker starts.
        cfg.validate()?;
        return Ok(Some(launch(plan)?));
    };
    cfg.ranks = w.world;
    cfg.model.compute.device = w.device;
    cfg.worker = Some(w);
    // The launcher forwards signals; a batch system may send the same one directly.
    crate::signals::set_patient();
    cfg.validate()?;
    Ok(None)
}

/// Runs `train_rank` as this process's ranks: a `--devices` worker's one rank, one rank alone,
/// or `cfg.ranks` threads; rank 0's result. Only rank 0 speaks (the others' notes would repeat
/// its own).
pub fn run_ranks<T: Send + 'static>(
    cfg: &TrainConfig,
    train_rank: fn(&TrainConfig, Arc<dyn Collective>, Device) -> Result<T>,
) -> Result<T> {
    let quiet = |rank: usize| {
        (rank != 0)
            .then(|| tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default()))
    };
    if let Some(w) = &cfg.worker {
        let _quiet = quiet(w.rank);
        let device = crate::device::resolve(&cfg.model.compute)?;
        let comm = crate::dist::launch::connect(w, &device, recipe_key(cfg))
            .with_context(|| format!("rank {}", w.rank))?;
        let done =
            train_rank(cfg, comm.clone(), device).with_context(|| format!("rank {}", w.rank))?;
        // Only a rank that ends on purpose says so; a failed one leaves, and the others stop.
        comm.finish();
        return Ok(done);
    }
    if cfg.ranks <= 1 {
        let device = crate::device::resolve(&cfg.model.compute)?;
        return train_rank(cfg, Arc::new(crate::dist::Single), device);
    }
    let shared = cfg.clone();
    spawn_threads(cfg.ranks, move |comm| {
        let _quiet = quiet(comm.rank());
        let device = crate::device::resolve(&shared.model.compute)?;
        train_rank(&shared, comm, device)
    })
}

/// A hash of the whole configuration but what may differ between the ranks of one run (the
/// device, whether stderr is a terminal): the ranks of a `--devices` run check at the
/// rendezvous that they run the same command.
fn recipe_key(cfg: &TrainConfig) -> u64 {
    use sha2::Digest;
    let mut same = cfg.clone();
    same.model.compute.device = crate::device::DeviceChoice::Auto;
    same.progress = false;
    same.log_lines = false;
    let json = serde_json::to_string(&same).unwrap_or_default();
    let d = sha2::Sha256::digest(json.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// Runs `rank_fn` on `world` threads with the in-process backend (a test double) and returns
/// rank 0's result; an error of any rank is the run's error.
pub fn spawn_threads<T: Send + 'static>(
    world: usize,
    rank_fn: impl Fn(std::sync::Arc<dyn Collective>) -> Result<T> + Send + Sync + 'static,
) -> Result<T> {
    let f = std::sync::Arc::new(rank_fn);
    let handles: Vec<_> = crate::dist::threads::group(world)
        .into_iter()
        .map(|c| {
            let f = f.clone();
            std::thread::spawn(move || f(std::sync::Arc::new(c)))
        })
        .collect();
    // The calling thread may be rayon's worker 0 (the binary's main thread): it keeps serving
    // the pool while the ranks run, or their parallel work would wait for the other workers.
    while !handles.iter().all(|h| h.is_finished()) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    let mut first = None;
    let mut err = None;
    for (r, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(v)) if r == 0 => first = Some(v),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                err.get_or_insert(e.context(format!("rank {r}")));
            }
            Err(_) => {
                err.get_or_insert(anyhow::anyhow!("rank {r} panicked"));
            }
        }
    }
    match (err, first) {
        (Some(e), _) => Err(e),
        (None, Some(v)) => Ok(v),
        (None, None) => anyhow::bail!("internal: rank 0 returned nothing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_take_consecutive_micro_batches_of_a_step() {
        let b: Vec<Vec<usize>> = (0..5).map(|i| vec![i]).collect();
        assert_eq!(rank_slice(&b, 0, 2), vec![&[0][..], &[1]]);
        assert_eq!(rank_slice(&b, 1, 2), vec![&[2][..], &[3]]);
        assert_eq!(rank_slice(&b, 2, 2), vec![&[4][..]]);
        assert!(rank_slice(&b, 3, 2).is_empty());
        assert_ne!(dropout_seed(1, 0, 5), dropout_seed(1, 1, 5));
        assert_ne!(dropout_seed(1, 0, 5), dropout_seed(1, 0, 6));
    }
}
