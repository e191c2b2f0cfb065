//! `embtune pairs`: every builder on small fixtures (rows checked exactly) and on STS-B, hard-negative
//! mining on planted near-duplicates, the dataset check, training directly on each builder's
//! output, and bad input.

use crate::common::{self, assert_one_line_error, embtune, tiny};
use embtune::pairs::output::NegativeFormat;
use embtune::pairs::{build_rows, ColumnMap, NegativeOptions, PairsConfig, Source};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn cfg(data: &Path, source: Source) -> PairsConfig {
    PairsConfig {
        data: data.to_path_buf(),
        format: None,
        read: Default::default(),
        source,
        columns: ColumnMap::default(),
        positive_min: None,
        negative_max: None,
        positives_only: false,
        per_anchor: 1,
        negatives: NegativeOptions::default(),
        model: None,
        seed: 42,
        output: data.with_extension("out.jsonl"),
        encode: Default::default(),
    }
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn rows(r: &embtune::pairs::output::Rows) -> Vec<Vec<Value>> {
    r.rows.clone()
}

#[test]
fn scores_to_thresholded_labels_normalised_scores_and_positives() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "s.csv",
        "sentence1,sentence2,score\na,b,5\nc,d,0.5\ne,f,3\ng,h,4\na,b,5\n",
    );
    let mut c = cfg(&p, Source::Scores);
    c.positive_min = Some(4.0);
    c.negative_max = Some(1.5);
    let (r, rep) = build_rows(&c).unwrap();
    assert_eq!(r.columns, ["sentence1", "sentence2", "label"]);
    assert_eq!(
        rows(&r),
        vec![
            vec![json!("a"), json!("b"), json!(1)],
            vec![json!("c"), json!("d"), json!(0)],
            vec![json!("g"), json!("h"), json!(1)]
        ]
    );
    assert_eq!(rep.duplicates_dropped, 1);
    assert_eq!(rep.skipped["between thresholds"], 1);

    c.positives_only = true;
    let (r, _) = build_rows(&c).unwrap();
    assert_eq!(r.columns, ["anchor", "positive"]);
    assert_eq!(
        rows(&r),
        vec![vec![json!("a"), json!("b")], vec![json!("g"), json!("h")]]
    );

    let (r, _) = build_rows(&cfg(&p, Source::Scores)).unwrap();
    assert_eq!(r.rows[0][2], json!(1.0));
    assert_eq!(r.rows[1][2], json!(0.1));
    assert_eq!(r.rows[2][2], json!(0.6));
}

#[test]
fn stsb_train_thresholds_give_the_implied_counts() {
    let data = common::repo_root().join("data/stsbenchmark/sts-train.csv");
    // Count independently: positives score ≥ 4, negatives ≤ 1.5, distinct (s1, s2, label) rows.
    let mut distinct = std::collections::HashSet::new();
    let (mut pos, mut neg) = (0, 0);
    for line in std::fs::read_to_string(&data).unwrap().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let s: f64 = f[4].parse().unwrap();
        let label = if s >= 4.0 {
            1
        } else if s <= 1.5 {
            0
        } else {
            continue;
        };
        if label == 1 {
            pos += 1
        } else {
            neg += 1
        }
        distinct.insert((f[5].to_string(), f[6].to_string(), label));
    }
    assert_eq!(
        (pos, neg),
        (1406, 1450),
        "the counts the reference recipe used"
    );
    let mut c = cfg(&data, Source::Scores);
    c.format = Some(embtune::data::DataFormat::Stsb);
    c.positive_min = Some(4.0);
    c.negative_max = Some(1.5);
    let (r, rep) = build_rows(&c).unwrap();
    assert_eq!(rep.rows_in, 5749);
    assert_eq!(r.rows.len(), distinct.len());
    assert_eq!(r.rows.len() + rep.duplicates_dropped, pos + neg);
    assert_eq!(rep.skipped["between thresholds"], 5749 - pos - neg);
}

#[test]
fn labeled_pairs_kept_or_positives_only_and_bad_labels_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "l.jsonl",
        "{\"q\":\"a\",\"d\":\"b\",\"y\":1}\n{\"q\":\"c\",\"d\":\"e\",\"y\":0}\n",
    );
    let mut c = cfg(&p, Source::Labeled);
    c.columns =
        ColumnMap::parse(&["sentence1=q".into(), "sentence2=d".into(), "label=y".into()]).unwrap();
    let (r, _) = build_rows(&c).unwrap();
    assert_eq!(
        rows(&r),
        vec![
            vec![json!("a"), json!("b"), json!(1)],
            vec![json!("c"), json!("e"), json!(0)]
        ]
    );
    c.positives_only = true;
    assert_eq!(
        rows(&build_rows(&c).unwrap().0),
        vec![vec![json!("a"), json!("b")]]
    );
    let bad = write(
        tmp.path(),
        "bad.jsonl",
        "{\"q\":\"a\",\"d\":\"b\",\"y\":1}\n{\"q\":\"c\",\"d\":\"e\",\"y\":2}\n",
    );
    c.data = bad;
    let e = format!("{:#}", build_rows(&c).unwrap_err());
    assert!(
        e.contains("bad.jsonl:2")
            && e.contains("field \"y\"")
            && e.contains("expected a label 0 or 1"),
        "{e}"
    );
}

#[test]
fn classes_to_triplets() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "c.csv",
        "text,label\nt1,x\nt2,x\nt3,y\nt4,y\nt5,z\nt6,x\n",
    );
    let mut c = cfg(&p, Source::Classes);
    c.per_anchor = 2;
    let (r, rep) = build_rows(&c).unwrap();
    let class = |t: &str| match t {
        "t1" | "t2" | "t6" => "x",
        "t3" | "t4" => "y",
        _ => "z",
    };
    // t5 is alone in class z: skipped; every other text gets up to 2 triplets (duplicates dropped).
    assert_eq!(rep.skipped["class with no other text"], 1);
    assert!(
        r.rows.len() + rep.duplicates_dropped == 10,
        "{} rows + {} duplicates",
        r.rows.len(),
        rep.duplicates_dropped
    );
    for row in &r.rows {
        let (a, p, n) = (
            row[0].as_str().unwrap(),
            row[1].as_str().unwrap(),
            row[2].as_str().unwrap(),
        );
        assert_ne!(a, p);
        assert_eq!(class(a), class(p), "{row:?}");
        assert_ne!(class(a), class(n), "{row:?}");
    }
    let anchors: std::collections::HashSet<&str> =
        r.rows.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(anchors.len(), 5);
    // Same seed, same rows; another seed, other rows.
    assert_eq!(rows(&build_rows(&c).unwrap().0), rows(&r));
    c.seed = 7;
    assert_ne!(rows(&build_rows(&c).unwrap().0), rows(&r));
}

#[test]
fn empty_class_label_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "c.csv", "text,label\nt1,x\nt2,\nt3,y\n");
    let e = format!("{:#}", build_rows(&cfg(&p, Source::Classes)).unwrap_err());
    assert!(
        e.contains("c.csv:3") && e.contains("empty class label"),
        "{e}"
    );
}

#[test]
fn nli_rows_to_triplets_grouped_by_premise() {
    let tmp = tempfile::tempdir().unwrap();
    let body = [
        r#"{"sentence1": "P1", "sentence2": "e1", "gold_label": "entailment"}"#,
        r#"{"sentence1": "P1", "sentence2": "c1", "gold_label": "contradiction"}"#,
        r#"{"sentence1": "P1", "sentence2": "n1", "gold_label": "neutral"}"#,
        r#"{"sentence1": "P1", "sentence2": "e2", "gold_label": "entailment"}"#,
        r#"{"sentence1": "P2", "sentence2": "e3", "gold_label": "entailment"}"#,
        r#"{"sentence1": "P2", "sentence2": "x", "gold_label": "-"}"#,
        r#"{"sentence1": "P3", "sentence2": "c3", "gold_label": 2}"#,
        r#"{"sentence1": "P3", "sentence2": "e4", "gold_label": 0}"#,
    ]
    .join("\n");
    let p = write(tmp.path(), "snli.jsonl", &body);
    let mut c = cfg(&p, Source::Nli);
    c.columns = ColumnMap::parse(&[
        "premise=sentence1".into(),
        "hypothesis=sentence2".into(),
        "label=gold_label".into(),
    ])
    .unwrap();
    let (r, rep) = build_rows(&c).unwrap();
    assert_eq!(r.columns, ["anchor", "positive", "negative"]);
    assert_eq!(
        rows(&r),
        vec![
            vec![json!("P1"), json!("e1"), json!("c1")],
            vec![json!("P1"), json!("e2"), json!("c1")],
            vec![json!("P3"), json!("e4"), json!("c3")],
        ]
    );
    assert_eq!(rep.skipped["label not entailment/neutral/contradiction"], 1);
    assert_eq!(rep.skipped["neutral"], 1);
    assert_eq!(
        rep.skipped["premise without both entailment and contradiction"],
        1
    );
}

#[test]
fn random_negatives_never_the_positive_or_the_anchor() {
    let tmp = tempfile::tempdir().unwrap();
    let body: String = std::iter::once("anchor,positive\n".to_string())
        .chain((0..30).map(|i| format!("q{i},d{i}\n")))
        .collect();
    let p = write(tmp.path(), "qd.csv", &body);
    let mut c = cfg(&p, Source::Pairs);
    c.negatives.num_negatives = 3;
    c.negatives.format = NegativeFormat::NTuple;
    let (r, _) = build_rows(&c).unwrap();
    assert_eq!(
        r.columns,
        [
            "anchor",
            "positive",
            "negative_1",
            "negative_2",
            "negative_3"
        ]
    );
    assert_eq!(r.rows.len(), 30);
    for row in &r.rows {
        let pos = row[1].as_str().unwrap();
        let negs: Vec<&str> = row[2..].iter().map(|v| v.as_str().unwrap()).collect();
        assert!(!negs.contains(&pos), "{row:?}");
        assert_eq!(
            negs.iter().collect::<std::collections::HashSet<_>>().len(),
            3
        );
    }
}

/// Planted near-duplicates with the real model: for each query the corpus holds its positive, a
/// near-paraphrase of the positive (a false negative a careless miner would pick) and unrelated texts.
#[test]
fn mined_negatives_respect_range_max_score_and_margin_and_skip_the_positive() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs = [
        (
            "a man is playing a guitar .",
            "a man plays the guitar .",
            "a man is playing the guitar .",
        ),
        (
            "a woman is slicing an onion .",
            "a woman cuts an onion .",
            "a woman is cutting an onion .",
        ),
        (
            "a dog runs in the park .",
            "a dog is running in a park .",
            "a dog is running through the park .",
        ),
    ];
    let mut body = String::from("anchor,positive\n");
    for (q, d, _) in &pairs {
        body.push_str(&format!("{q},{d}\n"));
    }
    let corpus: Vec<&str> = pairs
        .iter()
        .map(|p| p.2)
        .chain([
            "the stock market fell today .",
            "a chef is cooking pasta .",
            "children play football .",
            "a cat sleeps on a sofa .",
            "rain is falling on the city .",
        ])
        .collect();
    let p = write(tmp.path(), "qd.csv", &body);
    let corpus_file = write(tmp.path(), "corpus.txt", &corpus.join("\n"));
    let model = common::load_real();
    let mut c = cfg(&p, Source::Pairs);
    c.model = Some(common::real_spec());
    c.negatives = NegativeOptions {
        mined: true,
        num_negatives: 2,
        corpus: Some(corpus_file),
        ..Default::default()
    };

    let score = |a: &str, b: &str| {
        let e = embtune::encode::encode(&model, &[a, b], &Default::default()).unwrap();
        embtune::similarity::cosine(e.row(0), e.row(1))
    };
    // Without guards, the planted near-duplicate is the hardest negative.
    let (r, _) = build_rows(&c).unwrap();
    for (q, d, planted) in &pairs {
        let negs: Vec<&str> = r
            .rows
            .iter()
            .filter(|row| row[0] == *q)
            .map(|row| row[2].as_str().unwrap())
            .collect();
        assert_eq!(negs.len(), 2);
        assert_eq!(negs[0], *planted, "the near-duplicate ranks first for {q}");
        assert!(!negs.contains(d), "never the positive");
    }
    // Margin 0.1: candidates within 0.1 of the positive's score are dropped.
    c.negatives.margin = Some(0.1);
    let (r, _) = build_rows(&c).unwrap();
    for row in &r.rows {
        let (q, d, n) = (
            row[0].as_str().unwrap(),
            row[1].as_str().unwrap(),
            row[2].as_str().unwrap(),
        );
        assert!(
            score(q, n) + 0.1 <= score(q, d) + 1e-6,
            "{q}: {n} is within the margin"
        );
        assert_ne!(n, d);
    }
    let mut guarded = 0;
    for (q, d, planted) in &pairs {
        let within = score(q, planted) + 0.1 > score(q, d);
        guarded += within as usize;
        let present = r.rows.iter().any(|row| row[0] == *q && row[2] == *planted);
        assert_eq!(
            present, !within,
            "{q}: planted {planted} present={present}, within margin={within}"
        );
    }
    assert!(
        guarded >= 1,
        "the fixture must plant at least one false negative inside the margin"
    );
    // max_score 0.3 keeps only candidates scoring ≤ 0.3.
    c.negatives.margin = None;
    c.negatives.max_score = Some(0.3);
    let (r, _) = build_rows(&c).unwrap();
    for row in &r.rows {
        assert!(
            score(row[0].as_str().unwrap(), row[2].as_str().unwrap()) <= 0.3 + 1e-6,
            "{row:?}"
        );
    }
    // range_min 1 skips the hardest survivor: the planted near-duplicate is not taken.
    c.negatives.max_score = None;
    c.negatives.range_min = 1;
    let (r, _) = build_rows(&c).unwrap();
    for (q, _, planted) in &pairs {
        let negs: Vec<&str> = r
            .rows
            .iter()
            .filter(|row| row[0] == *q)
            .map(|row| row[2].as_str().unwrap())
            .collect();
        assert!(
            !negs.contains(planted),
            "{q}: range_min 1 must skip {planted}"
        );
        assert_eq!(negs.len(), 2);
    }
}

#[test]
fn chunked_top_k_equals_the_full_sort() {
    let mut rng = embtune::rng::Rng::new(3);
    let mk = |n: usize, rng: &mut embtune::rng::Rng| {
        let mut data: Vec<f32> = (0..n * 8).map(|_| rng.next_f64() as f32 - 0.5).collect();
        for r in data.chunks_mut(8) {
            embtune::similarity::l2_normalize(r);
        }
        embtune::encode::Embeddings {
            data,
            dim: 8,
            truncated: 0,
        }
    };
    let a = mk(5, &mut rng);
    let c = mk(100, &mut rng);
    let got = embtune::pairs::topk::top_k(&a, &c, 7, 13).unwrap();
    for i in 0..5 {
        let mut all: Vec<(f32, usize)> = (0..100)
            .map(|j| (a.row(i).iter().zip(c.row(j)).map(|(x, y)| x * y).sum(), j))
            .collect();
        all.sort_by(|x, y| y.0.total_cmp(&x.0));
        assert_eq!(
            got[i].iter().map(|x| x.1).collect::<Vec<_>>(),
            all[..7].iter().map(|x| x.1).collect::<Vec<_>>()
        );
    }
}

#[test]
fn dataset_check_counts_duplicates_leakage_labels_and_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "word ".repeat(300);
    let train = write(
        tmp.path(),
        "t.csv",
        &format!("sentence1,sentence2,label\na,b,1\na,b,1\nc,d,0\n{long},e,1\n"),
    );
    let eval = write(tmp.path(), "e.csv", "sentence1,sentence2,label\nc,z,0\n");
    let out = embtune(&[
        "pairs",
        "--check",
        train.to_str().unwrap(),
        "--eval-data",
        eval.to_str().unwrap(),
        "-m",
        common::REAL_MODEL,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["rows"], 4);
    assert_eq!(r["duplicate_rows"], 1);
    assert_eq!(r["leaked_texts"], 1);
    assert_eq!(r["label_balance"], json!({"0": 1, "1": 3}));
    assert_eq!(r["tokens"]["max_seq_length"], 256);
    assert_eq!(r["tokens"]["truncated"], 1);
    assert_eq!(r["tokens"]["max"], 302);
}

/// `embtune train` reads each builder's output as is (tiny model, 2 steps each).
#[test]
fn train_runs_directly_on_every_builders_output() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    tiny::write_tiny_model(&model, 1);
    let scores = write(
        tmp.path(),
        "s.csv",
        &(0..12)
            .map(|i| format!("s{i} a,s{i} b,{}\n", i % 6))
            .fold(String::from("sentence1,sentence2,score\n"), |a, b| a + &b),
    );
    let classes = write(
        tmp.path(),
        "c.csv",
        &(0..12)
            .map(|i| format!("text {i},{}\n", i % 3))
            .fold(String::from("text,label\n"), |a, b| a + &b),
    );
    let qd = write(
        tmp.path(),
        "qd.csv",
        &(0..12)
            .map(|i| format!("q{i},d{i}\n"))
            .fold(String::from("anchor,positive\n"), |a, b| a + &b),
    );
    let nli = write(
        tmp.path(),
        "nli.csv",
        &(0..6)
            .map(|i| format!("p{i},e{i},entailment\np{i},c{i},contradiction\n"))
            .fold(String::from("premise,hypothesis,label\n"), |a, b| a + &b),
    );
    let cases: Vec<(&str, &PathBuf, Vec<&str>, &str)> = vec![
        ("scores", &scores, vec![], "cosent"),
        (
            "thresholds",
            &scores,
            vec!["--positive-min", "3", "--negative-max", "1"],
            "contrastive",
        ),
        (
            "positives",
            &scores,
            vec!["--positive-min", "2", "--positives-only"],
            "mnrl",
        ),
        ("classes", &classes, vec![], "triplet"),
        ("nli", &nli, vec![], "mnrl"),
        ("random", &qd, vec!["--num-negatives", "1"], "triplet"),
        (
            "labeled-pair",
            &qd,
            vec!["--output-format", "labeled-pair"],
            "contrastive",
        ),
    ];
    for (name, data, extra, loss) in cases {
        let from = match name {
            "scores" | "thresholds" | "positives" => "scores",
            "classes" => "classes",
            "nli" => "nli",
            _ => "pairs",
        };
        let out = tmp.path().join(format!("{name}.jsonl"));
        let mut args = vec![
            "pairs",
            "-d",
            data.to_str().unwrap(),
            "--from",
            from,
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        let r = embtune(&args);
        assert!(
            r.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        let t = embtune(&[
            "train",
            "-m",
            model.to_str().unwrap(),
            "-d",
            out.to_str().unwrap(),
            "--loss",
            loss,
            "--batch-size",
            "2",
            "--max-steps",
            "2",
            "-o",
            tmp.path().join(format!("m-{name}")).to_str().unwrap(),
            "-q",
        ]);
        assert!(
            t.status.success(),
            "{name} → train --loss {loss}: {}",
            String::from_utf8_lossy(&t.stderr)
        );
    }
}

#[test]
fn missing_column_names_the_role_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "x.csv", "question,answer\nq,a\nq2,a2\n");
    let out = embtune(&[
        "pairs",
        "-d",
        p.to_str().unwrap(),
        "--from",
        "pairs",
        "-o",
        tmp.path().join("o.jsonl").to_str().unwrap(),
    ]);
    assert_one_line_error(
        &out,
        &["x.csv", "missing column \"anchor\"", "question, answer"],
    );
    let out = embtune(&[
        "pairs",
        "-d",
        p.to_str().unwrap(),
        "--from",
        "pairs",
        "--columns",
        "anchor=question,positive=answer",
        "-o",
        tmp.path().join("o.jsonl").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn csv_row_with_the_wrong_number_of_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "x.csv", "anchor,positive\nq,a\nq2,a2,extra\n");
    let out = embtune(&[
        "pairs",
        "-d",
        p.to_str().unwrap(),
        "--from",
        "pairs",
        "-o",
        tmp.path().join("o.jsonl").to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["x.csv:3", "3 fields; expected 2"]);
}
