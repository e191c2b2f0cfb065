//! Writes `embed`'s outputs a chunk at a time (so a corpus larger than memory can be exported):
//! `.npy` (header with the row count, then rows), `.safetensors` (one tensor "embeddings", the
//! header the safetensors crate writes, then rows) and `.jsonl` (`{"text", "embedding"}` lines),
//! to a temporary name renamed at the end. Shard merging appends the data of whole files with
//! the same writer, so one run and a merge of shards give the same bytes.
//! Depends on `fsutil`, `quantize` (typed values) and serde_json.

use crate::fsutil::AtomicFile;
use crate::quantize::{Precision, ValuesRef};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Output file kinds, chosen by the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OutputFormat {
    Npy,
    Safetensors,
    Jsonl,
}

impl OutputFormat {
    pub fn from_path(p: &Path) -> Result<Self> {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("npy") => Ok(Self::Npy),
            Some("safetensors") => Ok(Self::Safetensors),
            Some("jsonl") => Ok(Self::Jsonl),
            _ => bail!(
                "{}: output must end in .npy, .safetensors or .jsonl",
                p.display()
            ),
        }
    }
}

/// The element type of an output: NumPy descr, safetensors dtype name, bytes per value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elem {
    pub npy: &'static str,
    pub safetensors: &'static str,
    pub bytes: usize,
}

impl Elem {
    /// What `precision`'s values are stored as (binary: int8, ubinary: uint8 bytes).
    pub fn of(precision: Precision) -> Elem {
        let (npy, safetensors, bytes) = match precision {
            Precision::Float32 => ("<f4", "F32", 4),
            Precision::Float16 => ("<f2", "F16", 2),
            Precision::Int8 | Precision::Binary => ("|i1", "I8", 1),
            Precision::Uint8 | Precision::Ubinary => ("|u1", "U8", 1),
        };
        Elem {
            npy,
            safetensors,
            bytes,
        }
    }
}

/// NumPy v1.0 header for a C-order little-endian array `[rows, cols]` of `descr`, padded to 64
/// bytes.
pub fn npy_header(descr: &str, rows: usize, cols: usize) -> Vec<u8> {
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = (dict.len() + pad + 1) as u16;
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend_from_slice(&header_len.to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    h
}

/// The safetensors prefix (8-byte length + JSON header, space-padded to 8 bytes) of one tensor
/// "embeddings" `[rows, cols]` with metadata `{"format": "pt"}` — the bytes the safetensors
/// crate writes for it (a unit test holds the two together).
pub fn safetensors_header(dtype: &str, rows: usize, cols: usize, bytes: usize) -> Vec<u8> {
    let n = rows * cols * bytes;
    let json = format!(
        "{{\"__metadata__\":{{\"format\":\"pt\"}},\"embeddings\":{{\"dtype\":\"{dtype}\",\"shape\":[{rows},{cols}],\"data_offsets\":[0,{n}]}}}}"
    );
    let mut j = json.into_bytes();
    while j.len() % 8 != 0 {
        j.push(b' ');
    }
    let mut h = (j.len() as u64).to_le_bytes().to_vec();
    h.extend(j);
    h
}

/// An output being written: the header first (the row count is known), then rows in order.
pub struct OutputWriter {
    file: AtomicFile,
    path: PathBuf,
    format: OutputFormat,
    rows: usize,
    cols: usize,
    elem: Elem,
    written: usize,
}

impl OutputWriter {
    pub fn create(
        path: &Path,
        format: OutputFormat,
        elem: Elem,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        let mut file = AtomicFile::create(path)?;
        let header = match format {
            OutputFormat::Npy => npy_header(elem.npy, rows, cols),
            OutputFormat::Safetensors => {
                safetensors_header(elem.safetensors, rows, cols, elem.bytes)
            }
            OutputFormat::Jsonl => Vec::new(),
        };
        file.writer()?
            .write_all(&header)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            format,
            rows,
            cols,
            elem,
            written: 0,
        })
    }

    /// Appends `rows` rows: `values` row-major `[rows, cols]`; `texts` name them in a `.jsonl`
    /// output (the other formats take none).
    pub fn append(&mut self, values: ValuesRef<'_>, rows: usize, texts: &[String]) -> Result<()> {
        if self.written + rows > self.rows {
            bail!(
                "{}: more rows than the {} announced",
                self.path.display(),
                self.rows
            );
        }
        if values.len() != rows * self.cols
            || (self.format == OutputFormat::Jsonl && texts.len() != rows)
        {
            bail!(
                "{}: {rows} rows of {} values expected",
                self.path.display(),
                self.cols
            );
        }
        let ctx = || format!("writing {}", self.path.display());
        let w = self.file.writer()?;
        match self.format {
            OutputFormat::Npy | OutputFormat::Safetensors => {
                // In pieces, so the byte copy stays small next to the chunk.
                let step = (1 << 16) / self.cols.max(1) * self.cols.max(1);
                let mut at = 0;
                while at < values.len() {
                    let end = (at + step.max(1)).min(values.len());
                    w.write_all(&values.slice(at..end).le_bytes())
                        .with_context(ctx)?;
                    at = end;
                }
            }
            OutputFormat::Jsonl => {
                for (i, t) in texts.iter().enumerate() {
                    let line = serde_json::json!({"text": t, "embedding": values.json(i * self.cols..(i + 1) * self.cols)});
                    serde_json::to_writer(&mut *w, &line).with_context(ctx)?;
                    w.write_all(b"\n").with_context(ctx)?;
                }
            }
        }
        self.written += rows;
        Ok(())
    }

    /// Appends the data part of a whole output file of the same format, element type and
    /// width holding `rows` rows (shard merging), copied in pieces.
    pub fn append_file(&mut self, src: &Path, rows: usize) -> Result<()> {
        let header = match self.format {
            OutputFormat::Npy => npy_header(self.elem.npy, rows, self.cols),
            OutputFormat::Safetensors => {
                safetensors_header(self.elem.safetensors, rows, self.cols, self.elem.bytes)
            }
            OutputFormat::Jsonl => Vec::new(),
        };
        let mut f =
            std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let len = f.metadata()?.len() as usize;
        let mut head = vec![0u8; header.len()];
        use std::io::Read;
        f.read_exact(&mut head)
            .with_context(|| format!("reading {}", src.display()))?;
        let data = len - header.len();
        let want = rows * self.cols * self.elem.bytes;
        if head != header || (self.format != OutputFormat::Jsonl && data != want) {
            bail!(
                "{}: not the {} output of {rows} rows × {} its sidecar describes (changed or truncated?)",
                src.display(),
                match self.format {
                    OutputFormat::Npy => "npy",
                    OutputFormat::Safetensors => "safetensors",
                    OutputFormat::Jsonl => "jsonl",
                },
                self.cols
            );
        }
        if self.format == OutputFormat::Jsonl {
            // Every line whole: a JSON object with an embedding of `cols` values, ending in \n.
            let mut lines = std::io::BufReader::new(std::fs::File::open(src)?);
            let (mut n, mut line) = (0, String::new());
            loop {
                line.clear();
                let got = std::io::BufRead::read_line(&mut lines, &mut line)
                    .with_context(|| format!("reading {}", src.display()))?;
                if got == 0 {
                    break;
                }
                n += 1;
                let width = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| {
                        v.get("embedding")
                            .and_then(|e| e.as_array())
                            .map(|a| a.len())
                    });
                if !line.ends_with('\n') || width != Some(self.cols) {
                    bail!(
                        "{}:{n}: not a whole row of {} values (the file was changed or truncated?)",
                        src.display(),
                        self.cols
                    );
                }
            }
            if n != rows {
                bail!(
                    "{}: {n} lines but its sidecar says {rows} rows (changed or truncated?)",
                    src.display()
                );
            }
        }
        if self.written + rows > self.rows {
            bail!(
                "{}: more rows than the {} announced",
                self.path.display(),
                self.rows
            );
        }
        let w = self.file.writer()?;
        std::io::copy(&mut f, w).with_context(|| format!("writing {}", self.path.display()))?;
        self.written += rows;
        Ok(())
    }

    /// Checks that every announced row was written and renames the file into place.
    pub fn finish(self) -> Result<()> {
        if self.written != self.rows {
            bail!(
                "{}: {} rows written of the {} announced",
                self.path.display(),
                self.written,
                self.rows
            );
        }
        self.file.commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        let h = npy_header("<f4", 3, 384);
        assert_eq!(h.len() % 64, 0);
        assert!(String::from_utf8_lossy(&h).contains("'shape': (3, 384)"));
    }

    /// Our streamed safetensors prefix is byte for byte what the safetensors crate writes.
    #[test]
    fn safetensors_header_equals_the_crate() {
        use safetensors::Dtype;
        for (dt, name, b) in [
            (Dtype::F32, "F32", 4),
            (Dtype::F16, "F16", 2),
            (Dtype::I8, "I8", 1),
            (Dtype::U8, "U8", 1),
        ] {
            for (rows, cols) in [(1, 1), (3, 384), (7, 48), (1000, 5)] {
                let data = vec![0u8; rows * cols * b];
                let view =
                    safetensors::tensor::TensorView::new(dt, vec![rows, cols], &data).unwrap();
                let meta: std::collections::HashMap<String, String> =
                    [("format".to_string(), "pt".to_string())].into();
                let bytes = safetensors::serialize([("embeddings", view)], Some(meta)).unwrap();
                let h = safetensors_header(name, rows, cols, b);
                assert_eq!(&bytes[..h.len()], &h[..], "{name} {rows}x{cols}");
                assert_eq!(bytes.len(), h.len() + data.len());
            }
        }
    }
}
