//! The binary end to end: `embed` to each output format, `eval` on each task.

use crate::common::{self, embtune, tiny};
use std::path::Path;

fn read_npy(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(p).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[10 + hlen..]
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, data)
}

#[test]
fn embed_writes_npy_safetensors_and_jsonl_in_input_order() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    let texts = [
        "short",
        "a considerably longer sentence than the first one",
        "mid length text",
    ];
    let body: String = texts
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({"id": 1, "body": t})))
        .collect();
    std::fs::write(&input, body).unwrap();
    let model = common::load_real();
    let want = embtune::encode::encode(&model, &texts, &Default::default()).unwrap();

    let npy = tmp.path().join("out.npy");
    let out = embtune(&[
        "embed",
        "-m",
        common::REAL_MODEL,
        "-i",
        input.to_str().unwrap(),
        "--field",
        "body",
        "-o",
        npy.to_str().unwrap(),
        "--batch-size",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (shape, data) = read_npy(&npy);
    assert_eq!(shape, vec![3, 384]);
    for (a, b) in data.iter().zip(&want.data) {
        assert!((a - b).abs() < 1e-6);
    }

    let st = tmp.path().join("out.safetensors");
    let out = embtune(&[
        "embed",
        "-m",
        common::REAL_MODEL,
        "-i",
        input.to_str().unwrap(),
        "--field",
        "body",
        "-o",
        st.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    let e = &t["embeddings"];
    assert_eq!(e.dims(), &[3, 384]);
    let v: Vec<f32> = e.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(v, data);

    let jl = tmp.path().join("out.jsonl");
    let out = embtune(&[
        "embed",
        "-m",
        common::REAL_MODEL,
        "-i",
        input.to_str().unwrap(),
        "--field",
        "body",
        "-o",
        jl.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["text"], texts[i]);
        let emb: Vec<f32> = l["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(emb.as_slice(), &data[i * 384..(i + 1) * 384]);
    }
}

#[test]
fn embed_reads_text_and_csv_columns_and_counts_truncation() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tmp.path().join("tiny");
    tiny::write_tiny_model(&model_dir, 7);
    let txt = tmp.path().join("in.txt");
    let long = "word ".repeat(50);
    std::fs::write(&txt, format!("first line\n{long}\nthird\n")).unwrap();
    let out_path = tmp.path().join("o.npy");
    let out = embtune(&[
        "embed",
        "-m",
        model_dir.to_str().unwrap(),
        "-i",
        txt.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 of 3 texts were longer than max_seq_length"),
        "{err}"
    );
    assert_eq!(read_npy(&out_path).0, vec![3, 32]);

    let csv = tmp.path().join("in.csv");
    std::fs::write(&csv, "id,sentence\n1,\"hello, world\"\n2,bye\n").unwrap();
    let out = embtune(&[
        "embed",
        "-m",
        model_dir.to_str().unwrap(),
        "-i",
        csv.to_str().unwrap(),
        "--column",
        "sentence",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_npy(&out_path).0, vec![2, 32]);
}

fn eval_json(args: &[&str]) -> serde_json::Value {
    let out = embtune(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_triplet_and_binary_tasks_on_real_model() {
    let tmp = tempfile::tempdir().unwrap();
    let trip = tmp.path().join("t.jsonl");
    std::fs::write(
        &trip,
        [
            r#"{"anchor": "a man is playing a guitar .", "positive": "a man plays the guitar .", "negative": "a woman is slicing a tomato ."}"#,
            r#"{"anchor": "a dog runs in the park .", "positive": "a dog is running on grass .", "negative": "the stock market fell today ."}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let m = eval_json(&[
        "eval",
        "-m",
        common::REAL_MODEL,
        "-d",
        trip.to_str().unwrap(),
        "--task",
        "triplet",
        "--json",
    ]);
    assert_eq!(m["cosine_accuracy"], 100.0);
    assert_eq!(m["primary_metric"], "cosine_accuracy");

    let bin = tmp.path().join("b.csv");
    std::fs::write(
        &bin,
        "s1,s2,y\na man is playing a guitar .,a man plays the guitar .,1\na dog runs in the park .,the stock market fell today .,0\n\
         a girl is styling her hair .,a girl is brushing her hair .,1\na plane is taking off .,a man is slicing bread .,0\n",
    )
    .unwrap();
    let m = eval_json(&[
        "eval",
        "-m",
        common::REAL_MODEL,
        "-d",
        bin.to_str().unwrap(),
        "--task",
        "binary",
        "--columns",
        "s1,s2,y",
        "--json",
    ]);
    assert_eq!(m["cosine_accuracy"], 100.0);
    assert_eq!(m["cosine_ap"], 100.0);
    assert_eq!(m["primary_metric"], "cosine_ap");
    let th = m["cosine_accuracy_threshold"].as_f64().unwrap();
    assert!(th > 0.0 && th < 1.0, "{th}");

    // Human table by default, primary marked.
    let out = embtune(&[
        "eval",
        "-m",
        common::REAL_MODEL,
        "-d",
        bin.to_str().unwrap(),
        "--task",
        "binary",
        "--columns",
        "s1,s2,y",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("cosine_ap") && table.contains("(primary)"),
        "{table}"
    );
}

/// A large `embed` killed half-way continues with `--resume` from its finished chunks and
/// writes exactly what an uninterrupted run writes; without `--resume` the parts are discarded.
#[test]
fn embed_resumes_from_finished_chunks_after_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 5);
    let input = tmp.path().join("in.txt");
    let text: String = (0..8_000)
        .map(|i| {
            format!(
                "sentence {i} with a few words and a number {}\n",
                i * 7919 % 1000
            )
        })
        .collect();
    std::fs::write(&input, text).unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut c = common::embtune_cmd_offline();
        c.args([
            "embed",
            "-m",
            m.to_str().unwrap(),
            "-i",
            input.to_str().unwrap(),
            "-o",
        ])
        .arg(out)
        // No -q: it would hide the "resumed:" / "discarding the parts" notes checked below.
        .args(["--chunk-rows", "400"])
        .args(extra);
        c
    };
    let straight = tmp.path().join("straight.npy");
    assert!(run(&straight, &[]).output().unwrap().status.success());
    let out = tmp.path().join("out.npy");
    let parts = tmp.path().join("out.npy.parts");
    let mut child = run(&out, &[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    loop {
        let n = std::fs::read_dir(&parts)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".bin"))
                    .count()
            })
            .unwrap_or(0);
        if n >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        assert!(t0.elapsed().as_secs() < 120, "no chunk appeared");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed run left an output");
    let r = run(&out, &["--resume"]).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{err}");
    assert!(err.contains("resumed: "), "{err}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&straight).unwrap()
    );
    assert!(!parts.exists(), "parts left after a finished run");
    // Parts of another job are refused with --resume.
    std::fs::create_dir_all(&parts).unwrap();
    std::fs::write(parts.join("job.json"), "{\"input_sha256\": \"other\"}").unwrap();
    let r = run(&out, &["--resume"]).output().unwrap();
    assert!(String::from_utf8_lossy(&r.stderr).contains("different job"));
    let r = run(&out, &[]).output().unwrap();
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("discarding the parts"));
}

/// `--config recipe.toml`: the file's flags apply, the command line's win, `--print-config`
/// round-trips, unknown keys are named, and the shipped recipes all parse.
#[test]
fn config_files_flags_precedence_and_print_config() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 2);
    let data = common::scored_pairs_tsv(tmp.path(), 24);
    let recipe = tmp.path().join("r.toml");
    std::fs::write(
        &recipe,
        format!(
            "model = {:?}\ndata = {:?}\nloss = \"cosent\"\nbatch_size = 8\nlr = 1e-3\nmax-steps = 2\nquiet = true\n",
            m.to_str().unwrap(),
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = tmp.path().join("o");
    let r = embtune(&[
        "train",
        "--config",
        recipe.to_str().unwrap(),
        "--lr",
        "5e-4",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["batch_size"], 8, "from the file");
    assert_eq!(cfg["lr"], 5e-4, "the command line wins");
    assert_eq!(cfg["max_steps"], 2);
    // --print-config prints every resolved flag; feeding it back gives the same text.
    let print_config = |p: &Path| {
        embtune(&[
            "train",
            "--config",
            p.to_str().unwrap(),
            "-o",
            "x",
            "--print-config",
        ])
    };
    let p1 = print_config(&recipe);
    assert!(
        p1.status.success(),
        "{}",
        String::from_utf8_lossy(&p1.stderr)
    );
    let text = String::from_utf8(p1.stdout).unwrap();
    assert!(
        text.contains("batch-size = 8")
            && text.contains("seed = 42")
            && text.contains("loss = \"cosent\""),
        "{text}"
    );
    let printed = tmp.path().join("printed.toml");
    std::fs::write(&printed, &text).unwrap();
    let p2 = embtune(&[
        "train",
        "--config",
        printed.to_str().unwrap(),
        "--print-config",
    ]);
    assert_eq!(String::from_utf8(p2.stdout).unwrap(), text);
    // Unknown keys and wrong switch values name the file and the key.
    std::fs::write(&recipe, "model = \"m\"\nbatchsize = 8\n").unwrap();
    let e = embtune(&["train", "--config", recipe.to_str().unwrap()]);
    common::assert_one_line_error(&e, &["r.toml", "unknown key \"batchsize\"", "batch-size"]);
    std::fs::write(&recipe, "quiet = 3\n").unwrap();
    let e = embtune(&["train", "--config", recipe.to_str().unwrap()]);
    common::assert_one_line_error(&e, &["r.toml", "\"quiet\" is a switch"]);
    // The recipes behind scripts/reproduce-stsb.sh parse.
    for r in ["cosent", "cosine", "mnrl", "contrastive", "triplet"] {
        let p = common::repo_root().join(format!("data/recipes/{r}.toml"));
        let o = print_config(&p);
        assert!(
            o.status.success(),
            "{r}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("loss = \"{r}\"")));
    }
    // The recipes issue's recipes parse too, each with what makes it what it is.
    for (r, needle) in [
        ("angle", "loss = \"angle\""),
        (
            "distill",
            "teacher = \"sentence-transformers/all-mpnet-base-v2\"",
        ),
        ("lora", "lora-rank = 8"),
        ("multi", "loss=mnrl"),
        ("stsb-best", "epochs = 4"),
        ("stsb-search/cosine-4ep", "epochs = 4"),
    ] {
        let o = print_config(&common::repo_root().join(format!("data/recipes/{r}.toml")));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{r}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(needle), "{r}: {out}");
    }
    // The retrieval recipe: a repeated flag from an array, its path read from the recipe's
    // folder (data/recipes/../../../shared/… = the shared data next to the repository).
    let o = print_config(&common::repo_root().join("data/recipes/retrieval.toml"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.contains("loss = \"cached-mnrl\"") && out.contains("mini-batch-size = 32"),
        "{out}"
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("eval-data = [\""))
        .unwrap_or_else(|| panic!("{out}"));
    let path = line
        .trim_start_matches("eval-data = [\"")
        .trim_end_matches("\"]");
    assert!(path.ends_with("data/retrieval/pubmedqa-pqal"), "{line}");
    assert!(Path::new(path).join("corpus.jsonl").is_file(), "{line}");
}

/// Without a terminal, long loops print plain progress lines (every EMBTUNE_PROGRESS_EVERY
/// seconds, 30 by default); `-q` silences them.
#[test]
fn plain_progress_lines_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 3);
    let input = tmp.path().join("in.txt");
    std::fs::write(
        &input,
        (0..200).map(|i| format!("text {i}\n")).collect::<String>(),
    )
    .unwrap();
    let run = |quiet: bool| {
        let mut c = common::embtune_cmd_offline();
        c.env("EMBTUNE_PROGRESS_EVERY", "0")
            .args([
                "embed",
                "-m",
                m.to_str().unwrap(),
                "-i",
                input.to_str().unwrap(),
                "-o",
            ])
            .arg(tmp.path().join("o.npy"))
            .args(["--batch-size", "50"]);
        if quiet {
            c.arg("-q");
        }
        String::from_utf8(c.output().unwrap().stderr).unwrap()
    };
    let err = run(false);
    assert!(err.contains("encoding: 200/200"), "{err}");
    assert!(err.contains("encoding: 50/200"), "{err}");
    assert!(!run(true).contains("encoding:"));
}

/// `eval --report DIR`: STS gets a scatter plot with one point per pair; pair classification gets
/// histograms of positive and negative cosines whose counts add up to the pairs of each label.
#[test]
fn eval_report_plots_every_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    tiny::write_tiny_model(&m, 4);
    let sts = tmp.path().join("sts.csv");
    let rows: String = (0..40)
        .map(|i| {
            format!(
                "a sentence {i},another sentence {},{}\n",
                i * 3 % 40,
                (i % 6) as f64 / 5.0
            )
        })
        .collect();
    std::fs::write(&sts, format!("sentence1,sentence2,score\n{rows}")).unwrap();
    let dir = tmp.path().join("rep");
    let o = embtune(&[
        "eval",
        "-m",
        m.to_str().unwrap(),
        "-d",
        sts.to_str().unwrap(),
        "--report",
        dir.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(dir.join("scatter.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), 40);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("spearman_cosine (primary)") && html.contains("<circle"));
    let bin = tmp.path().join("bin.csv");
    let rows: String = (0..30)
        .map(|i| format!("text {i},other {},{}\n", (i * 7) % 30, (i % 3 == 0) as u8))
        .collect();
    std::fs::write(&bin, format!("sentence1,sentence2,label\n{rows}")).unwrap();
    let dir2 = tmp.path().join("rep2");
    let o = embtune(&[
        "eval",
        "-m",
        m.to_str().unwrap(),
        "-d",
        bin.to_str().unwrap(),
        "--task",
        "binary",
        "--report",
        dir2.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(dir2.join("histogram.svg")).unwrap();
    let counts = |attr: &str| -> usize {
        let at = svg.find(attr).unwrap() + attr.len() + 2;
        let end = at + svg[at..].find('"').unwrap();
        svg[at..end]
            .split(' ')
            .map(|n| n.parse::<usize>().unwrap())
            .sum()
    };
    assert_eq!(counts("data-counts-a"), 10, "positives");
    assert_eq!(counts("data-counts-b"), 20, "negatives");
}
