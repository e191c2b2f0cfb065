//! Model files we did not write (issue 7, item 2): each damaged or hostile file is refused with a
//! one-line error naming it — no panic, no allocation sized by a lying header.

use crate::common::{assert_one_line_error, embtune, tiny};
use std::path::{Path, PathBuf};

fn model(tmp: &Path) -> PathBuf {
    let dir = tmp.join("m");
    tiny::write_tiny_model(&dir, 1);
    dir
}

fn embed(dir: &Path, tmp: &Path) -> std::process::Output {
    let input = tmp.join("in.txt");
    std::fs::write(&input, "hello\n").unwrap();
    embtune(&[
        "embed",
        "-m",
        dir.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        tmp.join("o.npy").to_str().unwrap(),
    ])
}

#[test]
fn truncated_safetensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    let w = dir.join("model.safetensors");
    let len = std::fs::metadata(&w).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&w)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_one_line_error(
        &embed(&dir, tmp.path()),
        &["model.safetensors", "not a readable safetensors file"],
    );
}

/// Headers that lie: a declared header length far beyond the file, a tensor whose offsets run
/// past the data, and a shape that does not match its byte count.
#[test]
fn lying_safetensors_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    let w = dir.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let body = &bytes[8 + n..];
    let write = |h: &serde_json::Value, body: &[u8]| {
        let mut hb = serde_json::to_vec(h).unwrap();
        while hb.len() % 8 != 0 {
            hb.push(b' ');
        }
        let mut out = (hb.len() as u64).to_le_bytes().to_vec();
        out.extend(hb);
        out.extend(body);
        std::fs::write(&w, out).unwrap();
    };
    // 1. header length 2^60.
    let mut huge = bytes.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    std::fs::write(&w, &huge).unwrap();
    assert_one_line_error(
        &embed(&dir, tmp.path()),
        &["model.safetensors", "not a readable safetensors file"],
    );
    // 2. offsets past the end of the data.
    let mut h = header.clone();
    let name = "embeddings.word_embeddings.weight";
    let end = h[name]["data_offsets"][1].as_u64().unwrap();
    h[name]["data_offsets"][1] = (end + (1 << 40)).into();
    write(&h, body);
    assert_one_line_error(
        &embed(&dir, tmp.path()),
        &["model.safetensors", "not a readable safetensors file"],
    );
    // 3. a shape with 10^12 elements over the same bytes.
    let mut h = header.clone();
    h[name]["shape"] = serde_json::json!([1_000_000, 1_000_000]);
    write(&h, body);
    assert_one_line_error(
        &embed(&dir, tmp.path()),
        &["model.safetensors", "not a readable safetensors file"],
    );
}

/// config.json asking for 10^9 hidden units is refused before anything is allocated.
#[test]
fn absurd_config_sizes_are_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["hidden_size"] = 1_000_000_000u64.into();
    std::fs::write(&p, v.to_string()).unwrap();
    let out = embed(&dir, tmp.path());
    assert_one_line_error(&out, &["config.json", "hidden_size"]);
}

#[test]
fn tokenizer_json_that_does_not_parse() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    std::fs::write(
        dir.join("tokenizer.json"),
        "{\"version\": \"1.0\", \"model\": {\"type\": \"Nope\"",
    )
    .unwrap();
    assert_one_line_error(&embed(&dir, tmp.path()), &["tokenizer.json"]);
}

/// A tokenizer whose ids go past the embedding table (config.json's vocab_size) is refused at
/// load, naming both numbers, instead of failing mid-run (or reading out of bounds on a GPU).
#[test]
fn tokenizer_ids_past_the_embedding_table() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    let p = dir.join("tokenizer.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let vocab = t["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len();
    vocab.insert("zzzz".into(), serde_json::json!(n + 5));
    std::fs::write(&p, serde_json::to_string(&t).unwrap()).unwrap();
    let want_id = format!("token id {}", n + 5);
    let want_size = format!("vocab_size is {n}");
    assert_one_line_error(
        &embed(&dir, tmp.path()),
        &["tokenizer.json", &want_id, &want_size],
    );
}

#[test]
fn modules_json_pointing_outside_the_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    let p = dir.join("modules.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v[1]["path"] = "../../etc".into();
    std::fs::write(&p, v.to_string()).unwrap();
    assert_one_line_error(&embed(&dir, tmp.path()), &["modules.json", "../../etc"]);
}

/// A file of the model directory that is a symbolic link to a file elsewhere is not read.
#[test]
fn symlinks_out_of_the_model_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model(tmp.path());
    let outside = tmp.path().join("secret.json");
    std::fs::copy(dir.join("config.json"), &outside).unwrap();
    std::fs::remove_file(dir.join("config.json")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("config.json")).unwrap();
    assert_one_line_error(
        &embed(&dir, tmp.path()),
        &["config.json", "outside the model directory", "refusing"],
    );
    // A link that stays inside the directory is fine.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    std::fs::rename(&outside, dir.join("real-config.json")).unwrap();
    std::os::unix::fs::symlink("real-config.json", dir.join("config.json")).unwrap();
    let out = embed(&dir, tmp.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
