//! The usability rules, each as a class over every subcommand it concerns (driven by tables, so a
//! new command or flag gets the same rule): header detection, numeric columns, the dataset
//! check's columns, numeric flag ranges, flags that do not apply, outputs checked before the
//! work, the output-directory rule, one vocabulary of flags, recipe-relative paths.

use crate::common::{assert_one_line_error, embtune, tiny};
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CSV without a header row (the first data row would become the column names): every
/// command that reads a header refuses it, in the same words.
#[test]
fn a_file_without_a_header_row_is_refused_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let f = tmp.path().join("noheader.csv");
    std::fs::write(
        &f,
        "a man is playing a guitar,a man plays the guitar,0.9\nthe cat sat on the mat,a dog runs,0.1\n",
    )
    .unwrap();
    let o = tmp.path().join("o");
    let (m, f, o) = (s(&m), s(&f), s(&o));
    let out_npy = format!("{o}.npy");
    let out_jsonl = format!("{o}.jsonl");
    let commands: Vec<Vec<&str>> = vec![
        vec!["train", "-m", m, "-d", f, "--loss", "cosent", "-o", o],
        vec!["eval", "-m", m, "-d", f, "--task", "sts"],
        vec![
            "embed", "-m", m, "-i", f, "--column", "text", "-o", &out_npy,
        ],
        vec![
            "pairs",
            "-d",
            f,
            "--from",
            "scores",
            "--positive-min",
            "0.5",
            "-o",
            &out_jsonl,
        ],
        vec!["pairs", "--check", f],
        vec!["similarity", "-m", m, "--query", "a cat", "--corpus", f],
    ];
    for args in &commands {
        assert_one_line_error(
            &embtune(args),
            &[
                "noheader.csv:1",
                "the first row looks like data",
                "header row",
            ],
        );
    }
    // An STS-B file (no header, tab-separated) read as CSV: the error says --format stsb.
    let stsb = crate::common::stsb("dev");
    let e = assert_one_line_error(
        &embtune(&["eval", "-m", m, "-d", s(&stsb), "--task", "sts"]),
        &["sts-dev.csv:1", "--format"],
    );
    assert!(e.contains("stsb"), "{e}");
}

/// A column whose every value is a number is never trained on as a text: it is the label of a
/// loss that takes one, else an error naming --label-column / --columns.
#[test]
fn numeric_columns_are_labels_or_errors_never_texts() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let f = tmp.path().join("qa.csv");
    let rows: String = (0..12)
        .map(|i| format!("question {i},answer number {i},{}\n", i % 2))
        .collect();
    std::fs::write(&f, format!("q,a,is_match\n{rows}")).unwrap();
    let out = tmp.path().join("o");
    assert_one_line_error(
        &embtune(&[
            "train",
            "-m",
            s(&m),
            "-d",
            s(&f),
            "--loss",
            "mnrl",
            "-o",
            s(&out),
            "--max-steps",
            "1",
            "-b",
            "4",
        ]),
        &[
            "\"is_match\"",
            "only numbers",
            "--label-column",
            "--columns",
        ],
    );
    // Contrastive takes a 0/1 label: the numeric column is it (with a note), two text columns.
    let r = embtune(&[
        "train",
        "-m",
        s(&m),
        "-d",
        s(&f),
        "--loss",
        "contrastive",
        "-o",
        s(&out),
        "--max-steps",
        "1",
        "-b",
        "4",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("\"is_match\"") && err.contains("label"),
        "{err}"
    );
    // The dataset check agrees: two text columns.
    let c = embtune(&["pairs", "--check", s(&f), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    assert_eq!(v["text_columns"], serde_json::json!(["q", "a"]));
}

/// `pairs --check --format stsb` counts the texts `train` trains on (sentence1, sentence2), not
/// STS-B's genre/file/year/id columns: both checks give the same numbers.
#[test]
fn the_dataset_check_counts_the_same_texts_as_train() {
    let train = crate::common::stsb("train");
    let dev = crate::common::stsb("dev");
    let c = embtune(&[
        "pairs",
        "--check",
        s(&train),
        "--format",
        "stsb",
        "--eval-data",
        s(&dev),
        "--eval-format",
        "stsb",
        "--json",
    ]);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let v: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    assert_eq!(
        v["text_columns"],
        serde_json::json!(["sentence1", "sentence2"]),
        "{v}"
    );
    let table = embtune::data::read_table(
        &train,
        Some(embtune::data::DataFormat::Stsb),
        &Default::default(),
    )
    .unwrap();
    let eval = embtune::data::read_table(
        &dev,
        Some(embtune::data::DataFormat::Stsb),
        &Default::default(),
    )
    .unwrap();
    // What train's own check computes (train resolves its columns, then checks with them).
    let set =
        embtune::train::data::TrainSet::from_table(&table, &Default::default(), true).unwrap();
    let spec = embtune::data::ColumnSpec {
        text_columns: Some(set.columns.clone()),
        label_column: set.label_column.clone(),
    };
    let r = embtune::pairs::check::check(&table, &spec, Some(&eval), None).unwrap();
    let theirs = serde_json::to_value(&r).unwrap();
    for k in ["rows", "duplicate_rows", "leaked_texts", "text_columns"] {
        assert_eq!(
            v[k], theirs[k],
            "{k}: pairs --check {} vs train {}",
            v[k], theirs[k]
        );
    }
}
