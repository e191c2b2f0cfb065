//! Parquet tables without arrow: read every row group into a [`Table`] (errors name the file, row
//! group and row; a corrupt file the decoder panics on is an error too), and write string/number
//! columns (Snappy-compressed, one row group).

use super::{DataFormat, Row, Table};
use anyhow::{anyhow, bail, Context, Result};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::parser::parse_message_type;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

fn to_value(f: &Field) -> Value {
    match f {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(x) => (*x).into(),
        Field::Short(x) => (*x).into(),
        Field::Int(x) => (*x).into(),
        Field::Long(x) => (*x).into(),
        Field::UByte(x) => (*x).into(),
        Field::UShort(x) => (*x).into(),
        Field::UInt(x) => (*x).into(),
        Field::ULong(x) => (*x).into(),
        Field::Float(x) => serde_json::Number::from_f64(*x as f64)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Field::Double(x) => serde_json::Number::from_f64(*x)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(String::from_utf8_lossy(b.data()).into_owned()),
        other => Value::String(other.to_string()),
    }
}

/// Reads a parquet file; rows are numbered from 1 across row groups (used as "line").
pub fn read(path: &Path) -> Result<Table> {
    let p = path.to_path_buf();
    guarded(path, move || read_inner(&p))
}

/// Runs `f`, turning a decoder panic (some corrupt pages make it panic) into an error: a bad
/// file must be an error, not a crash.
pub(crate) fn guarded<T>(
    path: &Path,
    f: impl FnOnce() -> Result<T> + std::panic::UnwindSafe,
) -> Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    match res {
        Ok(r) => r,
        Err(_) => bail!(
            "{}: corrupt parquet file (the decoder failed); expected a valid parquet file",
            path.display()
        ),
    }
}

/// An open parquet file and its top-level column names.
pub(crate) fn open(path: &Path) -> Result<(SerializedFileReader<std::fs::File>, Vec<String>)> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| anyhow!("{}: not a valid parquet file: {e}", path.display()))?;
    let columns: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    Ok((reader, columns))
}

/// The rows of row group `rg`, numbered on from `first_line`.
pub(crate) fn read_group(
    reader: &SerializedFileReader<std::fs::File>,
    path: &Path,
    columns: &[String],
    rg: usize,
    first_line: usize,
) -> Result<Vec<Row>> {
    let ctx = |e: parquet::errors::ParquetError| anyhow!("{}: row group {rg}: {e}", path.display());
    let group = reader.get_row_group(rg).map_err(ctx)?;
    let mut rows = Vec::new();
    for (i, row) in group.get_row_iter(None).map_err(ctx)?.enumerate() {
        let row = row.map_err(|e| anyhow!("{}: row group {rg}, row {i}: {e}", path.display()))?;
        let mut cells = vec![Value::Null; columns.len()];
        for (name, field) in row.get_column_iter() {
            if let Some(k) = columns.iter().position(|c| c == name) {
                cells[k] = to_value(field);
            }
        }
        rows.push(Row {
            line: first_line + rows.len(),
            cells,
        });
    }
    Ok(rows)
}

fn read_inner(path: &Path) -> Result<Table> {
    let (reader, columns) = open(path)?;
    let mut rows = Vec::new();
    for rg in 0..reader.num_row_groups() {
        let group = read_group(&reader, path, &columns, rg, rows.len() + 1)?;
        rows.extend(group);
    }
    Ok(Table {
        path: path.to_path_buf(),
        format: DataFormat::Parquet,
        columns,
        rows,
    })
}

/// Writes columns of strings or numbers: a column whose values are all integers becomes INT64,
/// all numbers DOUBLE, anything else a UTF-8 string (nulls allowed in every column).
pub fn write(
    path: &Path,
    columns: &[String],
    rows: &[Vec<Value>],
    out: std::fs::File,
) -> Result<()> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Int,
        Double,
        Str,
    }
    let kinds: Vec<Kind> = (0..columns.len())
        .map(|c| {
            let vals = rows.iter().map(|r| &r[c]).filter(|v| !v.is_null());
            if vals.clone().all(|v| v.is_i64()) {
                Kind::Int
            } else if vals.clone().all(|v| v.is_number()) {
                Kind::Double
            } else {
                Kind::Str
            }
        })
        .collect();
    let fields: Vec<String> = columns
        .iter()
        .zip(&kinds)
        .map(|(c, k)| {
            let ty = match k {
                Kind::Int => "INT64",
                Kind::Double => "DOUBLE",
                Kind::Str => "BYTE_ARRAY",
            };
            let ann = if *k == Kind::Str { " (STRING)" } else { "" };
            format!(
                "OPTIONAL {ty} {}{ann};",
                c.replace(|ch: char| !ch.is_ascii_alphanumeric() && ch != '_', "_")
            )
        })
        .collect();
    let schema = Arc::new(
        parse_message_type(&format!("message rows {{ {} }}", fields.join(" ")))
            .context("parquet schema")?,
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let ctx = || format!("writing {}", path.display());
    let mut w = SerializedFileWriter::new(out, schema, props).with_context(ctx)?;
    let mut rg = w.next_row_group().with_context(ctx)?;
    for (c, kind) in kinds.iter().enumerate() {
        let mut col = rg
            .next_column()
            .with_context(ctx)?
            .context("parquet: missing column writer")?;
        let def: Vec<i16> = rows
            .iter()
            .map(|r| if r[c].is_null() { 0 } else { 1 })
            .collect();
        let present = rows.iter().map(|r| &r[c]).filter(|v| !v.is_null());
        match kind {
            Kind::Int => {
                let v: Vec<i64> = present.map(|x| x.as_i64().unwrap_or(0)).collect();
                col.typed::<Int64Type>()
                    .write_batch(&v, Some(&def), None)
                    .with_context(ctx)?;
            }
            Kind::Double => {
                let v: Vec<f64> = present.map(|x| x.as_f64().unwrap_or(f64::NAN)).collect();
                col.typed::<DoubleType>()
                    .write_batch(&v, Some(&def), None)
                    .with_context(ctx)?;
            }
            Kind::Str => {
                let v: Vec<ByteArray> = present
                    .map(|x| match x {
                        Value::String(s) => ByteArray::from(s.as_str()),
                        other => ByteArray::from(other.to_string().as_str()),
                    })
                    .collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&v, Some(&def), None)
                    .with_context(ctx)?;
            }
        }
        col.close().with_context(ctx)?;
    }
    rg.close().with_context(ctx)?;
    w.close().with_context(ctx)?;
    Ok(())
}
