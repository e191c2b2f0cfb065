//! Embedding tables read a row at a time, for inference on the CPU: the word-embedding table
//! (all-mpnet-base-v2: 30,527 × 768 f32, 94 MB) is allocated zeroed — pages the kernel hands out
//! only when written — and a row is read from the safetensors file the first time a batch uses
//! its token. Texts use a fraction of a vocabulary, so the resident table is that fraction
//! (`embed` and `eval` of STS-B with all-mpnet-base-v2: see BENCHMARKS.md), and the results are
//! the same bytes as an eager load. Saving or training first reads every row
//! ([`LazyRows::ensure_all`]). Depends on candle and `st_read::LazySource`.

use super::st_read::LazySource;
use candle_core::{CpuStorage, InplaceOp1, Layout, Var};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// A table and where its rows are in the file.
pub struct LazyRows {
    var: Var,
    file: std::fs::File,
    src: LazySource,
    /// Which rows hold their file values.
    loaded: Mutex<Vec<bool>>,
}

impl LazyRows {
    /// The table `var` (zeroed, `[rows, width]` f32) whose values are at `src`.
    pub fn new(var: Var, src: LazySource) -> anyhow::Result<Self> {
        use anyhow::Context;
        let file = std::fs::File::open(&src.path)
            .with_context(|| format!("opening {}", src.path.display()))?;
        if var.dims() != [src.rows, src.width] {
            anyhow::bail!(
                "a lazily read table of {:?} for [{}, {}]",
                var.dims(),
                src.rows,
                src.width
            );
        }
        Ok(Self {
            var,
            file,
            loaded: Mutex::new(vec![false; src.rows]),
            src,
        })
    }

    /// The table this reads into.
    pub fn var(&self) -> &Var {
        &self.var
    }

    /// Reads the rows of `ids` that were not read yet (ids past the table are left to the
    /// gather, which reports them).
    pub fn ensure(&self, ids: &[u32]) -> candle_core::Result<()> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let mut need: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&i| loaded.get(i as usize) == Some(&false))
            .collect();
        if need.is_empty() {
            return Ok(());
        }
        need.sort_unstable();
        need.dedup();
        self.var.as_tensor().inplace_op1(&FillRows {
            file: &self.file,
            src: &self.src,
            rows: &need,
        })?;
        for i in need {
            loaded[i as usize] = true;
        }
        Ok(())
    }

    /// Reads every row not read yet (before the table is saved or trained).
    pub fn ensure_all(&self) -> candle_core::Result<()> {
        let all: Vec<u32> = (0..self.src.rows as u32).collect();
        self.ensure(&all)
    }

    /// How many rows were read so far.
    pub fn rows_read(&self) -> usize {
        let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        loaded.iter().filter(|&&l| l).count()
    }
}

/// Reads `rows` of the table from the file into its storage.
struct FillRows<'a> {
    file: &'a std::fs::File,
    src: &'a LazySource,
    rows: &'a [u32],
}

impl InplaceOp1 for FillRows<'_> {
    fn name(&self) -> &'static str {
        "embtune-lazy-rows"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(v) = s else {
            candle_core::bail!("lazy rows: the table is not f32");
        };
        let Some((a, b)) = l.contiguous_offsets() else {
            candle_core::bail!("lazy rows: the table is not contiguous");
        };
        let w = self.src.width;
        let table = &mut v[a..b];
        for &r in self.rows {
            let row = &mut table[r as usize * w..][..w];
            // SAFETY: the bytes of an f32 buffer; every bit pattern is a valid f32.
            let raw =
                unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr().cast::<u8>(), w * 4) };
            let at = self.src.offset + (r as u64) * (w as u64) * 4;
            self.file.read_exact_at(raw, at).map_err(|e| {
                candle_core::Error::Msg(format!(
                    "{}: reading row {r} of a lazily read table: {e}",
                    self.src.path.display()
                ))
            })?;
            if cfg!(target_endian = "big") {
                row.iter_mut()
                    .for_each(|x| *x = f32::from_bits(x.to_bits().swap_bytes()));
            }
        }
        Ok(())
    }
}
