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

/// A valid stand-in for every required argument of `sub` (the first possible value of an
/// enum, else a path-like word), so that a command line parses and only the flag under test
/// can be wrong.
fn required_args(sub: &clap::Command) -> Vec<String> {
    let mut out = Vec::new();
    let needed = |a: &clap::Arg| {
        a.is_required_set()
            || a.get_long().is_some_and(|l| {
                embtune::cli::config_file::REQUIRED_UNLESS.contains(&(sub.get_name(), l))
            })
    };
    for a in sub.get_arguments().filter(|a| needed(a)) {
        let v = a
            .get_possible_values()
            .first()
            .map(|p| p.get_name().to_string())
            .unwrap_or_else(|| "x".into());
        match a.get_long() {
            Some(l) => out.extend([format!("--{l}"), v]),
            None => out.push(v),
        }
    }
    out
}

fn numeric(a: &clap::Arg) -> bool {
    use std::any::TypeId;
    let t = a.get_value_parser().type_id();
    [
        TypeId::of::<usize>(),
        TypeId::of::<u64>(),
        TypeId::of::<u32>(),
        TypeId::of::<f64>(),
        TypeId::of::<f32>(),
    ]
    .iter()
    .any(|id| t == *id)
}

/// Every numeric flag of every subcommand has a range rule (one table for all), and a value
/// outside it is refused before any work with an error that names the flag and the range.
#[test]
fn every_numeric_flag_of_every_subcommand_is_range_checked() {
    let cmd = embtune::cli::config_file::command();
    let mut checked = 0;
    for sub in cmd.get_subcommands() {
        for arg in sub.get_arguments().filter(|a| numeric(a)) {
            let long = arg.get_long().unwrap();
            let rule = embtune::cli::ranges::rule(long)
                .unwrap_or_else(|| panic!("{} --{long}: no rule in cli/ranges.rs", sub.get_name()));
            let bad = rule.refused_example();
            if bad == "nan" && arg.get_value_parser().type_id() != std::any::TypeId::of::<f64>() {
                continue; // an integer ≥ 0: nothing an integer flag accepts is out of range
            }
            let mut args = vec![sub.get_name().to_string()];
            args.extend(required_args(sub));
            if sub.get_name() == "pairs" {
                // Its flags are required unless --check is given.
                args.extend(["--check".into(), "x".into()]);
            }
            if sub.get_name() == "eval" {
                // --data is required unless --queries/--corpus/--qrels are given.
                args.extend(["--data".into(), "x".into()]);
            }
            if long == "matryoshka-weights" {
                args.extend(["--matryoshka-dims".into(), "8".into()]);
            }
            if long == "shards" {
                args.extend(["--shard".into(), "auto".into()]);
            }
            args.push(format!("--{long}={bad}"));
            let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            let e =
                assert_one_line_error(&embtune(&refs), &[&format!("--{long} {bad}"), "expected"]);
            assert!(e.contains(&rule.describe()), "{e}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} flags checked");
}

/// Flags that have no effect in the resolved configuration are refused, naming what they apply
/// to (one table in cli/applies.rs); an override the user may mean is a warning.
#[test]
fn flags_without_effect_are_refused_or_warned_about() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "train", "-m", "x", "-d", "x", "-o", "x", "--loss", "mnrl", "--margin", "0.3",
            ],
            "--margin",
        ),
        (
            &[
                "train",
                "-m",
                "x",
                "-d",
                "x",
                "-o",
                "x",
                "--loss",
                "cosent",
                "--symmetric",
            ],
            "--symmetric",
        ),
        (
            &[
                "train", "-m", "x", "-d", "x", "-o", "x", "--loss", "triplet", "--scale", "10",
            ],
            "--scale",
        ),
        (
            &[
                "train",
                "-m",
                "x",
                "-d",
                "x",
                "-o",
                "x",
                "--loss",
                "cosent",
                "--eval-steps",
                "5",
            ],
            "--eval-steps",
        ),
        (
            &[
                "train",
                "-m",
                "x",
                "-d",
                "x",
                "-o",
                "x",
                "--loss",
                "cosent",
                "--save-total-limit",
                "2",
            ],
            "--save-total-limit",
        ),
        (
            &[
                "eval",
                "-m",
                "x",
                "-d",
                "x",
                "--task",
                "binary",
                "--score-scale",
                "5",
            ],
            "--score-scale",
        ),
        (
            &[
                "embed", "-m", "x", "-d", "x", "-o", "x.npy", "--ranges", "r.json",
            ],
            "--ranges",
        ),
        (
            &["similarity", "-m", "x", "a", "b", "--top-k", "3"],
            "--top-k",
        ),
        (
            &[
                "pairs",
                "-d",
                "x",
                "--from",
                "nli",
                "-o",
                "x.jsonl",
                "--positive-min",
                "4",
            ],
            "--positive-min",
        ),
        (
            &[
                "pairs",
                "-d",
                "x",
                "--from",
                "pairs",
                "-o",
                "x.jsonl",
                "--mining-margin",
                "0.1",
            ],
            "--mining-margin",
        ),
        (
            &[
                "pairs",
                "-d",
                "x",
                "--from",
                "scores",
                "-o",
                "x.jsonl",
                "--eval-data",
                "y",
            ],
            "--eval-data",
        ),
    ];
    for (args, flag) in cases {
        assert_one_line_error(&embtune(args), &[flag, "has no effect", "applies to"]);
    }
    // Every rule's flag exists in its subcommand (a renamed flag would leave a dead rule).
    let cmd = embtune::cli::config_file::command();
    for (sub, id) in embtune::cli::applies::rules() {
        let s = cmd.find_subcommand(sub).unwrap();
        assert!(
            s.get_arguments().any(|a| a.get_id().as_str() == id),
            "{sub} has no argument {id}"
        );
    }
    // An override is a warning, and the run goes on (here to fail on the missing data).
    let out = embtune(&[
        "train",
        "-m",
        "x",
        "-d",
        "missing.csv",
        "-o",
        "x",
        "--loss",
        "cosent",
        "--epochs",
        "2",
        "--max-steps",
        "3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: train --epochs: has no effect"),
        "{err}"
    );
    assert!(err.contains("missing.csv"), "{err}");
}

/// A bad output location fails before the model is loaded: every command that writes checks
/// its output first (here the model does not even exist, so an error about it would mean the
/// output was checked too late).
#[test]
fn outputs_are_checked_before_the_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("sub/out.npy"); // a path below a file: it cannot be created
    let bad_jsonl = file.join("sub/out.jsonl");
    let bad_dir = file.join("report");
    let texts = tmp.path().join("t.txt");
    std::fs::write(&texts, "hello\nworld\n").unwrap();
    let pairs = tmp.path().join("p.tsv");
    std::fs::write(&pairs, "anchor\tpositive\na\tb\nc\td\n").unwrap();
    let sts = crate::common::stsb("dev");
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "embed",
            "-m",
            "no/such-model",
            "-d",
            s(&texts),
            "-o",
            s(&bad),
        ],
        vec![
            "eval",
            "-m",
            "no/such-model",
            "-d",
            s(&sts),
            "--format",
            "stsb",
            "--report",
            s(&bad_dir),
        ],
        vec![
            "pairs",
            "-d",
            s(&pairs),
            "--from",
            "pairs",
            "--mine",
            "-m",
            "no/such-model",
            "-o",
            s(&bad_jsonl),
        ],
    ];
    for args in &cases {
        let e = assert_one_line_error(&embtune(args), &["a-file"]);
        assert!(
            !e.contains("no/such-model"),
            "the model was loaded first: {e}"
        );
    }
    // A new nested output directory is created, as train does.
    let nested = tmp.path().join("new/deeper/out.npy");
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let out = embtune(&[
        "embed",
        "-m",
        s(&m),
        "-d",
        s(&texts),
        "-o",
        s(&nested),
        "-q",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(nested.is_file());
}

/// An output directory that holds files is refused unless the run resumes from it or starts
/// over (`--overwrite`), as HF's overwrite_output_dir; the message names the flag to use.
#[test]
fn an_existing_output_directory_needs_resume_or_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let data = crate::common::scored_pairs_tsv(tmp.path(), 16);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("README.md"), "my notes").unwrap();
    let train = |extra: &[&str]| {
        let mut a = vec![
            "train",
            "-m",
            s(&m),
            "-d",
            s(&data),
            "--loss",
            "cosent",
            "-o",
            s(&out),
            "-b",
            "4",
            "--max-steps",
            "4",
            "--save-steps",
            "2",
            "-q",
        ];
        a.extend_from_slice(extra);
        embtune(&a)
    };
    assert_one_line_error(&train(&[]), &["not empty", "README.md", "--overwrite"]);
    assert_eq!(
        std::fs::read_to_string(out.join("README.md")).unwrap(),
        "my notes"
    );
    let r = train(&["--overwrite"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // Now it holds a run with checkpoints: a new run names --resume.
    std::fs::create_dir_all(out.join("checkpoints/checkpoint-2")).unwrap();
    assert_one_line_error(&train(&[]), &["checkpoints", "--resume", "--overwrite"]);
    let r = train(&["--overwrite"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

/// One vocabulary: `-d/--data` (embed's `-i/--input` still works), `--column` (`--field` the
/// same, not both), `-b`, `--label-column`, and `--columns` as role=column or in role order in
/// both train and pairs.
#[test]
fn one_vocabulary_of_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let jsonl = tmp.path().join("t.jsonl");
    std::fs::write(&jsonl, "{\"body\": \"hello\"}\n{\"body\": \"world\"}\n").unwrap();
    let mut outs = Vec::new();
    for (i, form) in [
        ["-d", "--column"],
        ["-i", "--field"],
        ["--input", "--column"],
    ]
    .iter()
    .enumerate()
    {
        let o = tmp.path().join(format!("o{i}.npy"));
        let r = embtune(&[
            "embed",
            "-m",
            s(&m),
            form[0],
            s(&jsonl),
            form[1],
            "body",
            "-o",
            s(&o),
            "-b",
            "1",
            "-q",
        ]);
        assert!(
            r.status.success(),
            "{form:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        outs.push(std::fs::read(&o).unwrap());
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]));
    let both = embtune(&[
        "embed",
        "-m",
        s(&m),
        "-d",
        s(&jsonl),
        "--field",
        "body",
        "--column",
        "body",
        "-o",
        "x.npy",
    ]);
    assert!(!both.status.success());
    // train --columns in both forms trains the same (same final weights).
    let f = tmp.path().join("qa.csv");
    let rows: String = (0..8)
        .map(|i| format!("question {i},answer {i},0.{i}\n"))
        .collect();
    std::fs::write(&f, format!("q,a,sim\n{rows}")).unwrap();
    let mut weights = Vec::new();
    for (i, cols) in ["q,a", "positive=a,anchor=q"].iter().enumerate() {
        let o = tmp.path().join(format!("t{i}"));
        let r = embtune(&[
            "train",
            "-m",
            s(&m),
            "-d",
            s(&f),
            "--loss",
            "cosent",
            "--columns",
            cols,
            "--label-column",
            "sim",
            "-b",
            "4",
            "--max-steps",
            "2",
            "-o",
            s(&o),
            "-q",
        ]);
        assert!(
            r.status.success(),
            "{cols}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        weights.push(std::fs::read(o.join("model.safetensors")).unwrap());
    }
    assert_eq!(
        weights[0], weights[1],
        "the two --columns forms trained differently"
    );
    // pairs --columns in role order.
    let p = tmp.path().join("qa.tsv");
    std::fs::write(&p, "question\tanswer\nq1\ta1\nq2\ta2\nq3\ta3\n").unwrap();
    let (o1, o2) = (tmp.path().join("p1.jsonl"), tmp.path().join("p2.jsonl"));
    for (cols, o) in [
        ("anchor=question,positive=answer", &o1),
        ("question,answer", &o2),
    ] {
        let r = embtune(&[
            "pairs",
            "-d",
            s(&p),
            "--from",
            "pairs",
            "--columns",
            cols,
            "-o",
            s(o),
            "-q",
        ]);
        assert!(
            r.status.success(),
            "{cols}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    assert_eq!(std::fs::read(&o1).unwrap(), std::fs::read(&o2).unwrap());
    // eval --label-column.
    let e = embtune(&[
        "eval",
        "-m",
        s(&m),
        "-d",
        s(&f),
        "--columns",
        "q,a",
        "--label-column",
        "sim",
        "--json",
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
}

/// Recipes: relative paths are read from the recipe's folder, a bad value names the file and
/// key, a switch the recipe sets is turned off with --switch=false, and --print-config without
/// the required flags prints a template.
#[test]
fn recipes_read_paths_from_their_folder_and_name_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recipes");
    std::fs::create_dir_all(&dir).unwrap();
    tiny::write_tiny_model(&dir.join("model"), 1);
    crate::common::scored_pairs_tsv(&dir, 8);
    let recipe = dir.join("r.toml");
    std::fs::write(&recipe, "model = \"model\"\ndata = \"d.tsv\"\nloss = \"cosent\"\nbatch-size = 4\nmax-steps = 1\nno-shuffle = true\nquiet = true\n").unwrap();
    // From another working directory.
    let out = tmp.path().join("out");
    let r = crate::common::embtune_cmd_offline()
        .current_dir(std::env::temp_dir())
        .args(["train", "--config", s(&recipe), "-o", s(&out)])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["shuffle"], false);
    // --no-shuffle=false turns the recipe's switch off.
    let out2 = tmp.path().join("out2");
    let r = embtune(&[
        "train",
        "--config",
        s(&recipe),
        "-o",
        s(&out2),
        "--no-shuffle=false",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["shuffle"], true);
    // A value the flag does not take: the file and key are named.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "loss = \"cosnet\"\n").unwrap();
    assert_one_line_error(
        &embtune(&["train", "--config", s(&bad), "-o", "x"]),
        &["bad.toml", "key \"loss\"", "cosnet"],
    );
    // --print-config without the required flags: a template naming them.
    let t = embtune(&["train", "--print-config"]);
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let text = String::from_utf8_lossy(&t.stdout);
    for k in [
        "# model = …   (required)",
        "# data = …   (required, unless [[datasets]] tables are given)",
        "lr = 0.00002",
        "batch-size = 16",
    ] {
        assert!(text.contains(k), "{k} missing from:\n{text}");
    }
}

/// Models: a bare name resolves to sentence-transformers/<name> from the cache; a folder with
/// vocab.txt but no tokenizer.json loads (the WordPiece tokenizer built from it gives the same
/// ids); a checkpoint folder is pointed at its model/.
#[test]
fn model_names_and_folders_resolve_as_sentence_transformers_does() {
    let texts = ["A man is playing a guitar.", "Ünïcödé and CAPITALS, don't!"];
    let full = embtune::model::SentenceEncoder::load(
        &crate::common::real_spec(),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let mut spec = crate::common::real_spec();
    spec.model = "all-MiniLM-L6-v2".into();
    let bare = embtune::model::SentenceEncoder::load(&spec, &candle_core::Device::Cpu).unwrap();
    assert!(
        bare.source
            .starts_with("sentence-transformers/all-MiniLM-L6-v2"),
        "{}",
        bare.source
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vocab-only");
    crate::common::copy_dir(&crate::common::real_model_dir(), &dir);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let spec = embtune::model::ModelSpec {
        model: s(&dir).into(),
        ..Default::default()
    };
    let vocab = embtune::model::SentenceEncoder::load(&spec, &candle_core::Device::Cpu).unwrap();
    let ids = |m: &embtune::model::SentenceEncoder| -> Vec<Vec<u32>> {
        m.tokenizer
            .tokenize(&texts)
            .unwrap()
            .into_iter()
            .map(|t| t.ids)
            .collect()
    };
    assert_eq!(ids(&vocab), ids(&full));
    // Saved with a tokenizer.json.
    let saved = tmp.path().join("saved");
    vocab.save(&saved).unwrap();
    assert!(saved.join("tokenizer.json").is_file());
    // A checkpoint folder.
    let ck = tmp.path().join("out/checkpoints/checkpoint-2");
    std::fs::create_dir_all(ck.join("model")).unwrap();
    std::fs::write(ck.join("trainer_state.json"), "{}").unwrap();
    let input = tmp.path().join("i.txt");
    std::fs::write(&input, "hi\n").unwrap();
    let e = assert_one_line_error(
        &embtune(&[
            "embed",
            "-m",
            s(&ck),
            "-d",
            s(&input),
            "-o",
            s(&tmp.path().join("o.npy")),
        ]),
        &["training checkpoint", "checkpoint-2/model"],
    );
    assert!(!e.contains("modules.json"), "{e}");
}

/// Errors that know the fix say it: triplet loss on pairs (make triplets with `pairs`), a
/// tab-separated file read as CSV; `--task sts` on 0/1 labels warns towards `--task binary`.
#[test]
fn errors_that_know_the_fix_say_it() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let pairs = tmp.path().join("p.csv");
    let rows: String = (0..8)
        .map(|i| format!("anchor {i},positive {i}\n"))
        .collect();
    std::fs::write(&pairs, format!("anchor,positive\n{rows}")).unwrap();
    assert_one_line_error(
        &embtune(&[
            "train",
            "-m",
            s(&m),
            "-d",
            s(&pairs),
            "--loss",
            "triplet",
            "-o",
            s(&tmp.path().join("o")),
            "-b",
            "4",
        ]),
        &["triplet", "embtune pairs --from pairs"],
    );
    let tsv = tmp.path().join("t.csv");
    std::fs::write(&tsv, "sentence1\tsentence2\tscore\na\tb\t1\n").unwrap();
    assert_one_line_error(
        &embtune(&["eval", "-m", s(&m), "-d", s(&tsv)]),
        &["t.csv:1", "tab-separated", "--format tsv"],
    );
    let bin = tmp.path().join("b.csv");
    let rows: String = (0..8)
        .map(|i| format!("text {i},other {i},{}\n", i % 2))
        .collect();
    std::fs::write(&bin, format!("sentence1,sentence2,score\n{rows}")).unwrap();
    let out = embtune(&["eval", "-m", s(&m), "-d", s(&bin), "--task", "sts"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--task binary"));
}

/// After a resumed run, `trained N steps: loss A → B` spans the whole run (the first logged
/// window of the first segment: the same line as a straight run's), the card's wall time sums
/// both segments, and best/ says its step.
#[test]
fn summaries_span_the_whole_run_after_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1);
    let data = crate::common::scored_pairs_tsv(tmp.path(), 32);
    let out = tmp.path().join("out");
    let mut args: Vec<String> = [
        "train",
        "-m",
        s(&m),
        "-d",
        s(&data),
        "--loss",
        "cosent",
        "-o",
        s(&out),
        "-b",
        "4",
        "--max-steps",
        "8",
        "--log-steps",
        "2",
        "--save-steps",
        "4",
        "--eval-data",
        s(&data),
        "--eval-steps",
        "4",
        "--save-best",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    let run = |a: &[String]| {
        let o = embtune(&a.iter().map(|x| x.as_str()).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .find(|l| l.starts_with("trained "))
            .unwrap_or("")
            .to_string()
    };
    let straight = run(&args);
    assert!(straight.starts_with("trained 8 steps: loss "), "{straight}");
    let best: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("best/embtune_best.json")).unwrap())
            .unwrap();
    assert!(matches!(best["step"].as_u64(), Some(4 | 8)), "{best}");
    assert_eq!(best["metric"], "spearman_cosine");
    // Resume the same run from its checkpoint of step 4: the second segment logs steps 6 and 8
    // only, yet the summary starts at the first segment's step 2.
    let w1 = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(out.join("checkpoints/checkpoint-4/trainer_state.json")).unwrap(),
    )
    .unwrap()["wall_seconds"]
        .as_f64()
        .unwrap();
    assert!(w1 > 0.0);
    args.extend([
        "--resume".into(),
        s(&out.join("checkpoints/checkpoint-4")).into(),
    ]);
    let resumed = run(&args);
    assert_eq!(resumed, straight);
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    let wall: f64 = card
        .split("wall time ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap();
    // (The card rounds to 0.1 s.)
    assert!(
        wall + 0.051 >= w1,
        "card wall time {wall} < first segment {w1}"
    );
}

/// `--max-seq-length` past the model's position table is refused (not silently capped), for
/// every command that loads a model.
#[test]
fn max_seq_length_past_the_position_table_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 1); // 64 positions
    let input = tmp.path().join("i.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let o = tmp.path().join("o.npy");
    for args in [
        vec![
            "embed",
            "-m",
            s(&m),
            "-d",
            s(&input),
            "-o",
            s(&o),
            "--max-seq-length",
            "100",
        ],
        vec![
            "similarity",
            "-m",
            s(&m),
            "a",
            "b",
            "--max-seq-length",
            "100",
        ],
    ] {
        assert_one_line_error(&embtune(&args), &["--max-seq-length 100", "64 positions"]);
    }
    let ok = embtune(&[
        "embed",
        "-m",
        s(&m),
        "-d",
        s(&input),
        "-o",
        s(&o),
        "--max-seq-length",
        "64",
        "-q",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Without network the error is one line with the reason (not the URL three times); a cached
/// model still loads.
#[test]
fn no_network_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("i.txt");
    std::fs::write(&input, "hello\n").unwrap();
    let out = crate::common::embtune_cmd_offline()
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HUB_CACHE", tmp.path().join("empty-cache"))
        .args([
            "embed",
            "-m",
            "nobody/no-such-model",
            "-d",
            s(&input),
            "-o",
            s(&tmp.path().join("o.npy")),
        ])
        .output()
        .unwrap();
    let e = assert_one_line_error(
        &out,
        &["nobody/no-such-model", "cannot download", "--offline"],
    );
    assert_eq!(e.matches("127.0.0.1").count(), 0, "{e}");
    // A model in the cache works without network and without offline mode (files its snapshot
    // lacks, such as added_tokens.json, count as absent), with one warning — as huggingface_hub.
    crate::common::ensure_real_model();
    let out = crate::common::embtune_cmd_offline()
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .args([
            "embed",
            "-m",
            "sentence-transformers/all-MiniLM-L6-v2",
            "-d",
            s(&input),
            "-o",
        ])
        .arg(tmp.path().join("cached.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("cannot be reached").count(), 1, "{err}");
}

/// `embtune … | head` ends quietly: a closed stdout stops the process (SIGPIPE), no panic.
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::process::Stdio;
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    tiny::write_tiny_model(&model, 3);
    let texts = tmp.path().join("t.txt");
    std::fs::write(&texts, "a b\n".repeat(2000)).unwrap();
    let mut child = crate::common::embtune_cmd_offline()
        .args([
            "similarity",
            "-m",
            s(&model),
            "--query",
            "a",
            "--corpus",
            s(&texts),
        ])
        .args(["--top-k", "2000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc_sigpipe()),
        "{:?} {err}",
        out.status
    );
}

fn libc_sigpipe() -> i32 {
    13 // SIGPIPE on Linux
}
