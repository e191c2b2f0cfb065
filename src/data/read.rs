//! The readers behind [`read_table`]: text lines, CSV/TSV with a header, JSONL, STS-B; a table in
//! FlagEmbedding's layout is turned into training columns (`flag.rs`).

use super::{DataFormat, Row, Table};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::Path;

/// Reader options (resolved from CLI flags).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReadOptions {
    /// Honour CSV quoting (`"a, b"`); off reads quotes as literal text.
    pub quoting: bool,
    /// Field delimiter for csv/tsv (default `,` / tab).
    pub delimiter: Option<u8>,
    /// Split of a Hub dataset (`hf://datasets/...`), default "train".
    #[serde(default)]
    pub split: Option<String>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            quoting: true,
            delimiter: None,
            split: None,
        }
    }
}

/// Reads a whole file; `format` None means "from the extension". An empty dataset is an error.
pub fn read_table(path: &Path, format: Option<DataFormat>, opts: &ReadOptions) -> Result<Table> {
    let mut t = read_table_inner(path, format, opts)?;
    if super::flag::is_flag_layout(&t) {
        t = super::flag::to_training_table(t)?;
    }
    tracing::debug!(
        "read {}: {} rows, format {:?}, columns {:?}",
        path.display(),
        t.rows.len(),
        t.format,
        t.columns
    );
    Ok(t)
}

fn read_table_inner(path: &Path, format: Option<DataFormat>, opts: &ReadOptions) -> Result<Table> {
    if let Some(spec) = path.to_str().filter(|s| s.starts_with(super::hub::PREFIX)) {
        return read_hub(spec, opts);
    }
    let format = match format {
        Some(f) => f,
        None => DataFormat::from_path(path)?,
    };
    if format == DataFormat::Parquet {
        let t = super::parquet::read(path)?;
        if t.rows.is_empty() {
            bail!("{}: no data rows", path.display());
        }
        return Ok(t);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = utf8(&bytes, path)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (columns, rows) = match format {
        DataFormat::Text => text_lines(text),
        DataFormat::Jsonl => jsonl(text, path)?,
        DataFormat::Stsb => stsb(text, path)?,
        DataFormat::Parquet => unreachable!("handled above"),
        DataFormat::Csv | DataFormat::Tsv => {
            let default = if format == DataFormat::Csv {
                b','
            } else {
                b'\t'
            };
            delimited(text, path, opts.delimiter.unwrap_or(default), opts.quoting)?
        }
    };
    if rows.is_empty() {
        bail!(
            "{}: no data rows (the file is empty{})",
            path.display(),
            if columns.is_empty() {
                ""
            } else {
                " after the header"
            }
        );
    }
    Ok(Table {
        path: path.to_path_buf(),
        format,
        columns,
        rows,
    })
}

/// UTF-8 or an error naming the line and byte offset of the first invalid byte.
pub(super) fn utf8<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str> {
    std::str::from_utf8(bytes).or_else(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        bail!(
            "{}:{line}: invalid UTF-8 at byte offset {at}; expected UTF-8 text",
            path.display()
        )
    })
}

fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
}

fn text_lines(text: &str) -> (Vec<String>, Vec<Row>) {
    let rows = lines(text)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| Row {
            line: n,
            cells: vec![Value::String(l.to_string())],
        })
        .collect();
    (vec!["text".into()], rows)
}

fn jsonl(text: &str, path: &Path) -> Result<(Vec<String>, Vec<Row>)> {
    let mut columns: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for (n, l) in lines(text) {
        if l.trim().is_empty() {
            continue;
        }
        let obj = jsonl_object(l, n, path)?;
        for k in obj.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
        objects.push((n, obj));
    }
    let rows = objects
        .into_iter()
        .map(|(n, mut obj)| Row {
            line: n,
            cells: columns
                .iter()
                .map(|c| obj.remove(c).unwrap_or(Value::Null))
                .collect(),
        })
        .collect();
    Ok((columns, rows))
}

/// One JSONL line (not blank) as its object, or an error naming the line.
pub(super) fn jsonl_object(
    l: &str,
    n: usize,
    path: &Path,
) -> Result<serde_json::Map<String, Value>> {
    let v: Value = serde_json::from_str(l).with_context(|| {
        format!(
            "{}:{n}: invalid JSON; expected one JSON object per line",
            path.display()
        )
    })?;
    let Value::Object(obj) = v else {
        bail!("{}:{n}: expected a JSON object, got {}", path.display(), v);
    };
    Ok(obj)
}

pub const STSB_COLUMNS: [&str; 7] = [
    "genre",
    "file",
    "year",
    "id",
    "score",
    "sentence1",
    "sentence2",
];

fn stsb(text: &str, path: &Path) -> Result<(Vec<String>, Vec<Row>)> {
    let mut rows = Vec::new();
    for (n, l) in lines(text) {
        if l.trim().is_empty() {
            continue;
        }
        rows.push(stsb_row(l, n, path)?);
    }
    Ok((STSB_COLUMNS.iter().map(|s| s.to_string()).collect(), rows))
}

/// One STS-B line (not blank) as a row of the seven [`STSB_COLUMNS`].
pub(super) fn stsb_row(l: &str, n: usize, path: &Path) -> Result<Row> {
    let fields: Vec<&str> = l.split('\t').collect();
    if fields.len() < 7 {
        bail!(
            "{}:{n}: {} tab-separated fields; expected 7 (genre, file, year, id, score, sentence1, sentence2)",
            path.display(),
            fields.len()
        );
    }
    // Some STS-B lines carry extra source columns after sentence2; they are ignored.
    Ok(Row {
        line: n,
        cells: fields[..7]
            .iter()
            .map(|f| Value::String(f.to_string()))
            .collect(),
    })
}

fn delimited(text: &str, path: &Path, delim: u8, quoting: bool) -> Result<(Vec<String>, Vec<Row>)> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .quoting(quoting)
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let Some(header) = header_row(&mut rdr, path)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    check_header(text.lines().next().unwrap_or(""), &header, delim, path)?;
    // Line numbers from byte offsets (the csv crate's own line count stays at 1 with CRLF ends).
    let newlines: Vec<usize> = text
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'\n')
        .map(|(i, _)| i)
        .collect();
    // (With CRLF ends a record's offset can point at the \n of the previous line's \r\n.)
    let line_of = |byte: u64| newlines.partition_point(|&n| (n as u64) <= byte) + 1;
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| {
            let line = e.position().map(|p| line_of(p.byte())).unwrap_or(0);
            record_error(&e, line, path)
        })?;
        let line = rec.position().map(|p| line_of(p.byte())).unwrap_or(0);
        if rec.iter().all(|f| f.is_empty()) {
            continue;
        }
        rows.push(Row {
            line,
            cells: rec.iter().map(|f| Value::String(f.to_string())).collect(),
        });
    }
    Ok((header, rows))
}

/// The header row's column names (trimmed; None when all are empty: no data), refusing a
/// repeated name.
pub(super) fn header_row<R: std::io::Read>(
    rdr: &mut csv::Reader<R>,
    path: &Path,
) -> Result<Option<Vec<String>>> {
    let header: Vec<String> = rdr
        .headers()
        .with_context(|| format!("{}:1: unreadable header row", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if header.iter().all(|h| h.is_empty()) {
        return Ok(None);
    }
    for (i, h) in header.iter().enumerate() {
        if header[..i].contains(h) {
            bail!(
                "{}:1: duplicate column name {h:?} in the header row",
                path.display()
            );
        }
    }
    Ok(Some(header))
}

/// The error of a CSV record at file line `line`, worded as the whole-file reader words it.
pub(super) fn record_error(e: &csv::Error, line: usize, path: &Path) -> anyhow::Error {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => anyhow::anyhow!(
            "{}:{line}: {len} fields; expected {expected_len} like the header row",
            path.display()
        ),
        _ => anyhow::anyhow!("{}:{line}: {e}", path.display()),
    }
}

/// Whether a header cell is really data: a number, or a text of four words or more.
fn looks_like_data(cell: &str) -> bool {
    let c = cell.trim();
    c.parse::<f64>().is_ok() || c.split_whitespace().count() >= 4
}

/// Refuses a header row that is data (a file without a header would lose its first row and
/// train on column names made of text), with the likely fix: a tab-separated file read as CSV,
/// or an STS-B file (which has no header) read without `--format stsb`.
pub(super) fn check_header(
    first_line: &str,
    header: &[String],
    delim: u8,
    path: &Path,
) -> Result<()> {
    let tabs: Vec<&str> = first_line.split('\t').collect();
    let stsb_like = tabs.len() >= 7 && tabs[4].trim().parse::<f64>().is_ok();
    if delim != b'\t' && header.len() == 1 && tabs.len() >= 2 {
        bail!(
            "{}:1: the header row has no {:?} but {} tab-separated fields: the file looks tab-separated: use --format tsv{}",
            path.display(),
            delim as char,
            tabs.len(),
            if stsb_like { " (or --format stsb: it looks like an STS-B file)" } else { "" }
        );
    }
    if let Some(cell) = header.iter().find(|h| looks_like_data(h)) {
        let shown: String = cell.chars().take(40).collect();
        bail!(
            "{}:1: the first row looks like data, not column names ({shown:?}): CSV/TSV files need a header row naming the columns{}",
            path.display(),
            if stsb_like { "; an STS-B file has none: use --format stsb" } else { "" }
        );
    }
    Ok(())
}

/// A Hub dataset split: its parquet files, concatenated (columns must agree).
fn read_hub(spec: &str, opts: &ReadOptions) -> Result<Table> {
    let r = super::hub::DatasetRef::parse(spec)?;
    let split = opts.split.as_deref().unwrap_or("train");
    let files = super::hub::resolve(&r, split, &Default::default())?;
    let mut table: Option<Table> = None;
    for f in files {
        let t = super::parquet::read(&f)?;
        match table.as_mut() {
            None => table = Some(t),
            Some(acc) => {
                if acc.columns != t.columns {
                    bail!(
                        "{}: columns {:?} differ from the first file's {:?}",
                        f.display(),
                        t.columns,
                        acc.columns
                    );
                }
                let offset = acc.rows.len();
                acc.rows.extend(t.rows.into_iter().map(|mut row| {
                    row.line += offset;
                    row
                }));
            }
        }
    }
    let mut t = table.with_context(|| format!("{spec}: no parquet files"))?;
    if t.rows.is_empty() {
        bail!("{spec} (split {split}): no data rows");
    }
    t.path = std::path::PathBuf::from(format!("{spec}[{split}]"));
    Ok(t)
}
