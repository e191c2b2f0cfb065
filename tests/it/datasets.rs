//! Parquet files and Hugging Face Hub datasets (a dataset repo placed in a temporary Hub cache in
//! the real layout, read with HF_HUB_OFFLINE=1, split and config selection included).

use crate::common::{assert_one_line_error, embtune};
use embtune::data::{read_table, DataFormat};
use embtune::pairs::output::{OutputKind, Rows};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn rows(cols: &[&str], data: Vec<Vec<Value>>) -> Rows {
    let mut r = Rows::new(cols);
    for d in data {
        r.push(d);
    }
    r
}

#[test]
fn parquet_round_trip_keeps_strings_ints_floats_and_nulls() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("t.parquet");
    let r = rows(
        &["anchor", "positive", "label", "score"],
        vec![
            vec![
                json!("a \"quoted\", text"),
                json!("b"),
                json!(1),
                json!(0.25),
            ],
            vec![json!("ünïcode"), Value::Null, json!(0), json!(1.5)],
        ],
    );
    r.write(&p, OutputKind::Parquet).unwrap();
    let t = read_table(&p, None, &Default::default()).unwrap();
    assert_eq!(t.format, DataFormat::Parquet);
    assert_eq!(t.columns, ["anchor", "positive", "label", "score"]);
    assert_eq!(t.rows.len(), 2);
    assert_eq!(t.rows[0].cells, r.rows[0]);
    assert_eq!(t.rows[1].cells, r.rows[1]);
    assert_eq!(t.rows[1].line, 2);
}

/// Writes `datasets--org--name` into `cache` with a default config (train/test) and a "triplet" config.
pub(crate) fn seed_cache(cache: &Path) {
    let repo = cache.join("datasets--org--name");
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(sha);
    std::fs::create_dir_all(snap.join("data")).unwrap();
    std::fs::create_dir_all(snap.join("triplet")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), sha).unwrap();
    let pair = |n: usize, tag: &str| {
        rows(
            &["anchor", "positive"],
            (0..n)
                .map(|i| vec![json!(format!("{tag} q{i}")), json!(format!("{tag} d{i}"))])
                .collect(),
        )
    };
    // The train split in two shards, as push_to_hub writes them.
    pair(3, "train-a")
        .write(
            &snap.join("data/train-00000-of-00002.parquet"),
            OutputKind::Parquet,
        )
        .unwrap();
    pair(2, "train-b")
        .write(
            &snap.join("data/train-00001-of-00002.parquet"),
            OutputKind::Parquet,
        )
        .unwrap();
    pair(4, "test")
        .write(
            &snap.join("data/test-00000-of-00001.parquet"),
            OutputKind::Parquet,
        )
        .unwrap();
    rows(
        &["anchor", "positive", "negative"],
        (0..6)
            .map(|i| {
                vec![
                    json!(format!("a{i}")),
                    json!(format!("p{i}")),
                    json!(format!("n{i}")),
                ]
            })
            .collect(),
    )
    .write(
        &snap.join("triplet/train-00000-of-00001.parquet"),
        OutputKind::Parquet,
    )
    .unwrap();
}

fn check_json(cache: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args(["pairs", "--check"])
        .args(args)
        .args(["--json"])
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn hub_dataset_from_the_cache_offline_with_split_and_config() {
    let tmp = tempfile::tempdir().unwrap();
    seed_cache(tmp.path());
    let get = |args: &[&str]| -> Value {
        let out = check_json(tmp.path(), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let train = get(&["hf://datasets/org/name"]);
    assert_eq!(train["rows"], 5, "both train shards");
    assert_eq!(train["text_columns"], json!(["anchor", "positive"]));
    assert_eq!(
        get(&["hf://datasets/org/name", "--split", "test"])["rows"],
        4
    );
    let trip = get(&["hf://datasets/org/name/triplet"]);
    assert_eq!(trip["rows"], 6);
    assert_eq!(
        trip["text_columns"],
        json!(["anchor", "positive", "negative"])
    );
    assert_eq!(
        get(&["hf://datasets/org/name@main", "--split", "test"])["rows"],
        4
    );

    // A split the repo lacks, and a repo the cache lacks: clear one-line errors.
    let out = check_json(
        tmp.path(),
        &["hf://datasets/org/name", "--split", "validation"],
    );
    assert_one_line_error(
        &out,
        &[
            "hf://datasets/org/name@main",
            "no parquet files for split \"validation\"",
            "data/test-00000-of-00001.parquet",
        ],
    );
    let out = check_json(tmp.path(), &["hf://datasets/org/other"]);
    assert_one_line_error(
        &out,
        &[
            "hf://datasets/org/other@main",
            "not in the Hugging Face cache",
            "offline",
        ],
    );
}

#[test]
fn pairs_reads_a_hub_dataset_split_and_writes_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    seed_cache(tmp.path());
    let out = tmp.path().join("neg.parquet");
    let r = Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args([
            "pairs",
            "-d",
            "hf://datasets/org/name",
            "--split",
            "test",
            "--from",
            "pairs",
            "-o",
            out.to_str().unwrap(),
        ])
        .env("HF_HUB_CACHE", tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let t = read_table(&out, None, &Default::default()).unwrap();
    assert_eq!(t.columns, ["anchor", "positive", "negative"]);
    assert_eq!(t.rows.len(), 4);
    assert!(t
        .rows
        .iter()
        .all(|r| r.cells[0].as_str().unwrap().starts_with("test q")));
}

#[test]
fn malformed_parquet_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.parquet");
    rows(
        &["text"],
        (0..50).map(|i| vec![json!(format!("text {i}"))]).collect(),
    )
    .write(&good, OutputKind::Parquet)
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let truncated = tmp.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = tmp.path().join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 this is not a parquet file at all PAR1").unwrap();
    for (p, name) in [
        (&truncated, "truncated.parquet"),
        (&garbage, "garbage.parquet"),
    ] {
        let out = embtune(&["pairs", "--check", p.to_str().unwrap()]);
        assert_one_line_error(&out, &[name, "parquet"]);
    }
    // Every single-byte corruption of the data pages is an error or a readable table, never a crash.
    for off in (4..bytes.len().saturating_sub(8)).step_by(7) {
        let mut b = bytes.clone();
        b[off] ^= 0x5a;
        let p = tmp.path().join("flip.parquet");
        std::fs::write(&p, &b).unwrap();
        let _ = read_table(&p, None, &Default::default());
    }
}
