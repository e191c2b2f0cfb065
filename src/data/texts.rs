//! Texts from a [`RowStream`], a chunk at a time: one column of a file ([`TextStream`], what
//! `embed` and `--calibration` read) and a corpus file's documents ([`CorpusTexts`], what
//! `similarity --corpus` and mining's `--corpus` read), and a row count by streaming.
//! Depends on `stream.rs` and the column helpers of `data/mod.rs`.

use super::stream::RowStream;
use super::{DataFormat, ReadOptions, Row};
use anyhow::{bail, Result};
use serde_json::Value;
use std::path::Path;

/// One text column of a [`RowStream`], a chunk at a time (what `embed` reads).
pub struct TextStream {
    rows: RowStream,
    column: String,
    /// The first row, read at open (so an empty file is refused before the column check).
    first: Option<Row>,
}

impl TextStream {
    /// Opens `path`, reads its first row (a file without data rows is an error) and checks that
    /// it has `column` (a JSONL file: among the first row's keys).
    pub fn open(
        path: &Path,
        format: Option<DataFormat>,
        opts: &ReadOptions,
        column: &str,
    ) -> Result<Self> {
        let mut rows = RowStream::open(path, format, opts)?;
        let first = rows.next_row()?;
        super::column_index(&rows.path, rows.format, &rows.columns, column)?;
        Ok(Self {
            rows,
            column: column.to_string(),
            first,
        })
    }

    /// Up to `n` next texts (fewer only at the end).
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<String>> {
        let mut rows = Vec::with_capacity(n.min(1 << 16));
        if n > 0 {
            rows.extend(self.first.take());
        }
        rows.extend(self.rows.next_chunk(n - rows.len())?);
        let s = &self.rows;
        let col = super::column_index(&s.path, s.format, &s.columns, &self.column)?;
        rows.iter()
            .map(|r| Ok(super::cell_text(&s.path, &s.columns, r, col)?.into_owned()))
            .collect()
    }

    /// Skips `n` rows (counted, not kept).
    pub fn skip(&mut self, n: usize) -> Result<usize> {
        let mut k = 0;
        if n > 0 && self.first.take().is_some() {
            k += 1;
        }
        while k < n && self.rows.next_row()?.is_some() {
            k += 1;
        }
        Ok(k)
    }

    /// Every remaining text (for small files such as `--calibration`).
    pub fn read_all(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        loop {
            let c = self.next_chunk(1 << 16)?;
            if c.is_empty() {
                return Ok(out);
            }
            out.extend(c);
        }
    }
}

/// Corpus texts read (and embedded) at a time by `similarity` and mining: 50,000, or
/// `EMBTUNE_CORPUS_CHUNK` (tests use a small one to cross chunk boundaries).
pub fn corpus_chunk() -> usize {
    std::env::var("EMBTUNE_CORPUS_CHUNK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(50_000)
}

/// The texts of a corpus file (`similarity --corpus`, mining's `--corpus`), a chunk at a time:
/// a file with a known extension is read in that format (its `text` column, else its first
/// column; a BEIR `corpus.jsonl` — `_id`, `title`, `text` — as title + " " + text); any other
/// file is one text per line. Which columns make the text is settled by the first chunk; a
/// JSONL key that appears later and would change that choice is an error.
pub struct CorpusTexts {
    rows: RowStream,
    /// (title, text) columns of a BEIR corpus, or the one text column.
    pick: Option<CorpusPick>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CorpusPick {
    Beir(usize, usize),
    Column(usize),
}

impl CorpusTexts {
    pub fn open(path: &Path) -> Result<Self> {
        let format = DataFormat::from_path(path).unwrap_or(DataFormat::Text);
        Ok(Self {
            rows: RowStream::open(path, Some(format), &ReadOptions::default())?,
            pick: None,
        })
    }

    /// Up to `n` next texts (fewer only at the end).
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<String>> {
        let rows = self.rows.next_chunk(n)?;
        let s = &self.rows;
        let cols = &s.columns;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let at = |name: &str| cols.iter().position(|c| c == name);
        let now = match (at("_id"), at("title"), at("text")) {
            (Some(_), Some(ti), Some(te)) => CorpusPick::Beir(ti, te),
            (_, _, Some(te)) => CorpusPick::Column(te),
            _ if cols.is_empty() => bail!("{}: no columns", s.path.display()),
            _ => CorpusPick::Column(0),
        };
        let pick = match self.pick {
            None => {
                self.pick = Some(now);
                now
            }
            Some(p) if p == now => p,
            Some(_) => bail!(
                "{}:{}: the key {:?} first appears here, after the corpus texts were chosen from {:?}: \
                 put every key (`_id`, `title`, `text`) in the first rows",
                s.path.display(),
                rows[0].line,
                cols.iter().find(|c| ["_id", "title", "text"].contains(&c.as_str())).cloned().unwrap_or_default(),
                match self.pick {
                    Some(CorpusPick::Beir(..)) => "title + text".to_string(),
                    Some(CorpusPick::Column(c)) => cols[c].clone(),
                    None => String::new(),
                }
            ),
        };
        rows.iter()
            .map(|r| match pick {
                CorpusPick::Column(c) => Ok(super::cell_text(&s.path, cols, r, c)?.into_owned()),
                CorpusPick::Beir(ti, te) => {
                    let cell = |c: usize| -> Result<String> {
                        Ok(match r.cells.get(c).unwrap_or(&Value::Null) {
                            Value::Null => String::new(),
                            _ => super::cell_text(&s.path, cols, r, c)?.into_owned(),
                        })
                    };
                    Ok(format!("{} {}", cell(ti)?, cell(te)?).trim().to_string())
                }
            })
            .collect()
    }
}

/// Rows in `path`, counted by reading it through once (a stream; nothing kept).
pub fn count_rows(path: &Path, format: Option<DataFormat>, opts: &ReadOptions) -> Result<usize> {
    let mut s = RowStream::open(path, format, opts)?;
    while s.next_row()?.is_some() {}
    Ok(s.rows_read())
}
