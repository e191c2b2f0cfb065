//! The CPU backend of [`super::Collective`] for ranks in separate processes (`--devices
//! cpu,cpu`, or CPU nodes with `--nnodes`): a star over the rendezvous connections
//! (`rendezvous.rs`). Every other rank sends its buffer to rank 0, which adds them in rank
//! order (so the sums are bitwise those of the in-process backend, `threads.rs`) and sends the
//! result back to each. Fine for the CPU, where a step's compute dwarfs moving the gradients
//! over loopback; GPUs use NCCL (`nccl.rs`). A rank that stops closes its connection, and the
//! others get an error instead of waiting. Depends on std and `rendezvous`.

use super::rendezvous::Joined;
use super::Collective;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Mutex;

pub struct TcpComm {
    rank: usize,
    world: usize,
    peers: Mutex<Vec<TcpStream>>,
}

impl TcpComm {
    pub fn new(j: Joined) -> Self {
        TcpComm {
            rank: j.rank,
            world: j.world,
            peers: Mutex::new(j.peers),
        }
    }
}

fn send(s: &mut TcpStream, v: &[f32]) -> std::io::Result<()> {
    s.write_all(&(v.len() as u64).to_le_bytes())?;
    let mut buf = Vec::with_capacity(64 * 1024);
    for chunk in v.chunks(16 * 1024) {
        buf.clear();
        for x in chunk {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        s.write_all(&buf)?;
    }
    Ok(())
}

fn recv(s: &mut TcpStream, into: &mut Vec<f32>) -> std::io::Result<()> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len)?;
    let n = u64::from_le_bytes(len) as usize;
    into.clear();
    into.reserve(n);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n * 4;
    while left > 0 {
        let take = left.min(buf.len());
        s.read_exact(&mut buf[..take])?;
        into.extend(
            buf[..take]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        left -= take;
    }
    Ok(())
}

impl TcpComm {
    fn peers(&self) -> Result<std::sync::MutexGuard<'_, Vec<TcpStream>>> {
        self.peers
            .lock()
            .map_err(|_| anyhow::anyhow!("collective: a previous exchange failed"))
    }

    /// Rank 0: every rank's buffer in rank order (its own first), `combine`d; the result is
    /// sent to every rank. Others: send, then receive the result.
    fn exchange(
        &self,
        local: &[f32],
        combine: impl FnOnce(Vec<Vec<f32>>) -> Result<Vec<f32>>,
    ) -> Result<Vec<f32>> {
        let lost = |r: usize| {
            format!(
                "collective: rank {r} closed its connection (it stopped; its own error says why)"
            )
        };
        let mut peers = self.peers()?;
        if self.rank == 0 {
            let mut all = vec![local.to_vec()];
            for (i, p) in peers.iter_mut().enumerate() {
                let mut v = Vec::new();
                recv(p, &mut v).with_context(|| lost(i + 1))?;
                all.push(v);
            }
            let out = combine(all)?;
            for (i, p) in peers.iter_mut().enumerate() {
                send(p, &out).with_context(|| lost(i + 1))?;
            }
            Ok(out)
        } else {
            let p = &mut peers[0];
            send(p, local).with_context(|| lost(0))?;
            let mut out = Vec::new();
            recv(p, &mut out).with_context(|| lost(0))?;
            Ok(out)
        }
    }
}

impl Collective for TcpComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let n = buf.len();
        // Added in rank order from zero, as the in-process backend does: bitwise the same.
        let out = self.exchange(buf, |all| super::sum_in_rank_order(&all, n))?;
        if out.len() != n {
            bail!("all_reduce: rank 0 answered {} values for {n}", out.len());
        }
        buf.copy_from_slice(&out);
        Ok(())
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let n = local.len();
        self.exchange(local, |all| super::concat_in_rank_order(&all, n))
    }
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let n = buf.len();
        // Every rank sends (only the root's buffer is kept): one exchange, as for the others.
        let out = self.exchange(buf, |mut all| {
            if root >= all.len() {
                bail!("broadcast: no rank {root}");
            }
            Ok(std::mem::take(&mut all[root]))
        })?;
        if out.len() != n {
            bail!("broadcast: rank {root} sent {} values for {n}", out.len());
        }
        buf.copy_from_slice(&out);
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        self.all_reduce_sum(&mut [0.0])
    }
}

#[cfg(test)]
mod tests {
    use super::super::rendezvous::{join, serve, Listen};
    use super::*;

    #[test]
    fn three_processes_worth_of_ranks_sum_gather_and_broadcast_like_the_threads_backend() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let l = std::sync::Arc::new(l);
        let run = |rank: usize| {
            let (addr, l) = (addr.clone(), l.clone());
            std::thread::spawn(move || {
                let j = if rank == 0 {
                    serve(&Listen::Listener(l.try_clone().unwrap()), 3, 1, || {
                        Ok(Vec::new())
                    })
                } else {
                    join(&addr, rank, 3, 1)
                }
                .unwrap();
                let c = TcpComm::new(j);
                let mut v: Vec<f32> = (0..5).map(|i| 0.1 * (i + rank) as f32).collect();
                c.all_reduce_sum(&mut v).unwrap();
                let g = c.all_gather(&[rank as f32, -(rank as f32)]).unwrap();
                let mut b = vec![rank as f32; 3];
                c.broadcast(&mut b, 2).unwrap();
                c.barrier().unwrap();
                (v, g, b)
            })
        };
        let hs: Vec<_> = (0..3).map(run).collect();
        let outs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let threads = crate::dist::threads::group(3);
        let expect: Vec<f32> = {
            let hs: Vec<_> = threads
                .into_iter()
                .map(|c| {
                    std::thread::spawn(move || {
                        let r = c.rank();
                        let mut v: Vec<f32> = (0..5).map(|i| 0.1 * (i + r) as f32).collect();
                        c.all_reduce_sum(&mut v).unwrap();
                        v
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).next().unwrap()
        };
        for (v, g, b) in &outs {
            assert_eq!(v, &expect);
            assert_eq!(g, &vec![0.0, -0.0, 1.0, -1.0, 2.0, -2.0]);
            assert_eq!(b, &vec![2.0; 3]);
        }
    }
}
