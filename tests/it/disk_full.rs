//! Disk full (issue 7, item 4), simulated with a file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored):
//! writes past it fail with EFBIG as they would with ENOSPC. Each output path reports the
//! failed write, exits non-zero, and leaves the previous output intact and no temporary files.

use crate::common::{embtune_cmd_offline, tiny};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn limited(mut c: Command, bytes: u64) -> std::process::Output {
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

fn no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.contains(".tmp-"), "temporary file left behind: {n}");
    }
}

#[test]
fn embed_on_a_full_disk_keeps_the_previous_output() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let input = tmp.path().join("in.txt");
    let text: String = (0..400).map(|i| format!("sentence number {i}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let out = tmp.path().join("o.npy");
    std::fs::write(&out, b"previous output").unwrap();
    let mut c = embtune_cmd_offline();
    c.args([
        "embed",
        "-m",
        m.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    // 400 × 32 floats = 51 kB of output; the model itself is read, not written.
    let r = limited(c, 16 * 1024);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "succeeded on a full disk: {err}");
    assert!(
        err.contains("o.npy") && err.contains("File too large"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"previous output");
    no_temp_files(tmp.path());
}

#[test]
fn training_on_a_full_disk_fails_cleanly_and_keeps_the_previous_model() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let data = crate::common::scored_pairs_tsv(tmp.path(), 16);
    let o = tmp.path().join("o");
    let args = |steps: &str| -> Vec<String> {
        [
            "train",
            "-m",
            m.to_str().unwrap(),
            "-d",
            data.to_str().unwrap(),
            "--loss",
            "cosent",
            "-o",
            o.to_str().unwrap(),
            "--batch-size",
            "4",
            "--save-steps",
            "2",
            "--max-steps",
            steps,
            "-q",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut c = embtune_cmd_offline();
    c.args(args("2"));
    assert!(c.output().unwrap().status.success());
    let ckpt = o.join("checkpoints/checkpoint-2");
    assert!(
        !ckpt.exists(),
        "the last step saves the model, not a checkpoint"
    );
    // Resume-free second run to 6 steps with a tiny file-size limit: the first checkpoint write
    // (model.safetensors is ~100 kB) fails.
    let before = std::fs::read(o.join("model.safetensors")).unwrap();
    let mut c = embtune_cmd_offline();
    c.args(args("6")).arg("--overwrite");
    let r = limited(c, 32 * 1024);
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success(), "{err}");
    assert!(
        err.contains("File too large") && err.contains("checkpoint"),
        "{err}"
    );
    assert!(
        embtune::train::checkpoint::list(&o).is_empty(),
        "a failed checkpoint is listed"
    );
    assert_eq!(
        std::fs::read(o.join("model.safetensors")).unwrap(),
        before,
        "previous model changed"
    );
    no_temp_files(&o.join("checkpoints"));
}
