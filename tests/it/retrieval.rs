//! `eval --task retrieval`: every metric of sentence-transformers 6.2's
//! InformationRetrievalEvaluator on real data with the real all-MiniLM-L6-v2
//! (shared/reference/retrieval_base.json, 1e-4), and the data rules on a small BEIR folder
//! (CRLF, no header, unjudged queries, unknown ids counted, empty corpus, duplicate ids, the
//! three-file form, the corpus cache, the report).

use crate::common::{assert_one_line_error, embtune, ensure_real_model, shared};
use crate::families::fixture_model;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn eval_json(args: &[&str], envs: &[(&str, &Path)]) -> (serde_json::Value, String) {
    let mut cmd = crate::common::embtune_cmd_offline();
    cmd.args(["eval", "--task", "retrieval", "--json"])
        .args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

/// pubmedqa-pqal test (500 queries, 1,000 abstracts) with all-MiniLM-L6-v2 at 256 tokens: every
/// metric the reference holds equals sentence-transformers' to 1e-4, keys at the top level.
#[test]
fn pubmedqa_metrics_equal_sentence_transformers() {
    ensure_real_model();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared().join("reference/retrieval_base.json")).unwrap(),
    )
    .unwrap();
    let want = &reference["pubmedqa-pqal"];
    let tmp = tempfile::tempdir().unwrap();
    let data = shared().join("data/retrieval/pubmedqa-pqal");
    let (got, _) = eval_json(
        &[
            "-m",
            "sentence-transformers/all-MiniLM-L6-v2",
            "--max-seq-length",
            "256",
            "-d",
            s(&data),
        ],
        &[("XDG_CACHE_HOME", tmp.path())],
    );
    let mut compared = 0;
    for (k, v) in want.as_object().unwrap() {
        if !k.starts_with("cosine_") {
            continue;
        }
        let g = got[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {got}"));
        assert!((g - v.as_f64().unwrap()).abs() <= 1e-4, "{k}: {g} vs {v}");
        compared += 1;
    }
    assert_eq!(compared, 17);
    assert_eq!(got["primary_metric"], "cosine_ndcg@10");
    for k in ["dot_ndcg@10", "cosine_ndcg_graded@10", "dot_map@100"] {
        assert!(got[k].is_number(), "{k}");
    }
    // MiniLM normalises: dot equals cosine.
    assert!(
        (got["dot_ndcg@10"].as_f64().unwrap() - got["cosine_ndcg@10"].as_f64().unwrap()).abs()
            < 1e-9
    );
}

/// A small BEIR folder: 6 documents, 4 queries (one unjudged), graded qrels.
fn beir(dir: &Path, qrels: &str) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let docs = [
        ("d1", "Guitars", "A man is playing a guitar on stage."),
        ("d2", "Cats", "The cat sat on the mat and slept."),
        ("d3", "", "Stocks fell sharply on Monday."),
        ("d4", "Dogs", "Three dogs run across a snowy field."),
        ("d5", "Weather", "It will rain tomorrow in the north."),
        ("d6", "Music", "The orchestra played a symphony."),
    ];
    let corpus: String = docs
        .iter()
        .map(|(i, t, x)| format!("{}\n", serde_json::json!({"_id": i, "title": t, "text": x})))
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    let queries = [
        ("q1", "who plays guitar"),
        ("q2", "sleeping cat"),
        ("q3", "market crash"),
        ("q4", "an unjudged query"),
    ];
    let q: String = queries
        .iter()
        .map(|(i, t)| format!("{}\n", serde_json::json!({"_id": i, "text": t})))
        .collect();
    std::fs::write(dir.join("queries.jsonl"), q).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), qrels).unwrap();
}

const QRELS: &str = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td6\t1\nq2\td2\t1\nq3\td3\t1\nq3\td5\t0\nq4\td4\t0\n";

/// CRLF line ends and a missing header give the same metrics; the unjudged query (only a 0
/// score) is skipped and said; qrels naming unknown ids are counted, not fatal.
#[test]
fn beir_folders_are_read_as_sentence_transformers_reads_them() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture_model("bert");
    let cache = tmp.path().join("cache");
    let env = [("XDG_CACHE_HOME", cache.as_path())];
    let run = |qrels: &str, name: &str| {
        let d = tmp.path().join(name);
        beir(&d, qrels);
        eval_json(&["-m", s(&m), "-d", s(&d)], &env)
    };
    let (clean, note) = run(QRELS, "clean");
    assert!(
        note.contains("1 of 4 queries have no relevant document"),
        "{note}"
    );
    let (crlf, _) = run(&QRELS.replace('\n', "\r\n"), "crlf");
    let (headless, _) = run(QRELS.split_once('\n').unwrap().1, "headless");
    assert_eq!(clean, crlf);
    assert_eq!(clean, headless);
    let unknown = format!("{QRELS}q9\td1\t1\nq9\td2\t1\nq1\td77\t1\n");
    let (with_unknown, note) = run(&unknown, "unknown");
    assert_eq!(clean, with_unknown);
    assert!(
        note.contains("2 judgments name 1 query ids not in"),
        "{note}"
    );
    assert!(note.contains("1 judgments name documents not in"), "{note}");
    for v in clean
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_f64())
    {
        assert!((0.0..=1.0).contains(&v));
    }
    // The three-file form is the same data.
    let d = tmp.path().join("clean");
    let (files, _) = eval_json(
        &[
            "-m",
            s(&m),
            "--queries",
            s(&d.join("queries.jsonl")),
            "--corpus",
            s(&d.join("corpus.jsonl")),
            "--qrels",
            s(&d.join("qrels/test.tsv")),
        ],
        &env,
    );
    assert_eq!(clean, files);
    // The corpus embeddings were cached (one file per model/settings/corpus), and a cached run
    // gives the same numbers.
    let cached: Vec<_> = std::fs::read_dir(cache.join("embtune/embeddings"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!cached.is_empty());
    assert_eq!(run(QRELS, "clean").0, clean);
}

/// An empty corpus, a duplicate document id, a missing split, a malformed qrels line: one-line
/// errors naming the file.
#[test]
fn bad_retrieval_data_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture_model("bert");
    let d = tmp.path().join("b");
    let run = |extra: &[&str]| {
        let mut a = vec!["eval", "--task", "retrieval", "-m", s(&m), "-d", s(&d)];
        a.extend_from_slice(extra);
        embtune(&a)
    };
    beir(&d, QRELS);
    assert_one_line_error(
        &run(&["--split", "dev"]),
        &["no qrels for split \"dev\"", "splits here: test"],
    );
    // A first line that is not a number is the header; a later one is an error.
    std::fs::write(d.join("qrels/test.tsv"), "q1\td1\t1\nq2\td2\tgood\n").unwrap();
    assert_one_line_error(&run(&[]), &["test.tsv:2", "score", "\"good\""]);
    beir(&d, QRELS);
    let corpus = std::fs::read_to_string(d.join("corpus.jsonl")).unwrap();
    std::fs::write(
        d.join("corpus.jsonl"),
        format!("{corpus}{{\"_id\": \"d2\", \"text\": \"again\"}}\n"),
    )
    .unwrap();
    assert_one_line_error(&run(&[]), &["corpus.jsonl", "\"d2\" appears twice"]);
    std::fs::write(d.join("corpus.jsonl"), "").unwrap();
    let e = run(&[]);
    assert!(!e.status.success());
    let err = String::from_utf8_lossy(&e.stderr);
    assert!(err.contains("corpus.jsonl"), "{err}");
    // Flags of other tasks are refused with the task they belong to.
    beir(&d, QRELS);
    assert_one_line_error(
        &run(&["--columns", "a,b,score"]),
        &["--columns", "--task sts"],
    );
    assert_one_line_error(&run(&["--prompt", "x"]), &["--prompt", "--query-prompt"]);
}

/// `--report` draws the per-query nDCG@10 distribution and the recall@k curve.
#[test]
fn retrieval_report_has_its_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("b");
    beir(&d, QRELS);
    let report = tmp.path().join("report");
    let (_, _) = eval_json(
        &[
            "-m",
            s(&fixture_model("bert")),
            "-d",
            s(&d),
            "--report",
            s(&report),
        ],
        &[("XDG_CACHE_HOME", tmp.path())],
    );
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    for needle in ["nDCG@10", "recall@k"] {
        assert!(html.contains(needle), "{needle} not in the report");
    }
    assert!(report.join("ndcg.svg").is_file() && report.join("recall.svg").is_file());
}
