//! Encode throughput benchmark (not a test): all unique STS-B test sentences, normalized, with
//! the real model, at batch 32 and 128; median of `--repeats` runs, model load excluded,
//! tokenization included (as in sentence-transformers' encode). Prints one JSON line per batch size.
//!
//! cargo run --release --example bench_encode -- [--repeats 3] [--data data/stsbenchmark/sts-test.csv]

use embtune::data::{read_table, DataFormat, ReadOptions};
use embtune::encode::{encode, EncodeOptions};
use embtune::model::{ModelSpec, SentenceEncoder};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    embtune::runtime::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let repeats: usize = arg("--repeats", "3").parse()?;
    let data = arg("--data", "data/stsbenchmark/sts-test.csv");
    let table = read_table(
        std::path::Path::new(&data),
        Some(DataFormat::Stsb),
        &ReadOptions::default(),
    )?;
    let mut uniq: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in &table.rows {
        for c in [5, 6] {
            let t = table.text(r, c)?.into_owned();
            if seen.insert(t.clone()) {
                uniq.push(t);
            }
        }
    }
    let texts: Vec<&str> = uniq.iter().map(|s| s.as_str()).collect();
    let mut spec = ModelSpec {
        model: arg("--model", "sentence-transformers/all-MiniLM-L6-v2"),
        ..Default::default()
    };
    spec.hub.offline = true;
    let model = SentenceEncoder::load(&spec, &candle_core::Device::Cpu)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for bs in [32usize, 128] {
        let opts = EncodeOptions {
            batch_size: bs,
            normalize: true,
            progress: false,
            ..Default::default()
        };
        encode(&model, &texts[..64.min(texts.len())], &opts)?; // warm-up
        let mut secs = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            encode(&model, &texts, &opts)?;
            secs.push(t.elapsed().as_secs_f64());
        }
        secs.sort_by(|a, b| a.total_cmp(b));
        let median = secs[secs.len() / 2];
        println!(
            "{}",
            serde_json::json!({"job": "encode", "batch_size": bs, "sentences": texts.len(), "threads": threads,
                "seconds": secs, "median_seconds": median, "sentences_per_second": texts.len() as f64 / median})
        );
    }
    Ok(())
}
