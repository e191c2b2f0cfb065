//! Streaming input and sharded export (the reach issue): the streaming readers give exactly the
//! rows, line numbers and errors of the whole-file readers in every format; `embed` in chunks,
//! in shards + `merge`, gives the bytes of one run; `--shard auto` reads each scheduler's
//! variables; `merge` refuses missing, foreign and repeated shards; bad `--shard` values are
//! one-line errors.

use crate::common::{assert_one_line_error, embtune, embtune_cmd_offline, tiny};
use embtune::data::{read_table, DataFormat, ReadOptions, RowStream};
use embtune::pairs::output::{OutputKind, Rows};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Every row of `path` both ways: equal lines and equal cells by column name (a JSONL row read
/// before a key appeared lacks it: Null, as the whole-file reader fills it), or equal errors.
fn same_both_ways(path: &Path, format: Option<DataFormat>) -> Result<usize, String> {
    let opts = ReadOptions::default();
    let whole = read_table(path, format, &opts);
    let streamed = (|| -> anyhow::Result<(Vec<String>, Vec<embtune::data::Row>)> {
        let mut s = RowStream::open(path, format, &opts)?;
        let mut rows = Vec::new();
        while let Some(r) = s.next_row()? {
            rows.push(r);
        }
        Ok((s.columns().to_vec(), rows))
    })();
    match (whole, streamed) {
        (Ok(t), Ok((cols, rows))) => {
            assert_eq!(t.columns, cols, "{}", path.display());
            assert_eq!(t.rows.len(), rows.len(), "{}", path.display());
            for (a, b) in t.rows.iter().zip(&rows) {
                assert_eq!(a.line, b.line, "{}", path.display());
                for (c, name) in t.columns.iter().enumerate() {
                    let k = cols.iter().position(|n| n == name).unwrap();
                    let cell = b.cells.get(k).cloned().unwrap_or(Value::Null);
                    assert_eq!(
                        a.cells[c],
                        cell,
                        "{} line {} column {name}",
                        path.display(),
                        a.line
                    );
                }
            }
            Ok(rows.len())
        }
        (Err(a), Err(b)) => {
            assert_eq!(format!("{a:#}"), format!("{b:#}"), "{}", path.display());
            Err(format!("{a:#}"))
        }
        (a, b) => panic!(
            "{}: whole-file {:?} but streamed {:?}",
            path.display(),
            a.map(|t| t.rows.len()).map_err(|e| e.to_string()),
            b.map(|r| r.1.len()).map_err(|e| e.to_string())
        ),
    }
}

#[test]
fn streaming_readers_give_the_rows_and_errors_of_the_whole_file_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let w = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let bom = b"\xef\xbb\xbf";
    let good: Vec<(PathBuf, usize)> = vec![
        (w("a.txt", b"one\ntwo\n\n  \nthree"), 3),
        (w("crlf.txt", b"one\r\ntwo\r\n\r\nthree\r\n"), 3),
        (w("bom.txt", &[&bom[..], b"first\nsecond\n"].concat()), 2),
        (w("cr.txt", b"a\rb\nlast\r"), 2),
        (w("a.jsonl", b"{\"text\": \"x\", \"n\": 1}\n\n{\"text\": \"y\", \"extra\": [1]}\r\n{\"n\": 2, \"text\": \"z\"}"), 3),
        (w("bom.jsonl", &[&bom[..], b"{\"text\": \"x\"}\r\n"].concat()), 1),
        (w("q.csv", b"text,n\n\"a, \"\"quoted\"\"\nover two lines\",1\r\nplain,2\n,\n\"\",\"\"\nlast,3"), 3),
        (w("bom.csv", &[&bom[..], b"text,label\r\nhello,1\r\nworld,0\r\n"].concat()), 2),
        (w("t.tsv", b"sentence1\tsentence2\tscore\na\tb\t0.5\nc\t\"d\"\t1\n"), 2),
        (w("s.stsb", b"main-captions\tMSRvid\t2012test\t0001\t5.000\tA man.\tA man!\textra\r\n\nmain\tx\t2012\t2\t1.0\tB\tC\n"), 2),
    ];
    for (p, n) in &good {
        let fmt = (p.extension().unwrap() == "stsb").then_some(DataFormat::Stsb);
        assert_eq!(same_both_ways(p, fmt), Ok(*n), "{}", p.display());
    }
    // Parquet: a file, and the rows a big one streams a row group at a time (the same).
    let pq = tmp.path().join("t.parquet");
    let mut r = Rows::new(&["text", "label"]);
    for i in 0..50 {
        r.push(vec![
            json!(format!("text {i}")),
            if i % 7 == 0 { Value::Null } else { json!(i) },
        ]);
    }
    r.write(&pq, OutputKind::Parquet).unwrap();
    assert_eq!(same_both_ways(&pq, None), Ok(50));
    // Malformed files: both readers refuse them with the same words.
    let bad = [
        (w("u.txt", b"fine\nbad \xff\xfe here\n"), "invalid UTF-8"),
        (w("u.csv", b"text\nok\nbad \xff\n"), "invalid UTF-8"),
        (
            w("u.jsonl", b"{\"text\": \"ok\"}\n{\"text\": \"\xff\"}\n"),
            "invalid UTF-8",
        ),
        (
            w("j.jsonl", b"{\"text\": \"ok\"}\n{\"text\": oops}\n"),
            "invalid JSON",
        ),
        (w("arr.jsonl", b"[1, 2]\n"), "expected a JSON object"),
        (w("n.csv", b"a,b\n1,2\n3\n"), "fields; expected 2"),
        (w("dup.csv", b"text,text\na,b\n"), "duplicate column"),
        (
            w("nohead.csv", b"a cat sits,a dog runs,0.5\nsun,moon,0.1\n"),
            "looks like data",
        ),
        (w("tabs.csv", b"text\tlabel\na\t1\n"), "tab-separated"),
        (w("empty.txt", b""), "no data rows"),
        (w("blank.txt", b"\n \n\r\n"), "no data rows"),
        (w("header.csv", b"text,label\n"), "no data rows"),
        (w("empty.csv", b""), "no data rows"),
        (w("short.stsb", b"a\tb\tc\n"), "expected 7"),
        (
            w("corrupt.parquet", b"PAR1 not really parquet PAR1"),
            "parquet",
        ),
    ];
    for (p, needle) in &bad {
        let fmt = (p.extension().unwrap() == "stsb").then_some(DataFormat::Stsb);
        let e = same_both_ways(p, fmt).expect_err(&p.display().to_string());
        assert!(e.contains(needle), "{}: {e}", p.display());
        assert!(e.contains(p.file_name().unwrap().to_str().unwrap()), "{e}");
    }
}

struct Fx {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    model: PathBuf,
    input: PathBuf,
}

fn fx(rows: usize) -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let model = dir.join("m");
    tiny::write_tiny_model(&model, 7);
    let input = dir.join("in.csv");
    let body: String = (0..rows)
        .map(|i| format!("\"text number {i}, {}\",{i}\r\n", "word ".repeat(i % 13)))
        .collect();
    std::fs::write(&input, format!("text,id\r\n{body}")).unwrap();
    Fx {
        _tmp: tmp,
        dir,
        model,
        input,
    }
}

fn embed(f: &Fx, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "embed",
        "-m",
        f.model.to_str().unwrap(),
        "-i",
        f.input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    embtune(&args)
}

fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn shards_and_merge_give_the_bytes_of_one_run_in_every_format() {
    let f = fx(103);
    for (ext, extra) in [
        ("npy", vec![]),
        ("safetensors", vec![]),
        ("jsonl", vec![]),
        ("npy", vec!["--precision", "binary"]),
    ] {
        let one = f.dir.join(format!("one.{ext}"));
        ok(embed(&f, &one, &extra));
        // The same run in chunks of 10 rows (parts on disk, written chunk by chunk).
        let chunked = f.dir.join(format!("chunked.{ext}"));
        let mut e = extra.clone();
        e.extend(["--chunk-rows", "10"]);
        ok(embed(&f, &chunked, &e));
        assert_eq!(
            std::fs::read(&one).unwrap(),
            std::fs::read(&chunked).unwrap(),
            "{ext} {extra:?}"
        );
        let out = f.dir.join(format!("sharded-{}.{ext}", extra.len()));
        for k in 0..3 {
            let shard = format!("{k}/3");
            let mut e = extra.clone();
            e.extend(["--shard", &shard, "--chunk-rows", "16"]);
            ok(embed(&f, &out, &e));
        }
        assert!(!out.exists());
        ok(embtune(&["merge", "-o", out.to_str().unwrap(), "-q"]));
        assert_eq!(
            std::fs::read(&one).unwrap(),
            std::fs::read(&out).unwrap(),
            "{ext} {extra:?}"
        );
    }
    // int8 shards share their ranges through --calibration; the merge carries the ranges file.
    let calib = f.dir.join("calib.csv");
    std::fs::copy(&f.input, &calib).unwrap();
    let one = f.dir.join("q.npy");
    ok(embed(
        &f,
        &one,
        &[
            "--precision",
            "int8",
            "--calibration",
            calib.to_str().unwrap(),
        ],
    ));
    let out = f.dir.join("qs.npy");
    for k in ["0/2", "1/2"] {
        ok(embed(
            &f,
            &out,
            &[
                "--precision",
                "int8",
                "--calibration",
                calib.to_str().unwrap(),
                "--shard",
                k,
            ],
        ));
    }
    ok(embtune(&["merge", "-o", out.to_str().unwrap()]));
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&out).unwrap());
    assert_eq!(
        std::fs::read(embtune::embed::ranges_path(&one)).unwrap(),
        std::fs::read(embtune::embed::ranges_path(&out)).unwrap()
    );
    // More shards than rows: the empty shards merge too.
    let g = fx(2);
    let one = g.dir.join("one.npy");
    ok(embed(&g, &one, &[]));
    let out = g.dir.join("s.npy");
    for k in 0..4 {
        ok(embed(&g, &out, &["--shard", &format!("{k}/4")]));
    }
    ok(embtune(&["merge", "-o", out.to_str().unwrap()]));
    assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&out).unwrap());
}

#[test]
fn shard_auto_reads_slurm_and_kubernetes_variables() {
    let f = fx(20);
    let out = f.dir.join("e.npy");
    let run = |vars: &[(&str, &str)], extra: &[&str]| {
        let mut c = embtune_cmd_offline();
        c.args([
            "embed",
            "-m",
            f.model.to_str().unwrap(),
            "-i",
            f.input.to_str().unwrap(),
        ])
        .args(["-o", out.to_str().unwrap(), "-q", "--shard", "auto"])
        .args(extra);
        for v in [
            "SLURM_ARRAY_TASK_ID",
            "SLURM_ARRAY_TASK_COUNT",
            "SLURM_ARRAY_TASK_MIN",
            "SLURM_ARRAY_TASK_MAX",
            "SLURM_ARRAY_TASK_STEP",
            "JOB_COMPLETION_INDEX",
        ] {
            c.env_remove(v);
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let sidecar = |name: &str| -> Value {
        let p = f.dir.join(format!("{name}.shard.json"));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    ok(run(
        &[
            ("SLURM_ARRAY_TASK_ID", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ],
        &[],
    ));
    let s = sidecar("e-00001-of-00004.npy");
    assert_eq!(
        (
            s["shard"].clone(),
            s["shards"].clone(),
            s["row_start"].clone(),
            s["rows"].clone()
        ),
        (json!(1), json!(4), json!(5), json!(5))
    );
    ok(run(
        &[
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_MAX", "12"),
        ],
        &[],
    ));
    assert_eq!(sidecar("e-00002-of-00003.npy")["rows"], json!(7));
    ok(run(&[("JOB_COMPLETION_INDEX", "0")], &["--shards", "2"]));
    assert_eq!(sidecar("e-00000-of-00002.npy")["rows"], json!(10));
    assert_one_line_error(
        &run(&[], &[]),
        &["--shard auto", "no scheduler variables", "--shard K/N"],
    );
    assert_one_line_error(
        &run(&[("JOB_COMPLETION_INDEX", "3")], &[]),
        &["JOB_COMPLETION_INDEX", "--shards N"],
    );
    assert_one_line_error(
        &run(&[("JOB_COMPLETION_INDEX", "3")], &["--shards", "3"]),
        &["shard 3 of 3 does not exist"],
    );
}

#[test]
fn merge_refuses_missing_foreign_and_repeated_shards_and_bad_shard_values() {
    let f = fx(30);
    let out = f.dir.join("e.npy");
    for k in 0..3 {
        ok(embed(&f, &out, &["--shard", &format!("{k}/3")]));
    }
    let shard = |k: usize| f.dir.join(format!("e-{k:05}-of-00003.npy"));
    let o = out.to_str().unwrap();
    // Missing.
    assert_one_line_error(
        &embtune(&[
            "merge",
            "-o",
            o,
            shard(0).to_str().unwrap(),
            shard(2).to_str().unwrap(),
        ]),
        &["shard 1 of 3 is missing", "--shard 1/3"],
    );
    // Two copies of one shard (a renamed copy keeps its sidecar's index).
    let copy = f.dir.join("copy.npy");
    std::fs::copy(shard(1), &copy).unwrap();
    std::fs::copy(
        embtune::shard::sidecar_path(&shard(1)),
        embtune::shard::sidecar_path(&copy),
    )
    .unwrap();
    let (s0, s1, s2, c) = (shard(0), shard(1), shard(2), copy.clone());
    assert_one_line_error(
        &embtune(&[
            "merge",
            "-o",
            o,
            s0.to_str().unwrap(),
            s1.to_str().unwrap(),
            s2.to_str().unwrap(),
            c.to_str().unwrap(),
        ]),
        &["two copies of shard 1 of 3"],
    );
    // A shard made by another model.
    let other = f.dir.join("m2");
    tiny::write_tiny_model(&other, 8);
    let o2 = f.dir.join("x.npy");
    for k in 0..2 {
        ok(embed(&f, &o2, &["--shard", &format!("{k}/3")]));
    }
    let out2 = embtune(&[
        "embed",
        "-m",
        other.to_str().unwrap(),
        "-i",
        f.input.to_str().unwrap(),
        "-o",
        o2.to_str().unwrap(),
        "-q",
        "--shard",
        "2/3",
    ]);
    ok(out2);
    assert_one_line_error(
        &embtune(&["merge", "-o", o2.to_str().unwrap()]),
        &["the model differs"],
    );
    // A .jsonl shard cut inside its last line.
    let j = f.dir.join("j.jsonl");
    for k in 0..2 {
        ok(embed(&f, &j, &["--shard", &format!("{k}/2")]));
    }
    let j0 = f.dir.join("j-00000-of-00002.jsonl");
    let data = std::fs::read(&j0).unwrap();
    std::fs::write(&j0, &data[..data.len() - 5]).unwrap();
    assert_one_line_error(
        &embtune(&["merge", "-o", j.to_str().unwrap()]),
        &["j-00000-of-00002.jsonl:15", "truncated"],
    );
    // A sidecar edited to name a shard that cannot exist.
    let side = embtune::shard::sidecar_path(&shard(0));
    let good = std::fs::read_to_string(&side).unwrap();
    std::fs::write(&side, good.replace("\"shard\": 0", "\"shard\": 7")).unwrap();
    assert_one_line_error(
        &embtune(&["merge", "-o", o]),
        &["shard 7 of 3", "not a valid shard"],
    );
    std::fs::write(&side, good).unwrap();
    // A shard file truncated after its run.
    let data = std::fs::read(shard(2)).unwrap();
    std::fs::write(shard(2), &data[..data.len() - 4]).unwrap();
    assert_one_line_error(
        &embtune(&["merge", "-o", o]),
        &["e-00002-of-00003.npy", "truncated"],
    );
    assert!(!out.exists());
    // A file without data rows says so (not that a column is missing).
    let head = f.dir.join("head.csv");
    std::fs::write(&head, "a,b\n").unwrap();
    let r = embtune(&[
        "embed",
        "-m",
        f.model.to_str().unwrap(),
        "-i",
        head.to_str().unwrap(),
        "-o",
        f.dir.join("h.npy").to_str().unwrap(),
    ]);
    assert_one_line_error(&r, &["head.csv", "no data rows"]);
    // Bad --shard values, before anything is read.
    for (v, needle) in [
        ("3/3", "shard 3 of 3 does not exist"),
        ("0/0", "at least 1"),
        ("two", "expected K/N"),
    ] {
        assert_one_line_error(&embed(&f, &f.dir.join("b.npy"), &["--shard", v]), &[needle]);
    }
    assert_one_line_error(
        &embed(
            &f,
            &f.dir.join("b.npy"),
            &["--shard", "0/2", "--precision", "int8"],
        ),
        &["--calibration", "--ranges"],
    );
}

#[test]
fn embed_streams_a_hub_dataset_split() {
    let tmp = tempfile::tempdir().unwrap();
    crate::datasets::seed_cache(tmp.path());
    let model = tmp.path().join("m");
    tiny::write_tiny_model(&model, 7);
    let out = tmp.path().join("o.jsonl");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_embtune"))
        .args([
            "embed",
            "-m",
            model.to_str().unwrap(),
            "-i",
            "hf://datasets/org/name",
            "--column",
            "anchor",
        ])
        .args(["-o", out.to_str().unwrap(), "-q", "--chunk-rows", "2"])
        .env("HF_HUB_CACHE", tmp.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    ok(r);
    let texts: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        texts,
        [
            "train-a q0",
            "train-a q1",
            "train-a q2",
            "train-b q0",
            "train-b q1"
        ]
    );
}

/// `similarity --corpus` and mining read the corpus a chunk at a time: chunks of 7 texts (a
/// corpus with repeated texts across chunk boundaries) give exactly the answers of one chunk.
#[test]
fn similarity_and_mining_give_the_same_answers_in_small_corpus_chunks() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    tiny::write_tiny_model(&model, 5);
    let corpus = tmp.path().join("corpus.txt");
    let texts: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "document {} about {}",
                i % 23,
                ["cats", "dogs", "rain", "sun"][i % 4]
            )
        })
        .collect();
    std::fs::write(&corpus, texts.join("\n")).unwrap();
    let pairs = tmp.path().join("p.jsonl");
    let rows: String = (0..12)
        .map(|i| format!("{}\n", json!({"anchor": format!("question {i} about {}", ["cats", "sun"][i % 2]), "positive": texts[i * 3].clone()})))
        .collect();
    std::fs::write(&pairs, rows).unwrap();
    let m = model.to_str().unwrap();
    let run = |chunk: &str, args: &[&str]| -> Vec<u8> {
        let mut c = embtune_cmd_offline();
        c.args(args).env("EMBTUNE_CORPUS_CHUNK", chunk);
        let out = ok(c.output().unwrap());
        out.stdout
    };
    let sim = [
        "similarity",
        "-m",
        m,
        "--query",
        "cats in the rain",
        "--corpus",
        corpus.to_str().unwrap(),
        "--top-k",
        "9",
        "--json",
    ];
    let whole = run("100000", &sim);
    assert_eq!(whole, run("7", &sim));
    // The cached corpus embeddings are keyed by --truncate-dim too (a cache of full embeddings
    // must not answer a truncated search): cached and fresh truncated answers agree.
    let cut: Vec<&str> = sim.iter().copied().chain(["--truncate-dim", "8"]).collect();
    let first = run("100000", &cut);
    assert_ne!(first, whole);
    std::fs::remove_dir_all(tmp.path().join("corpus.txt.embtune-cache")).unwrap();
    assert_eq!(first, run("100000", &cut));
    // A BEIR key that first appears after the texts were chosen is an error, not dropped text.
    let late = tmp.path().join("late.jsonl");
    let rows: String = (0..10)
        .map(|i| {
            if i < 8 {
                format!("{}\n", json!({"_id": i.to_string(), "text": "t"}))
            } else {
                format!(
                    "{}\n",
                    json!({"_id": i.to_string(), "title": "x", "text": "t"})
                )
            }
        })
        .collect();
    std::fs::write(&late, rows).unwrap();
    let mut c = embtune_cmd_offline();
    c.args([
        "similarity",
        "-m",
        m,
        "--query",
        "q",
        "--corpus",
        late.to_str().unwrap(),
    ])
    .env("EMBTUNE_CORPUS_CHUNK", "4");
    assert_one_line_error(
        &c.output().unwrap(),
        &["late.jsonl:9", "title", "first appears"],
    );
    let hits: Value = serde_json::from_slice(&whole).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 9);
    for (mode, extra) in [
        ("mined", vec!["--mine", "-m", m, "--num-negatives", "2"]),
        ("random", vec!["--num-negatives", "3"]),
    ] {
        let outs: Vec<Vec<u8>> = ["100000", "7"]
            .iter()
            .map(|chunk| {
                let o = tmp.path().join(format!("{mode}-{chunk}.jsonl"));
                let mut args = vec![
                    "pairs",
                    "--from",
                    "pairs",
                    "-d",
                    pairs.to_str().unwrap(),
                    "--corpus",
                    corpus.to_str().unwrap(),
                ];
                args.extend(extra.iter().copied());
                args.extend(["-o", o.to_str().unwrap(), "-q"]);
                run(chunk, &args);
                std::fs::read(&o).unwrap()
            })
            .collect();
        assert!(!outs[0].is_empty(), "{mode}");
        assert_eq!(outs[0], outs[1], "{mode}");
    }
}
