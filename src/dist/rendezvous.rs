//! How the ranks of a multi-process run find each other (`--devices`, `--nnodes`): rank 0
//! listens on the rendezvous address (a socket its launcher bound, inherited as a file
//! descriptor, so no other program can take the port between the launcher and the worker);
//! every other rank connects to it, retrying until a deadline (the nodes of a job start at
//! different times), and says who it is: rank, world size and the run's key (a hash of its
//! configuration, so a worker started with another command is refused instead of training
//! something else). When every rank has joined, rank 0 answers each with one payload — the NCCL
//! unique id on GPUs, nothing on the CPU — and the connections stay open: the CPU backend
//! (`tcp.rs`) carries its collectives over them; NCCL leaves them idle, and [`watch`] reads
//! them, so a rank that stops without saying goodbye stops every other rank, on every node,
//! instead of leaving them waiting in NCCL. The wire format: little-endian integers, a frame is
//! a u64 length then that many bytes. Depends on std only.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"EMBTRDV1";

/// Where rank 0 listens.
pub enum Listen {
    /// A listening socket inherited from the launcher (its file descriptor).
    Fd(i32),
    /// An address to bind.
    Addr(String),
    /// A socket already listening.
    Listener(TcpListener),
}

/// The ranks joined: rank 0 holds one stream per other rank (index r − 1 is rank r), every
/// other rank one stream to rank 0.
pub struct Joined {
    pub rank: usize,
    pub world: usize,
    pub peers: Vec<TcpStream>,
    /// Rank 0's payload (the same on every rank).
    pub payload: Vec<u8>,
}

/// How long ranks wait for each other to join: `EMBTUNE_RDZV_TIMEOUT` seconds, default 600
/// (torchrun waits 900 s; the nodes of a batch job rarely start further apart).
pub fn timeout() -> Duration {
    let s = std::env::var("EMBTUNE_RDZV_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(600);
    Duration::from_secs(s.max(1))
}

/// A frame: u64 length, then the bytes.
pub fn send_frame(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    s.write_all(&(bytes.len() as u64).to_le_bytes())?;
    s.write_all(bytes)
}

/// A frame of at most `max` bytes.
pub fn recv_frame(s: &mut TcpStream, max: usize) -> Result<Vec<u8>> {
    let mut len = [0u8; 8];
    s.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len) as usize;
    if len > max {
        bail!("rendezvous: a frame of {len} bytes (at most {max} expected): not an embtune rank");
    }
    let mut out = vec![0u8; len];
    s.read_exact(&mut out)?;
    Ok(out)
}

fn hello(rank: usize, world: usize, key: u64) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend((rank as u64).to_le_bytes());
    h.extend((world as u64).to_le_bytes());
    h.extend(key.to_le_bytes());
    h
}

fn parse_hello(h: &[u8]) -> Option<(usize, usize, u64)> {
    if h.len() != 32 || &h[..8] != MAGIC {
        return None;
    }
    let n = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Some((n(8) as usize, n(16) as usize, n(24)))
}

/// Rank 0: waits for the other `world − 1` ranks, checks that they run the same recipe
/// (`key`) at the same world size, then sends each `payload()` (or, when one does not match,
/// the reason to all, and fails).
pub fn serve(
    listen: &Listen,
    world: usize,
    key: u64,
    payload: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<Joined> {
    let listener = match listen {
        Listen::Listener(l) => l.try_clone()?,
        #[cfg(unix)]
        Listen::Fd(fd) => {
            use std::os::fd::FromRawFd;
            // SAFETY: the launcher passes a listening TCP socket it opened for this process and
            // does not use it afterwards; this process owns it from here on.
            unsafe { TcpListener::from_raw_fd(*fd) }
        }
        #[cfg(not(unix))]
        Listen::Fd(_) => bail!("rendezvous: inherited sockets need Unix"),
        Listen::Addr(a) => TcpListener::bind(a)
            .with_context(|| format!("rendezvous: cannot listen on {a} (--rdzv-endpoint)"))?,
    };
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout();
    let mut slots: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
    while slots.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((mut s, from)) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                let Some((r, w, k)) = recv_frame(&mut s, 64).ok().and_then(|h| parse_hello(&h))
                else {
                    tracing::warn!(
                        "rendezvous: ignored a connection from {from} (not an embtune rank)"
                    );
                    continue;
                };
                s.set_read_timeout(None)?;
                let why = if w != world {
                    Some(format!("rank {r} (from {from}) runs {w} ranks, rank 0 {world}: every node needs the same --devices count and --nnodes"))
                } else if k != key {
                    Some(format!("rank {r} (from {from}) runs another recipe than rank 0: start every node with the same command"))
                } else if r == 0 || r >= world {
                    Some(format!(
                        "a rank {r} (from {from}) is outside 1..{world}: check --node-rank"
                    ))
                } else if slots[r - 1].is_some() {
                    Some(format!(
                        "rank {r} joined twice (from {from}): check --node-rank"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    let mut all: Vec<TcpStream> =
                        slots.iter_mut().filter_map(Option::take).collect();
                    all.push(s);
                    for p in all.iter_mut() {
                        let _ = p
                            .write_all(&[1])
                            .and_then(|_| send_frame(p, why.as_bytes()));
                    }
                    bail!("rendezvous: {why}");
                }
                slots[r - 1] = Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let missing: Vec<String> = slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    bail!(
                        "rendezvous: ranks {} did not join within {} s (EMBTUNE_RDZV_TIMEOUT): are the other nodes started, with --rdzv-endpoint pointing here?",
                        missing.join(", "),
                        timeout().as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("rendezvous: accept"),
        }
    }
    let payload = payload()?;
    let mut peers: Vec<TcpStream> = slots.into_iter().flatten().collect();
    for p in peers.iter_mut() {
        p.write_all(&[0])?;
        send_frame(p, &payload)?;
    }
    Ok(Joined {
        rank: 0,
        world,
        peers,
        payload,
    })
}

/// Rank `rank` > 0: connects to rank 0 at `addr` (retrying until the deadline), says who it
/// is and waits for rank 0's payload.
pub fn join(addr: &str, rank: usize, world: usize, key: u64) -> Result<Joined> {
    let deadline = Instant::now() + timeout();
    let mut s = loop {
        let tried = addr
            .to_socket_addrs()
            .with_context(|| format!("rendezvous: {addr} is not a host:port (--rdzv-endpoint)"))?
            .find_map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok());
        if let Some(s) = tried {
            break s;
        }
        if Instant::now() > deadline {
            bail!(
                "rendezvous: rank 0 at {addr} did not answer within {} s (EMBTUNE_RDZV_TIMEOUT): is node 0 started, and reachable on that port?",
                timeout().as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    s.set_nodelay(true)?;
    send_frame(&mut s, &hello(rank, world, key))?;
    let mut status = [0u8; 1];
    s.read_exact(&mut status)
        .context("rendezvous: rank 0 closed the connection before every rank joined")?;
    let payload = recv_frame(&mut s, 1 << 20)?;
    if status[0] != 0 {
        bail!("rendezvous: {}", String::from_utf8_lossy(&payload));
    }
    Ok(Joined {
        rank,
        world,
        peers: vec![s],
        payload,
    })
}

/// The goodbye byte: the rank finished (or stopped on a signal) and closes on purpose.
const GOODBYE: u8 = 1;

/// Idle rendezvous connections being watched ([`watch`]).
pub struct Watch {
    peers: Vec<TcpStream>,
}

impl Watch {
    /// Tells every peer this rank ends on purpose (before the process exits normally).
    pub fn goodbye(&self) {
        for p in &self.peers {
            let _ = (&*p).write_all(&[GOODBYE]);
        }
    }
}

/// One thread per connection of `joined` (indices: rank 0's peers are ranks 1.., another
/// rank's one peer is rank 0) waits for the peer's goodbye; if the connection closes without
/// one, `lost(peer rank)` is called.
pub fn watch(joined: &Joined, lost: fn(usize)) -> Result<Watch> {
    let mut peers = Vec::with_capacity(joined.peers.len());
    for (i, p) in joined.peers.iter().enumerate() {
        let peer = if joined.rank == 0 { i + 1 } else { 0 };
        let mut r = p.try_clone()?;
        peers.push(p.try_clone()?);
        std::thread::Builder::new()
            .name(format!("embtune-watch-{peer}"))
            .spawn(move || {
                let mut b = [0u8; 1];
                match r.read(&mut b) {
                    Ok(1) if b[0] == GOODBYE => {}
                    _ => lost(peer),
                }
            })?;
    }
    Ok(Watch { peers })
}

/// What a watched rank does when a peer is lost: NCCL would wait for it without a timeout.
pub fn exit_on_lost(peer: usize) {
    eprintln!(
        "error: rank {peer} stopped without finishing (its own error says why); stopping this rank too"
    );
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_join_and_a_wrong_recipe_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let a = addr.clone();
        let leaf = std::thread::spawn(move || join(&a, 1, 2, 7));
        let root = serve(&Listen::Addr(addr.clone()), 2, 7, || Ok(b"id".to_vec())).unwrap();
        let leaf = leaf.join().unwrap().unwrap();
        assert_eq!((root.peers.len(), leaf.payload.as_slice()), (1, &b"id"[..]));

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let a = addr.clone();
        let leaf = std::thread::spawn(move || join(&a, 1, 2, 8));
        let e = serve(&Listen::Addr(addr), 2, 7, || Ok(Vec::new()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("another recipe"), "{e}");
        let e = leaf.join().unwrap().err().unwrap();
        assert!(e.to_string().contains("another recipe"), "{e}");
    }

    static LOST: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    #[test]
    fn a_peer_that_closes_without_goodbye_is_lost_and_one_that_says_it_is_not() {
        use std::sync::atomic::Ordering;
        let pair = |key| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap().to_string();
            let leaf = std::thread::spawn(move || join(&addr, 1, 2, key));
            let root = serve(&Listen::Listener(l), 2, key, || Ok(Vec::new())).unwrap();
            (root, leaf.join().unwrap().unwrap())
        };
        fn lost(peer: usize) {
            LOST.fetch_add(100 + peer, Ordering::SeqCst);
        }
        let wait = || std::thread::sleep(std::time::Duration::from_millis(200));
        // A goodbye, then the close: nothing is lost.
        let (root, leaf) = pair(1);
        let _w = watch(&root, lost).unwrap();
        watch(&leaf, lost).unwrap().goodbye();
        drop(leaf);
        wait();
        assert_eq!(LOST.load(Ordering::SeqCst), 0);
        // A close without goodbye (a crash): rank 0 learns that rank 1 is gone.
        let (root, leaf) = pair(2);
        let _w = watch(&root, lost).unwrap();
        drop(leaf);
        wait();
        assert_eq!(LOST.load(Ordering::SeqCst), 101);
    }
}
