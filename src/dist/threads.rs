//! The in-process backend of [`super::Collective`]: N ranks as N threads sharing one
//! rendezvous. A TEST DOUBLE — it lets the data-parallel code be checked on the CPU against
//! single-device training; it is not a way to train faster (the ranks share the machine's cores).
//! Each operation: every rank puts its buffer in its slot, waits for all (a barrier), reads the
//! combined result (sums in rank order), and waits again before the slots are reused. A rank
//! that panics poisons the rendezvous, and the others get an error instead of hanging.
//! Depends on std only.

use super::Collective;
use anyhow::{anyhow, bail, Result};
use std::sync::{Arc, Barrier, Mutex};

struct Shared {
    world: usize,
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
}

/// One rank's handle.
pub struct ThreadComm {
    rank: usize,
    shared: Arc<Shared>,
}

/// Handles for `world` ranks, to be moved into one thread each.
pub fn group(world: usize) -> Vec<ThreadComm> {
    let shared = Arc::new(Shared {
        world,
        slots: Mutex::new(vec![Vec::new(); world]),
        barrier: Barrier::new(world),
    });
    (0..world)
        .map(|rank| ThreadComm {
            rank,
            shared: shared.clone(),
        })
        .collect()
}

impl ThreadComm {
    /// Deposits `local`, waits for every rank, runs `read` on all slots (rank order), waits
    /// again (so no slot is overwritten while another rank still reads).
    fn exchange<T>(&self, local: &[f32], read: impl FnOnce(&[Vec<f32>]) -> Result<T>) -> Result<T> {
        let poisoned = || anyhow!("collective: another rank failed");
        self.shared.slots.lock().map_err(|_| poisoned())?[self.rank] = local.to_vec();
        self.shared.barrier.wait();
        let out = {
            let slots = self.shared.slots.lock().map_err(|_| poisoned())?;
            read(&slots)
        };
        self.shared.barrier.wait();
        out
    }
}

impl Collective for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.shared.world
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let n = buf.len();
        let sum = self.exchange(buf, |slots| super::sum_in_rank_order(slots, n))?;
        buf.copy_from_slice(&sum);
        Ok(())
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let n = local.len();
        self.exchange(local, |slots| super::concat_in_rank_order(slots, n))
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.shared.world {
            bail!("broadcast: root {root} of {} ranks", self.shared.world);
        }
        let v = self.exchange(buf, |slots| Ok(slots[root].clone()))?;
        if v.len() != buf.len() {
            bail!("broadcast: rank {root}'s buffer has another length");
        }
        buf.copy_from_slice(&v);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.exchange(&[], |_| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_ranks<T: Send + 'static>(
        world: usize,
        f: impl Fn(ThreadComm) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let f = Arc::new(f);
        let handles: Vec<_> = group(world)
            .into_iter()
            .map(|c| {
                let f = f.clone();
                std::thread::spawn(move || f(c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn reduce_gather_broadcast_agree_on_every_rank_many_times() {
        let out = on_ranks(3, |c| {
            let r = c.rank() as f32;
            let mut results = Vec::new();
            for round in 0..50 {
                let mut s = vec![r + round as f32, 10.0 * r, 1.0];
                c.all_reduce_sum(&mut s).unwrap();
                let g = c.all_gather(&[r, r * r]).unwrap();
                let mut b = vec![r; 2];
                c.broadcast(&mut b, round % 3).unwrap();
                c.barrier().unwrap();
                results.push((s, g, b));
            }
            results
        });
        for (round, per_rank) in (0..50).map(|i| (i, out.iter().map(|o| &o[i]).collect::<Vec<_>>()))
        {
            for (s, g, b) in &per_rank {
                assert_eq!(s, &vec![3.0 + 3.0 * round as f32, 30.0, 3.0]);
                assert_eq!(g, &vec![0.0, 0.0, 1.0, 1.0, 2.0, 4.0]);
                assert_eq!(b, &vec![(round % 3) as f32; 2]);
            }
        }
    }

    #[test]
    fn mismatched_lengths_are_an_error_on_every_rank() {
        let out = on_ranks(2, |c| {
            let mut v = vec![1.0; 2 + c.rank()];
            c.all_reduce_sum(&mut v).is_err()
        });
        assert_eq!(out, vec![true, true]);
    }
}
