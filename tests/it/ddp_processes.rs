//! Data parallelism across processes (`--devices cpu,cpu`, and two "nodes" on this machine
//! with `--nnodes 2 --rdzv-endpoint`): the launcher starts one worker per device, they meet at
//! the TCP rendezvous and sum over the CPU backend in rank order — so a process run ends
//! bitwise where the in-process thread ranks end (which `ddp.rs` checks against one device).
//! An interrupted process run saves at one step on every rank and resumes bitwise; a node with
//! another recipe, a failing worker and bad flags give clear errors.

use crate::ddp::{norms, ok, setup, weight_diff};
use crate::recipes::train_with;
use std::path::Path;
use std::process::{Command, Stdio};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ddp::ok` on rayon's 2 threads (for each worker; the thread ranks share them): our CPU
/// kernels split work by thread count, so results are bitwise only at the same count.
fn ok_threads(t: &crate::recipes::Tiny, out: &Path, args: &[&str]) {
    let o = train_cmd(t, out, args)
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// `embtune train` on the tiny model and data, logging every step, quiet, then `args`.
fn train_cmd(t: &crate::recipes::Tiny, out: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_embtune"));
    c.args([
        "train",
        "-m",
        t.model.to_str().unwrap(),
        "-d",
        t.data.to_str().unwrap(),
    ])
    .args([
        "-o",
        out.to_str().unwrap(),
        "--lr",
        "1e-3",
        "--log-steps",
        "1",
        "-q",
    ])
    .args(args);
    c
}

#[test]
fn cpu_processes_train_bitwise_as_thread_ranks_with_and_without_gathering() {
    let t = setup();
    // Dropout on: each rank's masks come from (seed, rank, step) in both.
    let cosent = ["--loss", "cosent", "-b", "8", "--max-steps", "6"];
    let gathered = [
        "--loss",
        "mnrl",
        "-b",
        "8",
        "--max-steps",
        "6",
        "--gather-across-devices",
    ];
    for (name, flags) in [("cosent", &cosent[..]), ("gathered", &gathered[..])] {
        let threads = t.dir.join(format!("threads-{name}"));
        ok(
            &t,
            &threads,
            &[flags, &["--test-thread-ranks", "2"]].concat(),
        );
        let procs = t.dir.join(format!("procs-{name}"));
        ok_threads(&t, &procs, &[flags, &["--devices", "cpu,cpu"]].concat());
        assert_eq!(norms(&threads), norms(&procs), "{name}: grad norms");
        assert_eq!(norms(&procs).len(), 6);
        assert_eq!(weight_diff(&threads, &procs), 0.0, "{name}: weights");
    }
    // Without gathering the processes train another loss: the check above can fail.
    let local = t.dir.join("procs-local");
    ok_threads(
        &t,
        &local,
        &[&gathered[..6], &["--devices", "cpu,cpu"]].concat(),
    );
    assert!(weight_diff(&t.dir.join("procs-gathered"), &local) > 1e-5);
}

/// `embtune train` for node `rank` of a 2-node run on this machine (one CPU worker each).
fn node(t: &crate::recipes::Tiny, out: &Path, rank: usize, port: u16, extra: &[&str]) -> Command {
    let endpoint = format!("127.0.0.1:{port}");
    let rank = rank.to_string();
    let flags = [
        "--loss",
        "cosent",
        "-b",
        "8",
        "--max-steps",
        "6",
        "--devices",
        "cpu",
    ];
    let mut c = train_cmd(t, out, &flags);
    c.args([
        "--nnodes",
        "2",
        "--node-rank",
        &rank,
        "--rdzv-endpoint",
        &endpoint,
    ])
    .args(extra)
    .env("EMBTUNE_RDZV_TIMEOUT", "60")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

#[test]
fn two_nodes_meet_at_the_rendezvous_and_a_node_with_another_recipe_is_refused() {
    let t = setup();
    let threads = t.dir.join("threads");
    ok(
        &t,
        &threads,
        &[
            "--loss",
            "cosent",
            "-b",
            "8",
            "--max-steps",
            "6",
            "--test-thread-ranks",
            "2",
        ],
    );
    // Node 1 starts first: it waits for node 0.
    let port = free_port();
    let out = t.dir.join("nodes");
    let n1 = node(&t, &out, 1, port, &[]).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let n0 = node(&t, &out, 0, port, &[]).output().unwrap();
    let n1 = n1.wait_with_output().unwrap();
    for o in [&n0, &n1] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(weight_diff(&threads, &out), 0.0);

    // Node 1 with another learning rate: both stop, saying why.
    let port = free_port();
    let out = t.dir.join("mismatch");
    let n1 = node(&t, &out, 1, port, &["--lr", "2e-3"]).spawn().unwrap();
    let n0 = node(&t, &out, 0, port, &[]).output().unwrap();
    let n1 = n1.wait_with_output().unwrap();
    for o in [&n0, &n1] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(err.contains("another recipe"), "{err}");
    }
}

#[test]
fn an_interrupted_process_run_resumes_bitwise_and_bad_launches_are_refused() {
    let t = setup();
    let flags = [
        "--loss",
        "cosent",
        "-b",
        "8",
        "--max-steps",
        "300",
        "--devices",
        "cpu,cpu",
    ];
    let straight = t.dir.join("straight");
    ok(&t, &straight, &flags);
    // SIGTERM to the launcher once training has begun: every worker stops at the same step and
    // rank 0 saves a checkpoint.
    let cut = t.dir.join("cut");
    let child = train_cmd(&t, &cut, &flags)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = cut.join("metrics.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 3 {
        assert!(t0.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{err}");
    let ckpts: Vec<_> = std::fs::read_dir(cut.join("checkpoints"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(ckpts.len(), 1, "{err}");
    let ckpt = ckpts[0].path();
    let resumed = t.dir.join("resumed");
    ok(
        &t,
        &resumed,
        &[&flags[..], &["--resume", ckpt.to_str().unwrap()]].concat(),
    );
    assert_eq!(weight_diff(&straight, &resumed), 0.0);

    // A worker that fails (its data file is unreadable) stops the run with its error.
    let o = train_with(
        &t,
        &t.dir.join("bad"),
        &[
            "-d",
            "/nonexistent.tsv",
            "--loss",
            "cosent",
            "--devices",
            "cpu,cpu",
            "-q",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("/nonexistent.tsv"), "{err}");
    assert!(err.contains("data-parallel training failed"), "{err}");
    // Flags that cannot work are refused before any worker starts.
    for (extra, want) in [
        (&["--devices", "cpu,cuda:0"][..], "mixes cpu and cuda"),
        (
            &["--devices", "cpu", "--nnodes", "2"][..],
            "--rdzv-endpoint",
        ),
        (&["--devices", "cpu", "--device", "cpu"][..], "give one"),
        (&["--nnodes", "2"][..], "--devices"),
    ] {
        let mut a = vec!["-d", t.data.to_str().unwrap(), "--loss", "cosent"];
        a.extend_from_slice(extra);
        let o = train_with(&t, &t.dir.join("refused"), &a);
        crate::common::assert_one_line_error(&o, &[want]);
    }
}

#[test]
fn gathering_leaves_out_an_epochs_short_last_step() {
    let t = setup();
    // 64 rows in batches of 12: 5 full and one of 4 per epoch; steps of 2 (one per rank): the
    // third step of each epoch ([12, 4]) cannot be gathered and is left out.
    let out = t.dir.join("uneven");
    let flags = [
        "--loss",
        "mnrl",
        "-b",
        "12",
        "--epochs",
        "2",
        "--gather-across-devices",
    ];
    ok_threads(&t, &out, &[&flags[..], &["--devices", "cpu,cpu"]].concat());
    assert_eq!(norms(&out).len(), 4);
    // Without gathering the short step trains.
    let plain = t.dir.join("uneven-plain");
    ok_threads(
        &t,
        &plain,
        &[&flags[..6], &["--devices", "cpu,cpu"]].concat(),
    );
    assert_eq!(norms(&plain).len(), 6);
    // No full step at all: said before training.
    let o = train_with(
        &t,
        &t.dir.join("too-big"),
        &[
            "-d",
            t.data.to_str().unwrap(),
            "--loss",
            "mnrl",
            "-b",
            "40",
            "--gather-across-devices",
            "--test-thread-ranks",
            "2",
            "-q",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("at least 80 examples"),
        "{err}"
    );
}
