//! Embedding precisions, with sentence-transformers 6.2's `quantize_embeddings` semantics:
//! [`Precision`] (float32, float16, int8, uint8, binary, ubinary), per-dimension int8/uint8
//! [`Ranges`] (computed, saved and loaded as JSON), [`quantize`] of row-major [`Embeddings`]
//! `[N, D]` into a typed [`Quantized`] `[N, cols]` (cols = D, or ⌈D/8⌉ for the packed binary
//! precisions), and the evaluator's way back to floats ([`Quantized::to_eval_floats`]).
//! Callers L2-normalise before quantizing (as sentence-transformers' evaluator does).
//! The ranges and their file are `quantize/ranges.rs`. Depends on `encode::Embeddings` and
//! `fsutil` only.

mod ranges;

pub use ranges::{Ranges, RangesFile};

use crate::encode::Embeddings;
use anyhow::{bail, Result};
use half::f16;
use serde::{Deserialize, Serialize};

/// The numeric type of exported / evaluated embeddings.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize, Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 4 bytes per dimension, the model's output.
    #[default]
    Float32,
    /// 2 bytes per dimension: IEEE half, rounded to nearest (numpy's `astype(float16)`).
    Float16,
    /// 1 byte per dimension: floor((x − min) / step) − 128, step = (max − min) / 255 per dimension.
    Int8,
    /// 1 byte per dimension: floor((x − min) / step), step = (max − min) / 255 per dimension.
    Uint8,
    /// 1 bit per dimension (x > 0), packed 8 per byte MSB first, minus 128 as int8.
    Binary,
    /// 1 bit per dimension (x > 0), packed 8 per byte MSB first, as uint8.
    Ubinary,
}

impl Precision {
    pub const ALL: [Precision; 6] = [
        Precision::Float32,
        Precision::Float16,
        Precision::Int8,
        Precision::Uint8,
        Precision::Binary,
        Precision::Ubinary,
    ];

    /// The name on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Float32 => "float32",
            Precision::Float16 => "float16",
            Precision::Int8 => "int8",
            Precision::Uint8 => "uint8",
            Precision::Binary => "binary",
            Precision::Ubinary => "ubinary",
        }
    }

    /// int8 and uint8 need per-dimension [`Ranges`].
    pub fn uses_ranges(self) -> bool {
        matches!(self, Precision::Int8 | Precision::Uint8)
    }

    /// Values per embedding of dimension `dim`: `dim`, or ⌈dim/8⌉ bytes for binary/ubinary.
    pub fn columns(self, dim: usize) -> usize {
        match self {
            Precision::Binary | Precision::Ubinary => dim.div_ceil(8),
            _ => dim,
        }
    }

    /// Bytes per value: 4, 2 or 1.
    pub fn value_bytes(self) -> usize {
        match self {
            Precision::Float32 => 4,
            Precision::Float16 => 2,
            _ => 1,
        }
    }

    /// Bytes per embedding of dimension `dim`.
    pub fn bytes_per_embedding(self, dim: usize) -> usize {
        self.columns(dim) * self.value_bytes()
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Typed values of quantized embeddings, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I8(Vec<i8>),
    U8(Vec<u8>),
}

/// Embeddings in one [`Precision`]: `rows × cols` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    pub precision: Precision,
    pub rows: usize,
    /// Values per row: the dimension, or ⌈dim/8⌉ bytes for binary/ubinary.
    pub cols: usize,
    pub values: Values,
}

/// Borrowed typed values, row-major: what the `embed` writers take.
#[derive(Debug, Clone, Copy)]
pub enum ValuesRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I8(&'a [i8]),
    U8(&'a [u8]),
}

impl ValuesRef<'_> {
    /// NumPy `descr`: `<f4`, `<f2`, `|i1` or `|u1`.
    pub fn npy_descr(self) -> &'static str {
        match self {
            ValuesRef::F32(_) => "<f4",
            ValuesRef::F16(_) => "<f2",
            ValuesRef::I8(_) => "|i1",
            ValuesRef::U8(_) => "|u1",
        }
    }

    pub fn safetensors_dtype(self) -> safetensors::Dtype {
        match self {
            ValuesRef::F32(_) => safetensors::Dtype::F32,
            ValuesRef::F16(_) => safetensors::Dtype::F16,
            ValuesRef::I8(_) => safetensors::Dtype::I8,
            ValuesRef::U8(_) => safetensors::Dtype::U8,
        }
    }

    /// How many values.
    pub fn len(self) -> usize {
        match self {
            ValuesRef::F32(v) => v.len(),
            ValuesRef::F16(v) => v.len(),
            ValuesRef::I8(v) => v.len(),
            ValuesRef::U8(v) => v.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Values `range`.
    pub fn slice(self, range: std::ops::Range<usize>) -> Self {
        match self {
            ValuesRef::F32(v) => ValuesRef::F32(&v[range]),
            ValuesRef::F16(v) => ValuesRef::F16(&v[range]),
            ValuesRef::I8(v) => ValuesRef::I8(&v[range]),
            ValuesRef::U8(v) => ValuesRef::U8(&v[range]),
        }
    }

    /// All values as little-endian bytes.
    pub fn le_bytes(self) -> Vec<u8> {
        match self {
            ValuesRef::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ValuesRef::F16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ValuesRef::I8(v) => v.iter().map(|&x| x as u8).collect(),
            ValuesRef::U8(v) => v.to_vec(),
        }
    }

    /// Values `range` as JSON numbers: floats (f16 widened exactly to f32) or integers.
    pub fn json(self, range: std::ops::Range<usize>) -> serde_json::Value {
        match self {
            ValuesRef::F32(v) => serde_json::json!(&v[range]),
            ValuesRef::F16(v) => {
                serde_json::json!(v[range].iter().map(|x| x.to_f32()).collect::<Vec<_>>())
            }
            ValuesRef::I8(v) => serde_json::json!(&v[range]),
            ValuesRef::U8(v) => serde_json::json!(&v[range]),
        }
    }
}

/// Why int8/uint8 of one text needs given ranges (sentence-transformers refuses it too).
pub const SINGLE_ROW: &str = "cannot compute int8/uint8 ranges from a single embedding: pass \
    --calibration (texts like the ones embedded) or --ranges (a saved ranges file)";

/// Quantizes `emb` `[N, D]` to `precision`. int8/uint8 use `ranges` when given, else the
/// ranges of `emb` itself (an error for a single row, as in sentence-transformers).
pub fn quantize(
    emb: &Embeddings,
    precision: Precision,
    ranges: Option<&Ranges>,
) -> Result<Quantized> {
    let (rows, dim) = (emb.len(), emb.dim);
    let values = match precision {
        Precision::Float32 => Values::F32(emb.data.clone()),
        Precision::Float16 => Values::F16(emb.data.iter().map(|&x| f16::from_f32(x)).collect()),
        Precision::Int8 | Precision::Uint8 => {
            let own;
            let r = match ranges {
                Some(r) => r,
                None if rows == 0 => {
                    own = Ranges {
                        min: vec![0.0; dim],
                        max: vec![0.0; dim],
                    };
                    &own
                }
                None if rows == 1 => bail!(SINGLE_ROW),
                None => {
                    own = Ranges::from_embeddings(emb)?;
                    &own
                }
            };
            if r.dim() != dim {
                bail!("ranges have dimension {} but the embeddings {dim}", r.dim());
            }
            let q = scalar_buckets(&emb.data, r);
            if precision == Precision::Uint8 {
                Values::U8(q)
            } else {
                Values::I8(q.into_iter().map(|b| (b as i16 - 128) as i8).collect())
            }
        }
        Precision::Binary | Precision::Ubinary => {
            let packed = pack_bits(&emb.data, rows, dim);
            if precision == Precision::Ubinary {
                Values::U8(packed)
            } else {
                Values::I8(packed.into_iter().map(|b| (b as i16 - 128) as i8).collect())
            }
        }
    };
    Ok(Quantized {
        precision,
        rows,
        cols: precision.columns(dim),
        values,
    })
}

/// `clip(floor((x − min) / step), 0, 255)` with `step = (max − min) / 255` (1 where that is
/// 0), every operation in f32 as numpy does on float32 arrays.
fn scalar_buckets(data: &[f32], r: &Ranges) -> Vec<u8> {
    let dim = r.dim().max(1);
    let steps: Vec<f32> = r
        .min
        .iter()
        .zip(&r.max)
        .map(|(&lo, &hi)| {
            let s = (hi - lo) / 255.0f32;
            if s == 0.0 {
                1.0
            } else {
                s
            }
        })
        .collect();
    data.iter()
        .enumerate()
        .map(|(i, &x)| {
            let j = i % dim;
            ((x - r.min[j]) / steps[j]).floor().clamp(0.0, 255.0) as u8
        })
        .collect()
}

/// numpy's `packbits(x > 0, axis=-1)`: 8 dimensions per byte, the first in the most significant
/// bit; the last byte of a row is padded with zero bits.
fn pack_bits(data: &[f32], rows: usize, dim: usize) -> Vec<u8> {
    let cols = dim.div_ceil(8);
    let mut out = vec![0u8; rows * cols];
    for i in 0..rows {
        for (j, &x) in data[i * dim..(i + 1) * dim].iter().enumerate() {
            if x > 0.0 {
                out[i * cols + j / 8] |= 0x80 >> (j % 8);
            }
        }
    }
    out
}

impl Quantized {
    /// float32 embeddings as they are (no copy).
    pub fn from_f32(emb: Embeddings) -> Self {
        Quantized {
            precision: Precision::Float32,
            rows: emb.len(),
            cols: emb.dim,
            values: Values::F32(emb.data),
        }
    }

    /// The values, borrowed (for the writers).
    pub fn view(&self) -> ValuesRef<'_> {
        match &self.values {
            Values::F32(v) => ValuesRef::F32(v),
            Values::F16(v) => ValuesRef::F16(v),
            Values::I8(v) => ValuesRef::I8(v),
            Values::U8(v) => ValuesRef::U8(v),
        }
    }

    /// The float values sentence-transformers' EmbeddingSimilarityEvaluator scores: integers
    /// cast to float; binary/ubinary unpacked to 0/1 per bit (binary after adding 128 back), so
    /// the dimension is `cols × 8` (padding bits are 0 on every row and change no score).
    pub fn to_eval_floats(&self) -> Embeddings {
        let (data, dim) = match (&self.values, self.precision) {
            (Values::I8(v), Precision::Binary) => (
                unpack_bits(v.iter().map(|&b| (b as i16 + 128) as u8)),
                self.cols * 8,
            ),
            (Values::U8(v), Precision::Ubinary) => (unpack_bits(v.iter().copied()), self.cols * 8),
            (Values::F32(v), _) => (v.clone(), self.cols),
            (Values::F16(v), _) => (v.iter().map(|x| x.to_f32()).collect(), self.cols),
            (Values::I8(v), _) => (v.iter().map(|&x| x as f32).collect(), self.cols),
            (Values::U8(v), _) => (v.iter().map(|&x| x as f32).collect(), self.cols),
        };
        Embeddings {
            data,
            dim,
            truncated: 0,
        }
    }
}

/// numpy's `unpackbits` of bytes into 0.0/1.0, most significant bit first.
fn unpack_bits(bytes: impl Iterator<Item = u8>) -> Vec<f32> {
    bytes
        .flat_map(|b| (0..8).map(move |k| ((b >> (7 - k)) & 1) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(rows: &[&[f32]]) -> Embeddings {
        Embeddings {
            data: rows.iter().flat_map(|r| r.iter().copied()).collect(),
            dim: rows[0].len(),
            truncated: 0,
        }
    }

    #[test]
    fn uint8_and_int8_floor_clip_and_zero_step() {
        // dim 0: range [0, 2.55] → step 0.01; dim 1: constant → step 1; dim 2: range [-1, 1].
        let e = emb(&[&[0.0, 5.0, -1.0], &[2.55, 5.0, 1.0], &[0.0199, 5.0, 0.0]]);
        let q = quantize(&e, Precision::Uint8, None).unwrap();
        assert_eq!((q.rows, q.cols), (3, 3));
        // 0.0199 / 0.01 = 1.99 → floor 1 (round would give 2); the constant dimension gives 0;
        // 0 in [-1, 1]: 1 / (2/255) = 127.5 → 127. The maximum: f32 2.55/255 rounds down, so
        // 2.55 / step = 255.00… → 255; f32 2/255 rounds up, so 2 / step = 254.99… → 254.
        // (numpy, quantize_embeddings: the same numbers.)
        assert_eq!(q.values, Values::U8(vec![0, 0, 0, 255, 0, 254, 1, 0, 127]));
        let q = quantize(&e, Precision::Int8, None).unwrap();
        assert_eq!(
            q.values,
            Values::I8(vec![-128, -128, -128, 127, -128, 126, -127, -128, -1])
        );
    }

    #[test]
    fn given_ranges_clip_values_outside() {
        let r = Ranges {
            min: vec![0.0, 0.0],
            max: vec![1.0, 1.0],
        };
        let e = emb(&[&[-0.5, 2.0], &[0.5, 1.0]]);
        let q = quantize(&e, Precision::Uint8, Some(&r)).unwrap();
        // step = f32(1/255), a hair above 1/255: 0.5 → 127.49… → 127; 1.0 → 254.99… → 254
        // (floor, not round); −0.5 → 0 and 2.0 → 255 (clipped).
        assert_eq!(q.values, Values::U8(vec![0, 255, 127, 254]));
        let bad = Ranges {
            min: vec![0.0],
            max: vec![1.0],
        };
        assert!(quantize(&e, Precision::Int8, Some(&bad)).is_err());
    }

    #[test]
    fn single_row_needs_given_ranges() {
        let e = emb(&[&[0.1, 0.2]]);
        let err = quantize(&e, Precision::Int8, None).unwrap_err().to_string();
        assert!(err.contains("single embedding"), "{err}");
        let empty = Embeddings {
            data: vec![],
            dim: 2,
            truncated: 0,
        };
        let q = quantize(&empty, Precision::Int8, None).unwrap();
        assert_eq!((q.rows, q.cols, q.values), (0, 2, Values::I8(vec![])));
    }

    #[test]
    fn packbits_msb_first_and_padding() {
        // 10 dimensions → 2 bytes; bits: 1,0,0,0,0,0,0,1 | 1,1,(pad ×6).
        let e = emb(&[&[0.3, -1.0, 0.0, -0.1, -0.2, -0.3, -0.4, 0.5, 0.1, 0.2]]);
        let q = quantize(&e, Precision::Ubinary, None).unwrap();
        assert_eq!((q.rows, q.cols), (1, 2));
        assert_eq!(q.values, Values::U8(vec![0b1000_0001, 0b1100_0000]));
        let q = quantize(&e, Precision::Binary, None).unwrap();
        // 129 − 128 = 1; 192 − 128 = 64.
        assert_eq!(q.values, Values::I8(vec![1, 64]));
        let back = q.to_eval_floats();
        assert_eq!(back.dim, 16);
        assert_eq!(
            back.data,
            vec![1., 0., 0., 0., 0., 0., 0., 1., 1., 1., 0., 0., 0., 0., 0., 0.]
        );
        // All-negative row: ubinary 0, binary −128.
        let q = quantize(&emb(&[&[-1.0; 8]]), Precision::Binary, None).unwrap();
        assert_eq!(q.values, Values::I8(vec![-128]));
    }

    #[test]
    fn float16_rounds_to_nearest_and_eval_floats_cast() {
        let e = emb(&[&[0.1, 1.0 / 3.0]]);
        let q = quantize(&e, Precision::Float16, None).unwrap();
        let f = q.to_eval_floats();
        // numpy: np.float32(np.float16(0.1)) = 0.099975586, np.float16(1/3) = 0.33325195
        assert_eq!(f.data, vec![0.099975586f32, 0.33325195]);
        assert_eq!(q.view().npy_descr(), "<f2");
        assert_eq!(q.view().le_bytes(), vec![0x66, 0x2e, 0x55, 0x35]);
        let q = quantize(&emb(&[&[0.0, 1.0], &[1.0, 0.0]]), Precision::Int8, None).unwrap();
        assert_eq!(q.to_eval_floats().data, vec![-128.0, 126.0, 126.0, -128.0]);
    }

    #[test]
    fn sizes_per_precision() {
        let bytes: Vec<usize> = Precision::ALL
            .iter()
            .map(|p| p.bytes_per_embedding(384))
            .collect();
        assert_eq!(bytes, vec![1536, 768, 384, 384, 48, 48]);
        assert_eq!(Precision::Binary.columns(385), 49);
    }

    #[test]
    fn ranges_roundtrip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        let r = Ranges::from_embeddings(&emb(&[&[0.1, -2.0], &[-0.3, 7.5]])).unwrap();
        assert_eq!(r.min, vec![-0.3, -2.0]);
        assert_eq!(r.max, vec![0.1, 7.5]);
        r.save(&p, Precision::Int8, "calib.txt").unwrap();
        let (back, f) = Ranges::load(&p).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            (f.precision, f.dim, f.calibration.as_deref()),
            (Some(Precision::Int8), Some(2), Some("calib.txt"))
        );
        // Only min and max are needed.
        std::fs::write(&p, r#"{"min": [-1, 0], "max": [1, 0]}"#).unwrap();
        assert_eq!(Ranges::load(&p).unwrap().0.max, vec![1.0, 0.0]);
        std::fs::write(&p, "{\"min\": [0]").unwrap();
        let err = format!("{:#}", Ranges::load(&p).unwrap_err());
        assert!(
            err.contains("r.json") && err.contains("not a ranges file"),
            "{err}"
        );
        std::fs::write(
            &p,
            r#"{"precision":"int8","dim":2,"min":[0,0],"max":[1],"calibration":"x"}"#,
        )
        .unwrap();
        assert!(format!("{:#}", Ranges::load(&p).unwrap_err()).contains("\"dim\" is 2"));
    }
}
