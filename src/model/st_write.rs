//! Writing safetensors files: the header first, then each tensor's bytes straight from where
//! they are (a tensor's storage, or a slice such as the optimizer's moments), so memory stays at
//! one small buffer instead of a copy of the whole file; `{"format":"pt"}` metadata, as
//! transformers requires. Depends on candle, safetensors, serde_json and `ops::cpu` (its data
//! access).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::path::Path;

/// Writes tensors (HF names) as safetensors with `{"format":"pt"}` metadata, which
/// transformers requires to load the file. Streamed ([`save_entries`]): no whole-file buffer.
pub fn save_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let entries: Vec<(&str, SaveData)> = tensors
        .iter()
        .map(|(n, t)| (n.as_str(), SaveData::Tensor(t)))
        .collect();
    save_entries(&entries, path)
}

/// What one tensor of a file being written holds.
pub enum SaveData<'a> {
    /// A tensor on any device (f32 CPU data is written straight from its storage).
    Tensor(&'a Tensor),
    /// f32 values of `shape`, as they are (the optimizer's moments, without a copy).
    F32(&'a [f32], Vec<usize>),
}

impl SaveData<'_> {
    fn dtype(&self) -> DType {
        match self {
            SaveData::Tensor(t) => t.dtype(),
            SaveData::F32(..) => DType::F32,
        }
    }
    fn shape(&self) -> Vec<usize> {
        match self {
            SaveData::Tensor(t) => t.dims().to_vec(),
            SaveData::F32(_, s) => s.clone(),
        }
    }
    fn byte_len(&self) -> usize {
        self.shape().iter().product::<usize>() * self.dtype().size_in_bytes()
    }
    /// Writes the little-endian bytes.
    fn write(&self, w: &mut impl std::io::Write) -> Result<()> {
        match self {
            SaveData::F32(v, _) => write_f32(w, v),
            SaveData::Tensor(t) if t.dtype() == DType::F32 && t.device().is_cpu() => {
                crate::ops::cpu::with_data(&[t], "saving", |d| Ok(write_f32(w, d[0])))??;
                Ok(())
            }
            SaveData::Tensor(t) => {
                let t = t.to_device(&Device::Cpu)?.contiguous()?;
                w.write_all(&safetensors::View::data(&t))?;
                Ok(())
            }
        }
    }
}

/// f32 values as little-endian bytes, through a small buffer.
fn write_f32(w: &mut impl std::io::Write, v: &[f32]) -> Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    for c in v.chunks(1 << 14) {
        buf.clear();
        c.iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()));
        w.write_all(&buf)?;
    }
    Ok(())
}

/// The safetensors dtype name of `d` (`"F32"`, `"BF16"`, …).
fn dtype_name(d: DType) -> Result<String> {
    let probe = Tensor::zeros(1, d, &Device::Cpu)?;
    let v = serde_json::to_value(safetensors::View::dtype(&probe))?;
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no safetensors name for {d:?}"))
}

/// Writes `entries` as a safetensors file with `{"format":"pt"}` metadata, tensor by tensor
/// (the header first, then each tensor's bytes straight from where they are: memory stays at
/// one small buffer instead of a copy of the whole file), then fsyncs it. Tensors are laid out
/// as the safetensors crate orders them: larger dtypes first, then by name.
pub fn save_entries(entries: &[(&str, SaveData)], path: &Path) -> Result<()> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (da, db) = (entries[a].1.dtype(), entries[b].1.dtype());
        db.size_in_bytes()
            .cmp(&da.size_in_bytes())
            .then(entries[a].0.cmp(entries[b].0))
    });
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for &i in &order {
        let (name, data) = &entries[i];
        let end = offset + data.byte_len();
        header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": dtype_name(data.dtype())?,
                "shape": data.shape(),
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header))?;
    // The data starts 8-byte aligned (the header is padded with spaces, as the format allows).
    while (8 + head.len()) % 8 != 0 {
        head.push(b' ');
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let written = (|| -> Result<()> {
        use std::io::Write;
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        for &i in &order {
            entries[i].1.write(&mut w)?;
        }
        w.flush()?;
        Ok(())
    })();
    written.with_context(|| format!("writing {}", path.display()))?;
    let file = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.error()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed file reads back through the safetensors crate with every tensor as written
    /// (f32 from a tensor and from a slice, bf16 and i64 through their bytes), its data 8-byte
    /// aligned and laid out as the crate lays out its own files.
    #[test]
    fn streamed_files_read_back_as_written() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 12.0, &dev)
            .unwrap()
            .reshape((3, 4))
            .unwrap();
        let t = Tensor::arange(0f32, 6.0, &dev)
            .unwrap()
            .reshape((2, 3))
            .unwrap()
            .t()
            .unwrap();
        let h = Tensor::new(&[1.5f32, -2.0, 0.25], &dev)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let i = Tensor::new(&[7i64, -9], &dev).unwrap();
        let raw: Vec<f32> = (0..5).map(|x| x as f32 * 0.5).collect();
        let entries = [
            ("b.weight", SaveData::Tensor(&a)),
            ("a.transposed", SaveData::Tensor(&t)),
            ("half", SaveData::Tensor(&h)),
            ("ids", SaveData::Tensor(&i)),
            ("m.x", SaveData::F32(&raw, vec![5])),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        save_entries(&entries, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + n) % 8, 0, "data not 8-byte aligned");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let meta = safetensors::SafeTensors::read_metadata(&bytes).unwrap().1;
        assert_eq!(
            meta.metadata()
                .as_ref()
                .and_then(|m| m.get("format"))
                .map(|s| s.as_str()),
            Some("pt")
        );
        let back = candle_core::safetensors::load(&path, &dev).unwrap();
        let v = |t: &Tensor| {
            t.to_dtype(DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        for (name, want) in [
            ("b.weight", &a),
            ("a.transposed", &t),
            ("half", &h),
            ("ids", &i),
        ] {
            assert_eq!(back[name].dims(), want.dims(), "{name}");
            assert_eq!(back[name].dtype(), want.dtype(), "{name}");
            assert_eq!(v(&back[name]), v(want), "{name}");
        }
        assert_eq!(back["m.x"].to_vec1::<f32>().unwrap(), raw);
        // The crate's order: larger dtypes first, then by name.
        let mut by_offset: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (v.data().as_ptr() as usize, n))
            .collect();
        by_offset.sort();
        let order: Vec<String> = by_offset.into_iter().map(|(_, n)| n).collect();
        assert_eq!(order, ["ids", "a.transposed", "b.weight", "m.x", "half"]);
    }
}
