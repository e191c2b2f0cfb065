//! Writes the training files of the STS-B recipes (as in ../shared/reference/cpu_finetune_runs.json)
//! from STS-B train, seeded, as JSONL:
//! - mnrl.jsonl: (anchor, positive) for pairs with score ≥ 4.0
//! - contrastive.jsonl: (sentence1, sentence2, label) with 1 if score ≥ 4.0, 0 if score ≤ 1.5
//! - triplet.jsonl: (anchor, positive, negative), negative = sentence2 of a random other pair
//!
//! cargo run --release --example stsb_recipes -- data/stsbenchmark/sts-train.csv OUT_DIR [SEED=42]
//! (Pair building becomes `embtune pairs` in the pairs issue.)

use embtune::data::{read_table, DataFormat, ReadOptions};
use embtune::rng::Rng;
use serde_json::json;
use std::io::Write;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (input, out, seed) = match args.as_slice() {
        [_, i, o] => (i.clone(), std::path::PathBuf::from(o), 42),
        [_, i, o, s] => (i.clone(), std::path::PathBuf::from(o), s.parse()?),
        _ => anyhow::bail!("usage: stsb_recipes STSB_TRAIN OUT_DIR [SEED]"),
    };
    let t = read_table(
        std::path::Path::new(&input),
        Some(DataFormat::Stsb),
        &ReadOptions::default(),
    )?;
    let (c1, c2, cs) = (
        t.column("sentence1")?,
        t.column("sentence2")?,
        t.column("score")?,
    );
    let mut rows = Vec::new();
    for r in &t.rows {
        rows.push((
            t.text(r, c1)?.into_owned(),
            t.text(r, c2)?.into_owned(),
            t.number(r, cs)?,
        ));
    }
    std::fs::create_dir_all(&out)?;
    let write = |name: &str, lines: Vec<serde_json::Value>| -> anyhow::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(out.join(name))?);
        for l in &lines {
            writeln!(f, "{l}")?;
        }
        eprintln!("{name}: {} rows", lines.len());
        Ok(())
    };
    let pos: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].2 >= 4.0).collect();
    write(
        "mnrl.jsonl",
        pos.iter()
            .map(|&i| json!({"anchor": rows[i].0, "positive": rows[i].1}))
            .collect(),
    )?;
    let contrastive = rows
        .iter()
        .filter(|r| r.2 >= 4.0 || r.2 <= 1.5)
        .map(|r| json!({"sentence1": r.0, "sentence2": r.1, "label": if r.2 >= 4.0 { 1 } else { 0 }}))
        .collect();
    write("contrastive.jsonl", contrastive)?;
    let mut rng = Rng::new(seed);
    let triplets = pos
        .iter()
        .map(|&i| {
            let mut j = rng.below(rows.len());
            while j == i {
                j = rng.below(rows.len());
            }
            json!({"anchor": rows[i].0, "positive": rows[i].1, "negative": rows[j].1})
        })
        .collect();
    write("triplet.jsonl", triplets)?;
    Ok(())
}
