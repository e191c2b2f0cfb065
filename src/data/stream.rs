//! Streaming readers: the rows of a file in file order, one at a time or a chunk at a time, so
//! memory is bounded by the chunk (and the longest line / a Parquet row group), not the file.
//! They give exactly the rows, line numbers and error messages of the whole-file readers of
//! `read.rs` (shared per-line parsers; tested format by format in tests/it/streaming.rs): a BOM
//! is dropped, CRLF ends are read, CSV quoting may span lines. Differences: UTF-8 is checked
//! line by line, so of two faults the first in the file is reported (the whole-file reader
//! names invalid UTF-8 first wherever it is); a JSONL file's columns grow as keys first appear,
//! so a row read before a key appeared lacks it; FlagEmbedding rows are not rewritten into
//! anchor/positive/negative columns (training reads whole files and does).
//! Depends on `read.rs`, `parquet.rs`, `hub.rs`, csv and serde_json.

use super::read::{self, ReadOptions};
use super::{DataFormat, Row};
use anyhow::{bail, Result};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Raw lines of a file (each with its `\n`), checked as UTF-8 one by one, the BOM removed.
struct RawLines {
    reader: BufReader<std::fs::File>,
    path: PathBuf,
    /// Bytes of the file consumed so far (BOM included: offsets in errors are file offsets).
    offset: usize,
    /// 1-based number of the next line.
    line: usize,
}

impl RawLines {
    fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Ok(Self {
            reader: BufReader::with_capacity(1 << 16, f),
            path: path.to_path_buf(),
            offset: 0,
            line: 1,
        })
    }

    /// The next line into `buf` (cleared first); false at the end of the file.
    fn next(&mut self, buf: &mut Vec<u8>) -> Result<bool> {
        buf.clear();
        let n = self
            .reader
            .read_until(b'\n', buf)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", self.path.display()))?;
        if n == 0 {
            return Ok(false);
        }
        if let Err(e) = std::str::from_utf8(buf) {
            // The same words as the whole-file reader's check.
            bail!(
                "{}:{}: invalid UTF-8 at byte offset {}; expected UTF-8 text",
                self.path.display(),
                self.line,
                self.offset + e.valid_up_to()
            );
        }
        if self.offset == 0 && buf.starts_with("\u{feff}".as_bytes()) {
            buf.drain(..3);
        }
        self.offset += n;
        self.line += 1;
        Ok(true)
    }
}

/// A line as `str::lines` and the whole-file reader's `\r` strip leave it.
fn trim_end(raw: &[u8]) -> &str {
    // Checked as UTF-8 by RawLines.
    let s = std::str::from_utf8(raw).unwrap_or_default();
    let s = match s.strip_suffix('\n') {
        Some(s) => s.strip_suffix('\r').unwrap_or(s),
        None => s,
    };
    s.strip_suffix('\r').unwrap_or(s)
}

/// Where the newlines handed to the CSV parser are, to number its records' lines; the ones
/// before the last record asked about are dropped (records come in order).
#[derive(Default)]
struct LineIndex {
    dropped: usize,
    newlines: VecDeque<u64>,
    /// The first line (the header's, for the header check).
    first: Option<String>,
    /// A UTF-8 error met while feeding the parser: it is the error to report.
    error: Option<String>,
}

impl LineIndex {
    /// 1-based line of the byte at `byte` of the parser's input.
    fn line_of(&mut self, byte: u64) -> usize {
        // (With CRLF ends a record's offset can point at the \n of the previous line's \r\n.)
        let k = self.newlines.partition_point(|&n| n <= byte);
        self.newlines.drain(..k);
        self.dropped += k;
        self.dropped + 1
    }
}

/// Feeds the CSV parser whole checked lines, recording where their newlines are.
struct LineFeed {
    lines: RawLines,
    buf: Vec<u8>,
    pos: usize,
    handed: u64,
    index: Rc<RefCell<LineIndex>>,
}

impl Read for LineFeed {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.pos = 0;
            match self.lines.next(&mut self.buf) {
                Ok(false) => return Ok(0),
                Ok(true) => {}
                Err(e) => {
                    self.buf.clear();
                    self.index.borrow_mut().error = Some(e.to_string());
                    return Err(std::io::Error::other(e.to_string()));
                }
            }
            let mut ix = self.index.borrow_mut();
            if ix.first.is_none() {
                ix.first = Some(trim_end(&self.buf).to_string());
            }
            if self.buf.last() == Some(&b'\n') {
                ix.newlines
                    .push_back(self.handed + self.buf.len() as u64 - 1);
            }
            self.handed += self.buf.len() as u64;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

enum Source {
    /// Text, JSONL and STS-B: one row per non-blank line.
    Lines { lines: RawLines, buf: Vec<u8> },
    Delimited {
        rdr: csv::Reader<LineFeed>,
        index: Rc<RefCell<LineIndex>>,
        record: csv::StringRecord,
    },
    /// Parquet files (one, or a Hub split's), a row group at a time.
    Parquet {
        files: VecDeque<PathBuf>,
        open: Option<OpenParquet>,
        rows: VecDeque<Row>,
        next_line: usize,
    },
}

struct OpenParquet {
    reader: parquet::file::reader::SerializedFileReader<std::fs::File>,
    path: PathBuf,
    next_group: usize,
}

/// The rows of a dataset file in order (see the module header).
pub struct RowStream {
    pub(super) path: PathBuf,
    pub(super) format: DataFormat,
    pub(super) columns: Vec<String>,
    source: Source,
    rows: usize,
    /// The end was reached (and logged).
    ended: bool,
    /// A Hub split: how its empty-split error names it.
    hub_split: Option<(String, String)>,
}

impl RowStream {
    /// Opens `path` (`format` None: from the extension; `hf://datasets/…`: the split's parquet
    /// files) and reads its header where it has one.
    pub fn open(path: &Path, format: Option<DataFormat>, opts: &ReadOptions) -> Result<Self> {
        if let Some(spec) = path.to_str().filter(|s| s.starts_with(super::hub::PREFIX)) {
            let r = super::hub::DatasetRef::parse(spec)?;
            let split = opts.split.as_deref().unwrap_or("train").to_string();
            let files = super::hub::resolve(&r, &split, &Default::default())?;
            if files.is_empty() {
                bail!("{spec}: no parquet files");
            }
            let mut s = Self::parquet(files, PathBuf::from(format!("{spec}[{split}]")))?;
            s.hub_split = Some((spec.to_string(), split));
            return Ok(s);
        }
        let format = match format {
            Some(f) => f,
            None => DataFormat::from_path(path)?,
        };
        let path_buf = path.to_path_buf();
        let (columns, source) = match format {
            DataFormat::Parquet => return Self::parquet(vec![path_buf.clone()], path_buf),
            DataFormat::Text | DataFormat::Jsonl | DataFormat::Stsb => {
                let columns = match format {
                    DataFormat::Text => vec!["text".to_string()],
                    DataFormat::Stsb => read::STSB_COLUMNS.iter().map(|s| s.to_string()).collect(),
                    _ => Vec::new(),
                };
                let lines = RawLines::open(path)?;
                (
                    columns,
                    Source::Lines {
                        lines,
                        buf: Vec::new(),
                    },
                )
            }
            DataFormat::Csv | DataFormat::Tsv => {
                let default = if format == DataFormat::Csv {
                    b','
                } else {
                    b'\t'
                };
                let delim = opts.delimiter.unwrap_or(default);
                let index = Rc::new(RefCell::new(LineIndex::default()));
                let feed = LineFeed {
                    lines: RawLines::open(path)?,
                    buf: Vec::new(),
                    pos: 0,
                    handed: 0,
                    index: index.clone(),
                };
                let mut rdr = csv::ReaderBuilder::new()
                    .delimiter(delim)
                    .quoting(opts.quoting)
                    .has_headers(true)
                    .flexible(false)
                    .from_reader(feed);
                let header = read::header_row(&mut rdr, path);
                if let Some(e) = index.borrow_mut().error.take() {
                    bail!(e);
                }
                let columns = match header? {
                    Some(h) => {
                        let first = index.borrow().first.clone().unwrap_or_default();
                        read::check_header(&first, &h, delim, path)?;
                        h
                    }
                    None => Vec::new(),
                };
                let record = csv::StringRecord::new();
                (columns, Source::Delimited { rdr, index, record })
            }
        };
        Ok(Self {
            path: path_buf,
            format,
            columns,
            source,
            rows: 0,
            ended: false,
            hub_split: None,
        })
    }

    fn parquet(files: Vec<PathBuf>, path: PathBuf) -> Result<Self> {
        let (reader, columns) = open_parquet(&files[0])?;
        let first = OpenParquet {
            reader,
            path: files[0].clone(),
            next_group: 0,
        };
        Ok(Self {
            path,
            format: DataFormat::Parquet,
            columns,
            source: Source::Parquet {
                files: files.into_iter().skip(1).collect(),
                open: Some(first),
                rows: VecDeque::new(),
                next_line: 1,
            },
            rows: 0,
            ended: false,
            hub_split: None,
        })
    }

    /// The file's columns so far (a JSONL file's grow as new keys appear).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> DataFormat {
        self.format
    }

    /// Rows read so far.
    pub fn rows_read(&self) -> usize {
        self.rows
    }

    /// The next row, None after the last; a file without any data row is an error (worded as
    /// the whole-file reader's).
    pub fn next_row(&mut self) -> Result<Option<Row>> {
        let row = self.next_inner()?;
        match row {
            Some(r) => {
                self.rows += 1;
                Ok(Some(r))
            }
            None if self.rows == 0 => match (&self.hub_split, self.format) {
                (Some((spec, split)), _) => bail!("{spec} (split {split}): no data rows"),
                (None, DataFormat::Parquet) => bail!("{}: no data rows", self.path.display()),
                _ => bail!(
                    "{}: no data rows (the file is empty{})",
                    self.path.display(),
                    if self.columns.is_empty() {
                        ""
                    } else {
                        " after the header"
                    }
                ),
            },
            None => {
                if !self.ended {
                    self.ended = true;
                    tracing::debug!(
                        "read {}: {} rows, format {:?}, columns {:?} (streamed)",
                        self.path.display(),
                        self.rows,
                        self.format,
                        self.columns
                    );
                }
                Ok(None)
            }
        }
    }

    /// Up to `n` next rows (fewer only at the end of the file).
    pub fn next_chunk(&mut self, n: usize) -> Result<Vec<Row>> {
        let mut out = Vec::with_capacity(n.min(1 << 16));
        while out.len() < n {
            match self.next_row()? {
                Some(r) => out.push(r),
                None => break,
            }
        }
        Ok(out)
    }

    fn next_inner(&mut self) -> Result<Option<Row>> {
        let path = &self.path;
        match &mut self.source {
            Source::Lines { lines, buf } => loop {
                let n = lines.line;
                if !lines.next(buf)? {
                    return Ok(None);
                }
                let l = trim_end(buf);
                if l.trim().is_empty() {
                    continue;
                }
                return Ok(Some(match self.format {
                    DataFormat::Text => Row {
                        line: n,
                        cells: vec![Value::String(l.to_string())],
                    },
                    DataFormat::Stsb => read::stsb_row(l, n, path)?,
                    _ => {
                        let mut obj = read::jsonl_object(l, n, path)?;
                        for k in obj.keys() {
                            if !self.columns.contains(k) {
                                self.columns.push(k.clone());
                            }
                        }
                        Row {
                            line: n,
                            cells: self
                                .columns
                                .iter()
                                .map(|c| obj.remove(c).unwrap_or(Value::Null))
                                .collect(),
                        }
                    }
                }));
            },
            Source::Delimited { rdr, index, record } => loop {
                if self.columns.is_empty() {
                    return Ok(None);
                }
                match rdr.read_record(record) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {
                        let line = record
                            .position()
                            .map(|p| index.borrow_mut().line_of(p.byte()))
                            .unwrap_or(0);
                        if record.iter().all(|f| f.is_empty()) {
                            continue;
                        }
                        return Ok(Some(Row {
                            line,
                            cells: record
                                .iter()
                                .map(|f| Value::String(f.to_string()))
                                .collect(),
                        }));
                    }
                    Err(e) => {
                        if let Some(msg) = index.borrow_mut().error.take() {
                            bail!(msg);
                        }
                        let line = e
                            .position()
                            .map(|p| index.borrow_mut().line_of(p.byte()))
                            .unwrap_or(0);
                        return Err(read::record_error(&e, line, path));
                    }
                }
            },
            Source::Parquet {
                files,
                open,
                rows,
                next_line,
            } => loop {
                if let Some(r) = rows.pop_front() {
                    return Ok(Some(r));
                }
                let Some(op) = open.as_mut() else {
                    let Some(f) = files.pop_front() else {
                        return Ok(None);
                    };
                    let (reader, columns) = open_parquet(&f)?;
                    if columns != self.columns {
                        bail!(
                            "{}: columns {:?} differ from the first file's {:?}",
                            f.display(),
                            columns,
                            self.columns
                        );
                    }
                    *open = Some(OpenParquet {
                        reader,
                        path: f,
                        next_group: 0,
                    });
                    continue;
                };
                use parquet::file::reader::FileReader;
                if op.next_group >= op.reader.num_row_groups() {
                    *open = None;
                    continue;
                }
                let (rg, first, columns) = (op.next_group, *next_line, &self.columns);
                let group = super::parquet::guarded(
                    &op.path,
                    std::panic::AssertUnwindSafe(|| {
                        super::parquet::read_group(&op.reader, &op.path, columns, rg, first)
                    }),
                )?;
                op.next_group += 1;
                *next_line += group.len();
                rows.extend(group);
            },
        }
    }
}

/// Opens a parquet file with the decoder's panics turned into errors (as `parquet::read`).
fn open_parquet(
    path: &Path,
) -> Result<(
    parquet::file::reader::SerializedFileReader<std::fs::File>,
    Vec<String>,
)> {
    super::parquet::guarded(path, || super::parquet::open(path))
}
