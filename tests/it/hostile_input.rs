//! Hostile input across the readers and commands (issue 7, item 1): every case either works as a
//! sentence-transformers user would expect or stops with a one-line error naming file, line and
//! field. Fixtures are generated here.

use crate::common::{assert_one_line_error, embtune, tiny};
use std::path::{Path, PathBuf};

struct Fx {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    model: PathBuf,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let model = dir.join("m");
    tiny::write_tiny_model(&model, 7);
    Fx {
        _tmp: tmp,
        dir,
        model,
    }
}

fn embed(f: &Fx, input: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "embed",
        "-m",
        f.model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
    ];
    let out = f.dir.join("o.jsonl");
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    embtune(&args)
}

fn train(f: &Fx, data: &Path, loss: &str) -> std::process::Output {
    embtune(&[
        "train",
        "-m",
        f.model.to_str().unwrap(),
        "-d",
        data.to_str().unwrap(),
        "--loss",
        loss,
        "-o",
        f.dir.join("out").to_str().unwrap(),
        "--max-steps",
        "1",
        "--batch-size",
        "1",
        "-q",
        "--device",
        "cpu",
    ])
}

fn write(f: &Fx, name: &str, bytes: &[u8]) -> PathBuf {
    let p = f.dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn jsonl_rows(f: &Fx) -> Vec<serde_json::Value> {
    std::fs::read_to_string(f.dir.join("o.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn invalid_utf8_names_line_and_byte_offset() {
    let f = fx();
    let p = write(&f, "bad.txt", b"fine\nbad \xff\xfe here\n");
    assert_one_line_error(
        &embed(&f, &p, &[]),
        &["bad.txt:2", "invalid UTF-8 at byte offset 9"],
    );
}

/// A UTF-8 BOM and CRLF line ends: the header is read right (no BOM in the first column
/// name) and errors still name the right line.
#[test]
fn bom_and_crlf_are_read_transparently() {
    let f = fx();
    let p = write(
        &f,
        "bom.csv",
        b"\xef\xbb\xbftext,other\r\nfirst one,x\r\nsecond,y\r\n",
    );
    let out = embed(&f, &p, &["--column", "text"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = jsonl_rows(&f);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["text"], "second");
    let p = write(
        &f,
        "crlf.csv",
        b"sentence1,sentence2,label\r\na,b,1\r\nc,d,0.5\r\n",
    );
    assert_one_line_error(
        &train(&f, &p, "contrastive"),
        &["crlf.csv:3", "\"label\"", "0 or 1"],
    );
}

/// NUL bytes, empty texts and a 2 MB single-line text: embedded (the long one truncated and
/// counted), one row each, in order.
#[test]
fn nul_bytes_empty_texts_and_a_huge_line_are_embedded() {
    let f = fx();
    let huge = "word ".repeat(400_000);
    let lines = [
        serde_json::json!({"text": "nul\u{0}inside"}),
        serde_json::json!({"text": ""}),
        serde_json::json!({"text": huge}),
        serde_json::json!({"text": "last"}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let p = write(&f, "odd.jsonl", body.as_bytes());
    let out = embed(&f, &p, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 of 4 texts") && err.contains("truncated"),
        "{err}"
    );
    let rows = jsonl_rows(&f);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3]["text"], "last");
    for r in &rows {
        let e = r["embedding"].as_array().unwrap();
        assert!(e.iter().all(|x| x.as_f64().unwrap().is_finite()));
    }
}

#[test]
fn duplicate_column_names_are_refused() {
    let f = fx();
    let p = write(&f, "dup.csv", b"text,text,score\na,b,1\n");
    assert_one_line_error(
        &train(&f, &p, "cosent"),
        &["dup.csv:1", "duplicate column name \"text\""],
    );
}

#[test]
fn non_finite_wrong_type_and_out_of_range_labels_are_refused() {
    let f = fx();
    let p = write(
        &f,
        "inf.csv",
        b"sentence1,sentence2,score\na,b,0.5\nc,d,inf\n",
    );
    assert_one_line_error(
        &train(&f, &p, "cosent"),
        &["inf.csv:3", "\"score\"", "finite number"],
    );
    let p = write(&f, "yes.csv", b"sentence1,sentence2,label\na,b,yes\n");
    assert_one_line_error(
        &train(&f, &p, "contrastive"),
        &["yes.csv:2", "\"label\"", "finite number", "yes"],
    );
    let p = write(
        &f,
        "range.csv",
        b"sentence1,sentence2,score\na,b,0.5\nc,d,4.2\n",
    );
    assert_one_line_error(
        &train(&f, &p, "cosine"),
        &[
            "range.csv:3",
            "[-1, 1]",
            "divide 0\u{2013}5 STS scores by 5",
        ],
    );
    let p = write(
        &f,
        "nulls.jsonl",
        b"{\"sentence1\": \"a\", \"sentence2\": \"b\", \"score\": null}\n",
    );
    let out = train(&f, &p, "cosent");
    assert_one_line_error(&out, &["nulls.jsonl:1", "\"score\""]);
}

#[test]
fn zero_rows_and_too_small_datasets_are_refused() {
    let f = fx();
    let p = write(&f, "header-only.csv", b"sentence1,sentence2,score\n");
    assert_one_line_error(
        &train(&f, &p, "cosent"),
        &["header-only.csv", "no data rows"],
    );
    let p = write(&f, "empty.jsonl", b"");
    assert_one_line_error(&embed(&f, &p, &[]), &["empty.jsonl", "no data rows"]);
    let p = write(&f, "one.csv", b"sentence1,sentence2,score\na,b,0.5\n");
    let out = embtune(&[
        "train",
        "-m",
        f.model.to_str().unwrap(),
        "-d",
        p.to_str().unwrap(),
        "--loss",
        "cosent",
        "-o",
        f.dir.join("o2").to_str().unwrap(),
        "--batch-size",
        "4",
        "-q",
    ]);
    assert_one_line_error(&out, &["--batch-size 4", "one.csv"]);
}

#[test]
fn mixed_quoting_in_csv() {
    let f = fx();
    // A quoted field with a comma and an escaped quote, next to unquoted ones.
    let p = write(
        &f,
        "q.csv",
        b"text,n\n\"a, \"\"quoted\"\" one\",1\nplain,2\n",
    );
    let out = embed(&f, &p, &["--column", "text"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(jsonl_rows(&f)[0]["text"], "a, \"quoted\" one");
    // A stray quote in the middle of an unquoted field is literal text, as Python's csv reads it.
    let p = write(&f, "q2.csv", b"text,n\nit\"s fine,1\n");
    let out = embed(&f, &p, &["--column", "text"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(jsonl_rows(&f)[0]["text"], "it\"s fine");
}

/// A CSV without a header row: the error says the first row looks like data.
#[test]
fn a_missing_header_row_is_named() {
    let f = fx();
    let p = write(
        &f,
        "nohead.csv",
        b"a cat sits,a dog runs,0.5\nsun,moon,0.1\n",
    );
    assert_one_line_error(
        &embed(&f, &p, &["--column", "text"]),
        &["nohead.csv:1", "first row looks like data", "header row"],
    );
}
