//! The dataset readers (text, CSV, TSV, JSONL, STS-B) on arbitrary bytes: any input gives a
//! table or an error, never a panic. The first byte picks the format and options. (Parquet is
//! decoded by the parquet crate, which can panic on corrupt files; embtune catches that with
//! catch_unwind — tests/it/datasets.rs — which libFuzzer's abort-on-panic hook would report.)
#![no_main]
use embtune::data::{read_table, DataFormat, ReadOptions};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let formats = [
        DataFormat::Text,
        DataFormat::Csv,
        DataFormat::Tsv,
        DataFormat::Jsonl,
        DataFormat::Stsb,
    ];
    let format = formats[(sel & 7) as usize % formats.len()];
    let opts = ReadOptions {
        quoting: sel & 8 == 0,
        delimiter: if sel & 16 != 0 { Some(b';') } else { None },
        split: None,
    };
    let path = common::scratch().join("input.dat");
    if std::fs::write(&path, body).is_err() {
        return;
    }
    if let Ok(t) = read_table(&path, Some(format), &opts) {
        // Every cell of every row can be asked for as text or number without a panic.
        for row in &t.rows {
            for c in 0..t.columns.len() {
                let _ = t.text(row, c);
                let _ = t.number(row, c);
            }
        }
    }
});
