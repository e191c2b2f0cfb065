//! Bad input gets a one-line error naming the file (and line/field) — one test per case.

use crate::common::{self, assert_one_line_error, embtune, tiny};
use std::path::{Path, PathBuf};

fn texts_file(dir: &Path) -> PathBuf {
    let p = dir.join("in.txt");
    std::fs::write(&p, "hello\n").unwrap();
    p
}

fn embed_with_model(model: &str, dir: &Path) -> std::process::Output {
    let input = texts_file(dir);
    let out = dir.join("o.npy");
    embtune(&[
        "embed",
        "-m",
        model,
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
}

#[test]
fn missing_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = embed_with_model("./no/such/model-dir", tmp.path());
    assert_one_line_error(&out, &["./no/such/model-dir", "no such directory"]);
}

#[test]
fn hub_model_missing_from_cache_when_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let out = embed_with_model("some-org/not-cached-model", tmp.path());
    assert_one_line_error(
        &out,
        &["some-org/not-cached-model", "offline", "fetch-model.sh"],
    );
}

#[test]
fn model_directory_without_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    tiny::write_tiny_model(&dir, 1);
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let out = embed_with_model(dir.to_str().unwrap(), tmp.path());
    assert_one_line_error(
        &out,
        &[dir.to_str().unwrap(), "model.safetensors is missing"],
    );
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn unknown_model_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    tiny::write_tiny_model(&dir, 1);
    edit_config(&dir, |v| v["model_type"] = "llama".into());
    let out = embed_with_model(dir.to_str().unwrap(), tmp.path());
    assert_one_line_error(
        &out,
        &["config.json", "model_type \"llama\" is not supported"],
    );
}

#[test]
fn tensor_shape_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    tiny::write_tiny_model(&dir, 1);
    edit_config(&dir, |v| v["intermediate_size"] = 48.into());
    let out = embed_with_model(dir.to_str().unwrap(), tmp.path());
    let line = assert_one_line_error(
        &out,
        &[
            "model.safetensors",
            "tensor-shape mismatch",
            "intermediate.dense.weight",
        ],
    );
    assert!(
        line.contains("[48, 32]") && line.contains("[64, 32]"),
        "{line}"
    );
}

#[test]
fn missing_and_unexpected_tensors_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    tiny::write_tiny_model(&dir, 1);
    let p = dir.join("model.safetensors");
    let mut t = candle_core::safetensors::load(&p, &candle_core::Device::Cpu).unwrap();
    let w = t.remove("encoder.layer.1.output.dense.bias").unwrap();
    t.insert("encoder.layer.1.output.dense.bias_typo".into(), w);
    candle_core::safetensors::save(&t, &p).unwrap();
    let out = embed_with_model(dir.to_str().unwrap(), tmp.path());
    assert_one_line_error(
        &out,
        &[
            "model.safetensors",
            "missing tensors: encoder.layer.1.output.dense.bias",
            "unexpected tensors: encoder.layer.1.output.dense.bias_typo",
        ],
    );
}

#[test]
fn empty_input_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("empty.txt");
    std::fs::write(&input, "").unwrap();
    let out_path = tmp.path().join("o.npy");
    let out = embtune(&[
        "embed",
        "-m",
        common::REAL_MODEL,
        "-i",
        input.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["empty.txt", "no data rows"]);
    assert!(!out_path.exists(), "no output on failure");
}

#[test]
fn malformed_jsonl_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bad.jsonl");
    std::fs::write(&input, "{\"text\": \"ok\"}\n{\"text\": \"broken\"\n").unwrap();
    let out_path = tmp.path().join("o.npy");
    let out = embtune(&[
        "embed",
        "-m",
        common::REAL_MODEL,
        "-i",
        input.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["bad.jsonl:2", "invalid JSON"]);
}

#[test]
fn missing_column() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pairs.csv");
    std::fs::write(&input, "a,b,score\nx,y,1\n").unwrap();
    let out = embtune(&[
        "eval",
        "-m",
        common::REAL_MODEL,
        "-d",
        input.to_str().unwrap(),
        "--task",
        "sts",
    ]);
    assert_one_line_error(
        &out,
        &["pairs.csv", "missing column \"sentence1\"", "a, b, score"],
    );
}

#[test]
fn non_numeric_score_names_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pairs.csv");
    std::fs::write(&input, "sentence1,sentence2,score\nx,y,1\nx,z,high\n").unwrap();
    let out = embtune(&[
        "eval",
        "-m",
        common::REAL_MODEL,
        "-d",
        input.to_str().unwrap(),
        "--task",
        "sts",
    ]);
    assert_one_line_error(
        &out,
        &["pairs.csv:3", "field \"score\"", "expected a finite number"],
    );
}

#[test]
fn csv_row_with_wrong_field_count() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("rows.csv");
    std::fs::write(&input, "text,id\nhello,1\nworld\n").unwrap();
    let out_path = tmp.path().join("o.npy");
    let out = embtune(&[
        "embed",
        "-m",
        common::REAL_MODEL,
        "-i",
        input.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["rows.csv:3", "1 fields; expected 2"]);
}

#[test]
fn unsupported_output_extension() {
    let tmp = tempfile::tempdir().unwrap();
    let input = texts_file(tmp.path());
    let out = embtune(&[
        "embed",
        "-m",
        common::REAL_MODEL,
        "-i",
        input.to_str().unwrap(),
        "-o",
        "/tmp/x.parquet",
    ]);
    assert_one_line_error(&out, &["x.parquet", ".npy, .safetensors or .jsonl"]);
}
