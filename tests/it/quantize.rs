//! Embedding precisions end to end: `embed --precision` writes the right dtype and shape with
//! values equal to sentence-transformers' `quantize_embeddings` formula applied (here, written
//! out again independently) to the float32 output; int8 ranges are saved and reused; the
//! chunked path quantizes alike; `eval --precision` on STS-B test reproduces
//! sentence-transformers 6.2; bad flag combinations are one-line errors before encoding.

use crate::common::{self, assert_one_line_error, embtune, tiny};
use std::path::{Path, PathBuf};

/// (descr, shape, data bytes) of a C-order .npy file.
fn read_npy(p: &Path) -> (String, Vec<usize>, Vec<u8>) {
    let bytes = std::fs::read(p).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{}", p.display());
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "header not 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let descr = header.split("'descr': '").nth(1).unwrap();
    let descr = descr.split('\'').next().unwrap().to_string();
    let shape = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = shape
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    (descr, shape, bytes[10 + hlen..].to_vec())
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `embed -m model -i input -o output extra…`
fn embed(model: &str, input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "embed",
        "-m",
        model,
        "-i",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    embtune(&args)
}

/// The first `n` distinct first sentences of STS-B test.
fn stsb_texts(dir: &Path, name: &str, skip: usize, n: usize) -> PathBuf {
    let all = std::fs::read_to_string(common::repo_root().join("data/stsbenchmark/sts-test.csv"))
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    let texts: Vec<&str> = all
        .lines()
        .map(|l| l.split('\t').nth(5).unwrap())
        .filter(|t| seen.insert(*t))
        .skip(skip)
        .take(n)
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, texts.join("\n") + "\n").unwrap();
    p
}

/// Per-dimension (min, max) over the rows.
fn column_ranges(x: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let mut lo = vec![f32::INFINITY; dim];
    let mut hi = vec![f32::NEG_INFINITY; dim];
    for (i, &v) in x.iter().enumerate() {
        lo[i % dim] = lo[i % dim].min(v);
        hi[i % dim] = hi[i % dim].max(v);
    }
    (lo, hi)
}

/// uint8 buckets, written from sentence-transformers' formula: step = (max − min) / 255 (1 where
/// 0), q = clip(floor((x − min) / step), 0, 255), all in float32.
fn buckets(x: &[f32], lo: &[f32], hi: &[f32]) -> Vec<u8> {
    let dim = lo.len();
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let j = i % dim;
            let s = (hi[j] - lo[j]) / 255.0;
            let step = if s == 0.0 { 1.0 } else { s };
            ((v - lo[j]) / step).floor().clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// numpy's packbits(x > 0) per row, first dimension in the high bit, zero-padded.
fn packbits(x: &[f32], dim: usize) -> Vec<u8> {
    x.chunks(dim)
        .flat_map(|row| {
            row.chunks(8).map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |b, (k, &v)| b | (((v > 0.0) as u8) << (7 - k)))
            })
        })
        .collect()
}

#[test]
fn embed_each_precision_writes_the_dtype_shape_and_values_of_the_formula() {
    let tmp = tempfile::tempdir().unwrap();
    let input = stsb_texts(tmp.path(), "in.txt", 0, 45);
    let m = common::REAL_MODEL;
    let f32_out = tmp.path().join("f32.npy");
    ok(&embed(m, &input, &f32_out, &[]));
    let (descr, shape, bytes) = read_npy(&f32_out);
    assert_eq!((descr.as_str(), shape.as_slice()), ("<f4", &[45, 384][..]));
    let x = f32s(&bytes);
    // The model ends in Normalize, so its float32 output is what gets quantized.
    let norm: f32 = x[..384].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    let (lo, hi) = column_ranges(&x, 384);
    let u8s = buckets(&x, &lo, &hi);
    let bits = packbits(&x, 384);
    let cases: [(&str, &str, usize, Vec<u8>); 5] = [
        (
            "float16",
            "<f2",
            384,
            x.iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
        ("int8", "|i1", 384, u8s.iter().map(|&q| q ^ 0x80).collect()),
        ("uint8", "|u1", 384, u8s.clone()),
        (
            "binary",
            "|i1",
            48,
            bits.iter().map(|&b| b ^ 0x80).collect(),
        ),
        ("ubinary", "|u1", 48, bits.clone()),
    ];
    for (p, want_descr, cols, want) in &cases {
        let out = tmp.path().join(format!("{p}.npy"));
        ok(&embed(m, &input, &out, &["--precision", p]));
        let (descr, shape, bytes) = read_npy(&out);
        assert_eq!(&descr, want_descr, "{p}");
        assert_eq!(shape, vec![45, *cols], "{p}");
        assert_eq!(&bytes, want, "{p}: values differ from the formula");
        // Ranges are saved for int8/uint8 only.
        let ranges = tmp.path().join(format!("{p}.npy.ranges.json"));
        assert_eq!(ranges.exists(), p.ends_with("int8"), "{p}");
    }
    // The other writers: safetensors dtypes, JSONL integers.
    for (p, dtype) in [("int8", "I8"), ("float16", "F16"), ("ubinary", "U8")] {
        let out = tmp.path().join(format!("{p}.safetensors"));
        ok(&embed(m, &input, &out, &["--precision", p]));
        let b = std::fs::read(&out).unwrap();
        let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        let h: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
        assert_eq!(h["embeddings"]["dtype"], dtype, "{p}");
        let cols = if p == "ubinary" { 48 } else { 384 };
        assert_eq!(h["embeddings"]["shape"], serde_json::json!([45, cols]));
        let npy = read_npy(&tmp.path().join(format!("{p}.npy"))).2;
        assert_eq!(
            &b[8 + n..],
            &npy[..],
            "{p}: safetensors data differ from .npy"
        );
    }
    let out = tmp.path().join("int8.jsonl");
    ok(&embed(m, &input, &out, &["--precision", "int8"]));
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let row: Vec<i64> = first["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().expect("an integer"))
        .collect();
    let want: Vec<i64> = u8s[..384].iter().map(|&q| q as i64 - 128).collect();
    assert_eq!(row, want);
}

#[test]
fn int8_ranges_are_saved_and_reused_and_calibration_gives_them() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = stsb_texts(tmp.path(), "corpus.txt", 0, 120);
    let queries = stsb_texts(tmp.path(), "queries.txt", 120, 30);
    let m = common::REAL_MODEL;
    let f32_corpus = tmp.path().join("corpus-f32.npy");
    ok(&embed(m, &corpus, &f32_corpus, &[]));
    let xc = f32s(&read_npy(&f32_corpus).2);
    let (lo, hi) = column_ranges(&xc, 384);

    let c8 = tmp.path().join("corpus.npy");
    ok(&embed(m, &corpus, &c8, &["--precision", "int8"]));
    let rpath = tmp.path().join("corpus.npy.ranges.json");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rpath).unwrap()).unwrap();
    assert_eq!(r["precision"], "int8");
    assert_eq!(r["dim"], 384);
    assert_eq!(r["calibration"], "the embeddings themselves");
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    assert_eq!(floats(&r["min"]), lo);
    assert_eq!(floats(&r["max"]), hi);

    // The same corpus with the saved ranges: the same bytes.
    let again = tmp.path().join("again.npy");
    ok(&embed(
        m,
        &corpus,
        &again,
        &["--precision", "int8", "--ranges", rpath.to_str().unwrap()],
    ));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&c8).unwrap());
    assert_eq!(
        std::fs::read(tmp.path().join("again.npy.ranges.json")).unwrap(),
        std::fs::read(&rpath).unwrap()
    );

    // Queries quantized with the corpus's ranges: through --ranges, or --calibration corpus.
    let f32_q = tmp.path().join("q-f32.npy");
    ok(&embed(m, &queries, &f32_q, &[]));
    let want: Vec<u8> = buckets(&f32s(&read_npy(&f32_q).2), &lo, &hi)
        .into_iter()
        .map(|q| q ^ 0x80)
        .collect();
    let q_ranges = tmp.path().join("q-ranges.npy");
    ok(&embed(
        m,
        &queries,
        &q_ranges,
        &["--precision", "int8", "--ranges", rpath.to_str().unwrap()],
    ));
    assert_eq!(read_npy(&q_ranges).2, want);
    let q_calib = tmp.path().join("q-calib.npy");
    ok(&embed(
        m,
        &queries,
        &q_calib,
        &[
            "--precision",
            "int8",
            "--calibration",
            corpus.to_str().unwrap(),
        ],
    ));
    assert_eq!(read_npy(&q_calib).2, want);
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("q-calib.npy.ranges.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(r["calibration"], corpus.to_str().unwrap());
    assert_eq!(floats(&r["min"]), lo);
}

/// The chunked (resumable) path quantizes the assembled float32 result: the same bytes as one
/// pass, for int8 (ranges over all rows, not per chunk) and binary. A model without Normalize:
/// quantized output is normalised first, like `--normalize`.
#[test]
fn chunked_embed_quantizes_like_one_pass_and_normalizes_first() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    tiny::write_tiny_model(&model, 3);
    let m = model.to_str().unwrap();
    let input = tmp.path().join("in.txt");
    let text: String = (0..50)
        .map(|i| format!("text number {i} about {}\n", i * 37 % 11))
        .collect();
    std::fs::write(&input, text).unwrap();
    let f32_out = tmp.path().join("f32.npy");
    ok(&embed(m, &input, &f32_out, &["--normalize"]));
    let x = f32s(&read_npy(&f32_out).2);
    let (lo, hi) = column_ranges(&x, 32);
    for p in ["int8", "binary"] {
        let one = tmp.path().join(format!("{p}-one.npy"));
        ok(&embed(m, &input, &one, &["--precision", p]));
        let chunked = tmp.path().join(format!("{p}-chunked.npy"));
        ok(&embed(
            m,
            &input,
            &chunked,
            &["--precision", p, "--chunk-rows", "7"],
        ));
        let a = std::fs::read(&one).unwrap();
        assert_eq!(a, std::fs::read(&chunked).unwrap(), "{p}");
        assert!(!tmp.path().join(format!("{p}-chunked.npy.parts")).exists());
        let want: Vec<u8> = if p == "int8" {
            buckets(&x, &lo, &hi).iter().map(|&q| q ^ 0x80).collect()
        } else {
            packbits(&x, 32).iter().map(|&b| b ^ 0x80).collect()
        };
        assert_eq!(read_npy(&one).2, want, "{p}");
    }
}

fn eval_stsb(precision: &str) -> serde_json::Value {
    let data = common::repo_root().join("data/stsbenchmark/sts-test.csv");
    let out = embtune(&[
        "eval",
        "-m",
        common::REAL_MODEL,
        "-d",
        data.to_str().unwrap(),
        "--format",
        "stsb",
        "--task",
        "sts",
        "--precision",
        precision,
        "--json",
        "-q",
    ]);
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// sentence-transformers 6.2, EmbeddingSimilarityEvaluator(precision=…) on STS-B test with
/// all-MiniLM-L6-v2 on this machine kind: float32 82.0325, int8 81.3983, uint8 81.9627,
/// binary and ubinary 80.7034 (spearman_cosine ×100). Ours must agree to 0.01.
#[test]
fn eval_precision_on_stsb_test_matches_sentence_transformers() {
    let f32 = eval_stsb("float32");
    let int8 = eval_stsb("int8");
    let binary = eval_stsb("binary");
    let s = |m: &serde_json::Value| m["spearman_cosine"].as_f64().unwrap();
    let (f, i, b) = (s(&f32), s(&int8), s(&binary));
    eprintln!("spearman_cosine: float32 {f:.4}, int8 {i:.4}, binary {b:.4}");
    assert_eq!(int8["precision"], "int8");
    assert_eq!(int8["bytes_per_embedding"], 384);
    assert_eq!(binary["bytes_per_embedding"], 48);
    assert!(
        (f - i).abs() < 1.0,
        "int8 {i} not within 1 point of float32 {f}"
    );
    assert!(b < f && b > 60.0, "binary {b} vs float32 {f}");
    for (got, want, p) in [
        (f, 82.0325, "float32"),
        (i, 81.3983, "int8"),
        (b, 80.7034, "binary"),
    ] {
        assert!(
            (got - want).abs() < 0.01,
            "{p}: spearman_cosine {got} vs sentence-transformers {want}"
        );
    }
}

/// Bad precision flags: one line each, before any encoding, no output left behind.
#[test]
fn precision_flag_errors_are_one_line_and_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    tiny::write_tiny_model(&model, 1);
    let m = model.to_str().unwrap();
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "one text\nanother text\n").unwrap();
    let single = tmp.path().join("single.txt");
    std::fs::write(&single, "only one text\n").unwrap();
    let out = tmp.path().join("o.npy");
    let wrong_dim = tmp.path().join("dim3.json");
    std::fs::write(
        &wrong_dim,
        r#"{"precision": "int8", "dim": 3, "min": [0, 0, 0], "max": [1, 1, 1], "calibration": "x"}"#,
    )
    .unwrap();
    let garbage = tmp.path().join("garbage.json");
    std::fs::write(&garbage, "min,max\n0,1\n").unwrap();
    let missing = tmp.path().join("no-such-ranges.json");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &Path, Vec<String>)> = vec![
        (
            vec![
                "--precision".into(),
                "float16".into(),
                "--ranges".into(),
                s(&wrong_dim),
            ],
            &input,
            vec!["--ranges".into(), "int8 or uint8".into(), "float16".into()],
        ),
        (
            vec![
                "--precision".into(),
                "binary".into(),
                "--calibration".into(),
                s(&input),
            ],
            &input,
            vec!["--calibration".into(), "int8 or uint8".into()],
        ),
        (
            vec![
                "--precision".into(),
                "int8".into(),
                "--ranges".into(),
                s(&wrong_dim),
                "--calibration".into(),
                s(&input),
            ],
            &input,
            vec!["--ranges".into(), "--calibration".into()],
        ),
        (
            vec![
                "--precision".into(),
                "int8".into(),
                "--ranges".into(),
                s(&wrong_dim),
            ],
            &input,
            vec![s(&wrong_dim), "dimension 3".into(), "32".into()],
        ),
        (
            vec![
                "--precision".into(),
                "uint8".into(),
                "--ranges".into(),
                s(&garbage),
            ],
            &input,
            vec![s(&garbage), "not a ranges file".into()],
        ),
        (
            vec![
                "--precision".into(),
                "uint8".into(),
                "--ranges".into(),
                s(&missing),
            ],
            &input,
            vec![s(&missing)],
        ),
        (
            vec!["--precision".into(), "int8".into()],
            &single,
            vec!["single embedding".into(), "--calibration".into()],
        ),
    ];
    for (extra, inp, needles) in cases {
        let extra: Vec<&str> = extra.iter().map(|x| x.as_str()).collect();
        let r = embed(m, inp, &out, &extra);
        let needles: Vec<&str> = needles.iter().map(|x| x.as_str()).collect();
        assert_one_line_error(&r, &needles);
        assert!(!out.exists(), "{extra:?} left an output");
    }
    // The single text works with calibration texts.
    ok(&embed(
        m,
        &single,
        &out,
        &[
            "--precision",
            "int8",
            "--calibration",
            input.to_str().unwrap(),
        ],
    ));
}
