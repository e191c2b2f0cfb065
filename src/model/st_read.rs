//! Reading a safetensors file tensor by tensor: the header first, then each tensor's bytes
//! straight into its own buffer, in file order. Loading then needs the weights' memory plus one
//! tensor's at most. candle's `safetensors::load` reads the whole file into memory and then copies
//! every tensor out of it, so its peak is twice the weights: all-mpnet-base-v2's 438 MB f32 file
//! peaked at 845 MiB. f32 tensors are read into `Var` storage (`Var::from_vec`, no copy), so the
//! parameter store (`Var::from_tensor` of a variable) takes them as they are; other dtypes go
//! through one tensor-sized byte buffer. Depends on candle and serde_json.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The format's cap on the JSON header (100 MB), as the safetensors crate has it.
const MAX_HEADER: u64 = 100_000_000;

/// One tensor's entry in the header.
struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

fn dtype_of(s: &str) -> Option<DType> {
    Some(match s {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "U32" => DType::U32,
        "U8" => DType::U8,
        "F8_E4M3" => DType::F8E4M3,
        _ => return None,
    })
}

/// The header's tensors, checked against each other and the file's length.
fn entries(header: &[u8], data_len: u64) -> Result<Vec<Entry>> {
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).context("the header is not a JSON object")?;
    let mut out = Vec::new();
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let field = |f: &str| {
            v.get(f)
                .with_context(|| format!("tensor {name}: no \"{f}\" in the header"))
        };
        let dt = field("dtype")?.as_str().unwrap_or_default();
        let Some(dtype) = dtype_of(dt) else {
            bail!("tensor {name}: dtype {dt:?} is not supported (F32, F16, BF16, F64, I64, I32, I16, U32, U8, F8_E4M3 are)");
        };
        let nums = |f: &str| -> Result<Vec<u64>> {
            field(f)?
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_u64()).collect::<Option<Vec<_>>>())
                .with_context(|| format!("tensor {name}: \"{f}\" is not a list of integers"))
        };
        let shape: Vec<usize> = nums("shape")?.into_iter().map(|d| d as usize).collect();
        let [start, end] = nums("data_offsets")?[..] else {
            bail!("tensor {name}: \"data_offsets\" must be [start, end]");
        };
        let bytes = shape
            .iter()
            .try_fold(dtype.size_in_bytes() as u64, |a, &d| {
                a.checked_mul(d as u64)
            });
        if end < start || end > data_len || bytes != Some(end - start) {
            bail!(
                "tensor {name}: data_offsets [{start}, {end}] do not hold a {dt} tensor of shape \
                 {shape:?} within the file's {data_len} data bytes (a truncated or damaged file?)"
            );
        }
        out.push(Entry {
            name,
            dtype,
            shape,
            start,
            end,
        });
    }
    out.sort_by_key(|e| e.start);
    // As the format requires (and the safetensors crate checks): the tensors tile the data
    // bytes, no gap, no overlap, nothing after the last.
    let mut at = 0;
    for e in &out {
        if e.start != at {
            bail!(
                "tensor {}: its data starts at byte {} where the previous tensor ended at {at}                  (overlapping or gapped data_offsets: a damaged file?)",
                e.name,
                e.start
            );
        }
        at = e.end;
    }
    if at != data_len {
        bail!("the tensors end at byte {at} of {data_len} data bytes (trailing bytes: a damaged file?)");
    }
    Ok(out)
}

/// Where a tensor left unread (`load_lazy`) keeps its rows: f32, `rows × width`, from byte
/// `offset` of the file.
#[derive(Debug, Clone)]
pub struct LazySource {
    pub path: std::path::PathBuf,
    pub offset: u64,
    pub rows: usize,
    pub width: usize,
}

/// Every tensor of the safetensors file at `path`, on the CPU.
pub fn load(path: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(load_lazy(path, &|_, _| false)?.0)
}

/// [`load`], except that the 2-D f32 tensors `lazy(name, shape)` picks are left unread: zeroed
/// buffers (untouched pages, not resident) whose rows `model::lazy_rows` reads on first use;
/// returned with where their rows are, by tensor id.
pub fn load_lazy(
    path: &Path,
    lazy: &dyn Fn(&str, &[usize]) -> bool,
) -> Result<(
    HashMap<String, Tensor>,
    Vec<(candle_core::TensorId, LazySource)>,
)> {
    let mut f = std::fs::File::open(path).context("opening the file")?;
    let len = f.metadata().context("reading its size")?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n)
        .context("reading the header length (the file is shorter than 8 bytes)")?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n + 8 > len {
        bail!("a header of {n} bytes in a file of {len} bytes (not a safetensors file?)");
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).context("reading the header")?;
    let base = 8 + n;
    let mut out = HashMap::new();
    let mut unread = Vec::new();
    for e in entries(&header, len - base)? {
        if e.dtype == DType::F32 && e.shape.len() == 2 && lazy(&e.name, &e.shape) {
            let v = vec![0f32; e.shape[0] * e.shape[1]];
            let t = Var::from_vec(v, e.shape.as_slice(), &Device::Cpu)?.into_inner();
            let src = LazySource {
                path: path.to_path_buf(),
                offset: base + e.start,
                rows: e.shape[0],
                width: e.shape[1],
            };
            unread.push((t.id(), src));
            out.insert(e.name, t);
            continue;
        }
        f.seek(SeekFrom::Start(base + e.start))
            .with_context(|| format!("seeking to tensor {}", e.name))?;
        let bytes = (e.end - e.start) as usize;
        let what = || format!("reading tensor {}", e.name);
        let t = if e.dtype == DType::F32 {
            let mut v = vec![0f32; bytes / 4];
            // SAFETY: the bytes of an f32 buffer; every bit pattern is a valid f32.
            let raw = unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), bytes) };
            f.read_exact(raw).with_context(what)?;
            if cfg!(target_endian = "big") {
                v.iter_mut()
                    .for_each(|x| *x = f32::from_bits(x.to_bits().swap_bytes()));
            }
            Var::from_vec(v, e.shape.as_slice(), &Device::Cpu)?.into_inner()
        } else {
            let mut raw = vec![0u8; bytes];
            f.read_exact(&mut raw).with_context(what)?;
            Tensor::from_raw_buffer(&raw, e.dtype, &e.shape, &Device::Cpu)?
        };
        out.insert(e.name, t);
    }
    Ok((out, unread))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(tensors: &[(&str, Tensor)], path: &Path) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    #[test]
    fn reads_what_candle_wrote_and_f32_comes_back_as_variables() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let a = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((4, 6))
            .unwrap();
        let b = Tensor::new(&[1.5f32, -2.25, 3.0], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let c = Tensor::new(&[7u32, 9, 11, 13], &Device::Cpu).unwrap();
        let d = Tensor::new(&[0.5f32, 0.25], &Device::Cpu)
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        save(
            &[
                ("a", a.clone()),
                ("b", b.clone()),
                ("c", c.clone()),
                ("d", d.clone()),
            ],
            &p,
        );
        let got = load(&p).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(
            got["a"].to_vec2::<f32>().unwrap(),
            a.to_vec2::<f32>().unwrap()
        );
        assert!(
            got["a"].is_variable(),
            "f32 tensors are read into Var storage"
        );
        assert_eq!(got["b"].dtype(), DType::F16);
        assert_eq!(
            got["b"]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![1.5, -2.25, 3.0]
        );
        assert_eq!(got["c"].to_vec1::<u32>().unwrap(), vec![7, 9, 11, 13]);
        assert_eq!(
            got["d"]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![0.5, 0.25]
        );
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        let a = Tensor::arange(0f32, 64., &Device::Cpu).unwrap();
        save(&[("weight", a)], &p);
        let bytes = std::fs::read(&p).unwrap();
        let err = |b: &[u8]| {
            std::fs::write(&p, b).unwrap();
            format!("{:#}", load(&p).unwrap_err())
        };
        let e = err(&bytes[..bytes.len() - 4]);
        assert!(
            e.contains("tensor weight") && e.contains("truncated"),
            "{e}"
        );
        let e = err(&[&bytes[..], &[0u8; 4]].concat());
        assert!(e.contains("trailing bytes"), "{e}");
        let e = err(&bytes[..5]);
        assert!(e.contains("shorter than 8 bytes"), "{e}");
        let mut big = bytes.clone();
        big[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = err(&big);
        assert!(e.contains("not a safetensors file"), "{e}");
        let text = String::from_utf8_lossy(&bytes).replace("\"F32\"", "\"F99\"");
        let e = err(text.as_bytes());
        assert!(e.contains("dtype \"F99\" is not supported"), "{e}");
    }
}
