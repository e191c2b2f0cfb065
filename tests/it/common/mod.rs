//! Shared test support: the real model (through the project's own fetch script), the shared
//! reference data, a tiny random BERT with a tiny WordPiece tokenizer, and running the binary.

#![allow(dead_code)]

pub mod tiny;

use embtune::model::{ModelSpec, SentenceEncoder};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const REAL_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` next to the repository.
pub fn shared() -> PathBuf {
    repo_root().join("..").join("shared")
}

pub fn stsb(split: &str) -> PathBuf {
    shared()
        .join("data/stsbenchmark")
        .join(format!("sts-{split}.csv"))
}

/// Runs scripts/fetch-model.sh once per test process (idempotent), so the real model is in the
/// Hub cache; a failure fails the test — never a skip.
pub fn ensure_real_model() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/fetch-model.sh"))
            .output()
            .expect("running fetch-model.sh");
        assert!(
            out.status.success(),
            "fetch-model.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The real model, resolved offline through the Hub cache.
pub fn real_spec() -> ModelSpec {
    ensure_real_model();
    let mut spec = ModelSpec {
        model: REAL_MODEL.into(),
        ..Default::default()
    };
    spec.hub.offline = true;
    spec
}

pub fn load_real() -> SentenceEncoder {
    SentenceEncoder::load(&real_spec(), &candle_core::Device::Cpu).expect("loading the real model")
}

/// The real model's snapshot directory in the Hub cache.
pub fn real_model_dir() -> PathBuf {
    ensure_real_model();
    let cache = embtune::model::hub::default_cache_dir();
    let repo = cache.join("models--sentence-transformers--all-MiniLM-L6-v2");
    let rev = std::fs::read_to_string(repo.join("refs/main")).expect("refs/main");
    repo.join("snapshots").join(rev.trim())
}

/// Runs the embtune binary with `args` (offline).
pub fn embtune(args: &[&str]) -> Output {
    ensure_real_model();
    Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("running embtune")
}

/// A TSV of `n` scored pairs (sentence1, sentence2, score in 0..1) for tiny-model training.
pub fn scored_pairs_tsv(dir: &Path, n: usize) -> PathBuf {
    let p = dir.join("d.tsv");
    let rows: String = (0..n)
        .map(|i| format!("a sentence {i}\tanother one {i}\t0.{}\n", i % 10))
        .collect();
    std::fs::write(&p, format!("sentence1\tsentence2\tscore\n{rows}")).unwrap();
    p
}

/// The embtune binary as a `Command` (offline), for tests that set more than arguments.
pub fn embtune_cmd_offline() -> Command {
    ensure_real_model();
    let mut c = Command::new(env!("CARGO_BIN_EXE_embtune"));
    c.env("HF_HUB_OFFLINE", "1");
    c
}

/// Asserts the command failed with exactly one error line on stderr that contains every needle.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("note:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "error {:?} does not mention {n:?}",
            lines[0]
        );
    }
    lines[0].to_string()
}

/// Copies a directory tree, following symlinks (the Hub cache's snapshots are symlinks).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let target = to.join(e.file_name());
        if std::fs::metadata(&p).unwrap().is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}
