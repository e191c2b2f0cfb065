//! Multi-process data parallelism without a launcher program: `embtune train --devices
//! cuda:0,cuda:1` (or `all`, or `cpu,cpu`) makes this process a launcher that starts one worker
//! per device — the same binary with the same arguments, told its rank by environment variables
//! — and waits for them. Rank 0's launcher binds the rendezvous socket and hands it to its
//! worker (`rendezvous.rs`); several nodes (`--nnodes`, `--node-rank`, `--rdzv-endpoint`) run the
//! same code, each node's launcher starting its own workers with global ranks
//! `node-rank × devices + i`. The launcher forwards Ctrl-C / SIGTERM to its workers once (they
//! stop at the same step, rank 0 saving a checkpoint; a worker counts a signal that also
//! reached it directly, as from a batch system, once); a second signal to the launcher kills
//! them. When one worker fails it gives the others a grace period, then kills them (a failed
//! NCCL peer would leave them waiting). A worker whose launcher dies gets SIGTERM (Linux). [`connect`] turns a worker's environment into its communicator:
//! NCCL on a GPU (`nccl.rs`), the TCP star on the CPU (`tcp.rs`). Depends on std, libc,
//! `device`, `signals` and the backends.

use super::rendezvous::{self, Listen};
use super::Collective;
use crate::device::DeviceChoice;
use anyhow::{bail, Context, Result};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENV_RANK: &str = "EMBTUNE_DIST_RANK";
const ENV_WORLD: &str = "EMBTUNE_DIST_WORLD";
const ENV_LOCAL: &str = "EMBTUNE_DIST_LOCAL_RANK";
const ENV_ENDPOINT: &str = "EMBTUNE_DIST_ENDPOINT";
const ENV_FD: &str = "EMBTUNE_DIST_LISTEN_FD";
const ENV_DEVICE: &str = "EMBTUNE_DIST_DEVICE";

/// The processes of a run across nodes, as the command line gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// This node's devices, one worker each.
    pub devices: Vec<DeviceChoice>,
    pub nnodes: usize,
    pub node_rank: usize,
    /// Rank 0's host:port; None on one node (a free loopback port is taken).
    pub endpoint: Option<String>,
}

impl Plan {
    /// From `--devices` (a comma list of `cpu` / `cuda:N`, or `all`: every CUDA GPU) and the
    /// node flags; the errors name the flag.
    pub fn parse(
        devices: &str,
        nnodes: usize,
        node_rank: usize,
        endpoint: Option<String>,
    ) -> Result<Plan> {
        let devices: Vec<DeviceChoice> = if devices.trim() == "all" {
            let n = crate::device::cuda_count()?;
            if n == 0 {
                bail!("--devices all: no CUDA GPU is visible (nvidia-smi; CUDA_VISIBLE_DEVICES)");
            }
            (0..n).map(DeviceChoice::Cuda).collect()
        } else {
            devices
                .split(',')
                .map(|d| match d.trim().parse::<DeviceChoice>() {
                    Ok(DeviceChoice::Auto) | Err(_) => bail!(
                        "--devices: {d:?} is not a device: expected a comma list of cpu or cuda:<index> (cuda:0,cuda:1), or all"
                    ),
                    Ok(c) => Ok(c),
                })
                .collect::<Result<_>>()?
        };
        let cpus = devices.iter().filter(|d| **d == DeviceChoice::Cpu).count();
        if cpus != 0 && cpus != devices.len() {
            bail!("--devices mixes cpu and cuda: every rank must run on the same kind of device");
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(d) = devices
            .iter()
            .find(|d| matches!(d, DeviceChoice::Cuda(_)) && !seen.insert(**d))
        {
            bail!("--devices lists {d} twice: one worker per GPU");
        }
        if node_rank >= nnodes {
            bail!("--node-rank {node_rank} is not below --nnodes {nnodes}");
        }
        if nnodes > 1 && endpoint.is_none() {
            bail!("--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT (node 0's address, reachable from every node)");
        }
        Ok(Plan {
            devices,
            nnodes,
            node_rank,
            endpoint,
        })
    }

    pub fn world(&self) -> usize {
        self.devices.len() * self.nnodes
    }
}

/// One worker's place in the run (from its environment).
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub endpoint: String,
    /// Rank 0 only: the listening socket its launcher bound.
    pub listen_fd: Option<i32>,
    pub device: DeviceChoice,
}

impl Worker {
    /// Some when this process was started by a launcher.
    pub fn from_env() -> Result<Option<Worker>> {
        let Ok(rank) = std::env::var(ENV_RANK) else {
            return Ok(None);
        };
        let get = |k: &str| {
            std::env::var(k).with_context(|| {
                format!("{k} is unset (set by the --devices launcher, with {ENV_RANK})")
            })
        };
        let num = |k: &str, v: String| {
            v.parse::<usize>()
                .with_context(|| format!("{k}={v:?} is not a number"))
        };
        let device = get(ENV_DEVICE)?;
        Ok(Some(Worker {
            rank: num(ENV_RANK, rank)?,
            world: num(ENV_WORLD, get(ENV_WORLD)?)?,
            local_rank: num(ENV_LOCAL, get(ENV_LOCAL)?)?,
            endpoint: get(ENV_ENDPOINT)?,
            listen_fd: match std::env::var(ENV_FD) {
                Ok(v) => Some(num(ENV_FD, v)? as i32),
                Err(_) => None,
            },
            device: device
                .parse()
                .map_err(|e| anyhow::anyhow!("{ENV_DEVICE}: {e}"))?,
        }))
    }
}

/// The communicator of a worker: joins the rendezvous (`key`: the recipe's hash) and builds the
/// backend for its device.
pub fn connect(w: &Worker, device: &candle_core::Device, key: u64) -> Result<Arc<dyn Collective>> {
    let cuda = device.is_cuda();
    let joined = if w.rank == 0 {
        let listen = match w.listen_fd {
            Some(fd) => Listen::Fd(fd),
            None => Listen::Addr(w.endpoint.clone()),
        };
        rendezvous::serve(&listen, w.world, key, || {
            if cuda {
                super::nccl_unique_id()
            } else {
                Ok(Vec::new())
            }
        })?
    } else {
        rendezvous::join(&w.endpoint, w.rank, w.world, key)?
    };
    if cuda {
        super::nccl_comm(joined, device)
    } else {
        Ok(Arc::new(super::tcp::TcpComm::new(joined)))
    }
}

/// Starts this node's workers and waits for them; returns the exit code for this process
/// (0, or an interrupted worker's 128 + signal).
pub fn launch(plan: &Plan) -> Result<i32> {
    let world = plan.world();
    let listener = if plan.node_rank == 0 {
        let bind = match &plan.endpoint {
            None => "127.0.0.1:0".to_string(),
            // Every interface: the endpoint's host name is this node's address for the others.
            Some(e) => format!("0.0.0.0:{}", port_of(e)?),
        };
        let l = std::net::TcpListener::bind(&bind).with_context(|| {
            format!("rendezvous: cannot listen on {bind} (if the port is taken, choose another --rdzv-endpoint port)")
        })?;
        Some(l)
    } else {
        None
    };
    let endpoint = match (&plan.endpoint, &listener) {
        (Some(e), _) => e.clone(),
        (None, Some(l)) => l.local_addr()?.to_string(),
        (None, None) => bail!("internal: no rendezvous endpoint"),
    };
    let exe = std::env::current_exe().context("the launcher cannot find its own binary")?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::signals::install();
    crate::signals::set_patient();
    let mut children: Vec<(usize, Child)> = Vec::new();
    for (i, d) in plan.devices.iter().enumerate() {
        let rank = plan.node_rank * plan.devices.len() + i;
        let mut c = Command::new(&exe);
        c.args(&args)
            .env(ENV_RANK, rank.to_string())
            .env(ENV_WORLD, world.to_string())
            .env(ENV_LOCAL, i.to_string())
            .env(ENV_ENDPOINT, &endpoint)
            .env(ENV_DEVICE, d.to_string())
            .env_remove(ENV_FD);
        if *d == DeviceChoice::Cpu && std::env::var_os("RAYON_NUM_THREADS").is_none() {
            // The node's cores shared between its CPU workers.
            c.env(
                "RAYON_NUM_THREADS",
                (cores / plan.devices.len()).max(1).to_string(),
            );
        }
        let fd = listener.as_ref().filter(|_| rank == 0).map(raw_fd);
        if let Some(fd) = fd {
            c.env(ENV_FD, fd.to_string());
        }
        prepare_child(&mut c, fd);
        let child = c
            .spawn()
            .with_context(|| format!("starting worker {rank} ({})", exe.display()))?;
        children.push((rank, child));
    }
    // Rank 0's worker owns the socket now.
    drop(listener);
    let first = plan.node_rank * plan.devices.len();
    tracing::info!(
        "started {} worker(s) on {} (ranks {first}-{} of {world})",
        children.len(),
        plan.devices
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(","),
        first + plan.devices.len() - 1
    );
    wait_all(children)
}

fn port_of(endpoint: &str) -> Result<u16> {
    endpoint
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("--rdzv-endpoint {endpoint:?}: expected HOST:PORT"))
}

#[cfg(unix)]
fn raw_fd(l: &std::net::TcpListener) -> i32 {
    use std::os::fd::AsRawFd;
    l.as_raw_fd()
}

#[cfg(not(unix))]
fn raw_fd(_: &std::net::TcpListener) -> i32 {
    -1
}

/// In the child before exec: its own process group (a terminal's Ctrl-C reaches the launcher,
/// which forwards it once), SIGTERM when the launcher dies, and the rendezvous socket kept
/// open across exec for rank 0.
#[cfg(unix)]
fn prepare_child(c: &mut Command, fd: Option<i32>) {
    use std::os::unix::process::CommandExt;
    c.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe system calls (prctl, getppid, fcntl,
    // _exit).
    unsafe {
        c.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // The launcher died before prctl: nobody would signal this worker.
                if libc::getppid() != parent {
                    libc::_exit(143);
                }
            }
            if let Some(fd) = fd {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn prepare_child(_: &mut Command, _: Option<i32>) {}

/// How long the others may run after one worker failed.
const GRACE: Duration = Duration::from_secs(30);

fn wait_all(mut children: Vec<(usize, Child)>) -> Result<i32> {
    let mut codes: Vec<Option<i32>> = vec![None; children.len()];
    let mut forwarded = false;
    let mut failed_at: Option<Instant> = None;
    loop {
        for (k, (_, c)) in children.iter_mut().enumerate() {
            if codes[k].is_none() {
                if let Some(s) = c.try_wait()? {
                    codes[k] = Some(exit_code(&s));
                    // An interrupted worker is not a failure: rank 0 may still be saving.
                    let stopped = forwarded && codes[k].is_some_and(|c| c > 128);
                    if codes[k] != Some(0) && !stopped && failed_at.is_none() {
                        failed_at = Some(Instant::now());
                    }
                }
            }
        }
        if codes.iter().all(Option::is_some) {
            break;
        }
        if let (Some(sig), false) = (crate::signals::pending(), forwarded) {
            forwarded = true;
            for (k, (_, c)) in children.iter().enumerate() {
                if codes[k].is_none() {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe {
                        libc::kill(c.id() as i32, sig);
                    }
                }
            }
        }
        // A second signal: the user does not want to wait for the checkpoint.
        let impatient = crate::signals::count() > 1;
        if impatient || failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            for (k, (_, c)) in children.iter_mut().enumerate() {
                if codes[k].is_none() {
                    let _ = c.kill();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ranks: Vec<usize> = children.iter().map(|(r, _)| *r).collect();
    let codes: Vec<i32> = codes.into_iter().flatten().collect();
    if codes.iter().all(|&c| c == 0) {
        return Ok(0);
    }
    // An interrupted run: every worker saved and stopped with the signal's code.
    if forwarded && codes.iter().all(|&c| c > 128) {
        return Ok(codes[0]);
    }
    let bad: Vec<String> = ranks
        .iter()
        .zip(&codes)
        .filter(|(_, &c)| c != 0)
        .map(|(r, c)| format!("rank {r} (exit {c})"))
        .collect();
    bail!(
        "data-parallel training failed: {} — the first error above says why",
        bad.join(", ")
    )
}

fn exit_code(s: &std::process::ExitStatus) -> i32 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = s.signal() {
            return 128 + sig;
        }
    }
    s.code().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_check_their_flags() {
        let p = Plan::parse("cpu,cpu", 1, 0, None).unwrap();
        assert_eq!((p.devices.len(), p.world()), (2, 2));
        let p = Plan::parse("cuda:0, cuda:1", 2, 1, Some("n0:29500".into())).unwrap();
        assert_eq!(p.world(), 4);
        for (d, n, r, e, want) in [
            ("cpu,cuda:0", 1, 0, None, "mixes"),
            ("cuda:1,cuda:1", 1, 0, None, "twice"),
            ("cuda:x", 1, 0, None, "not a device"),
            ("cpu", 2, 0, None, "--rdzv-endpoint"),
            ("cpu", 2, 2, Some("h:1".to_string()), "--node-rank"),
        ] {
            let e = Plan::parse(d, n, r, e).unwrap_err().to_string();
            assert!(e.contains(want), "{d}: {e}");
        }
        assert!(port_of("host").is_err());
        assert_eq!(port_of("10.0.0.1:29500").unwrap(), 29500);
    }
}
