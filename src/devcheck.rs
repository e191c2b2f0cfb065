//! `embtune check-device`: runs the same model on the CPU and on another device (CUDA) and
//! compares what comes out — embeddings in f32, bf16 and with TF32 matmuls, every loss and its
//! gradients on a fixed batch, seeded dropout (and, with embtune's kernels, the CPU's masks),
//! the gradient norm and three optimizer steps through the training loop's clip + step — each
//! against a tolerance; and on the device alone, packed against padded passes (`packing`). The
//! CPU is the reference (its numbers match sentence-transformers, tests/it/parity).

mod packing;

use crate::data::{read_table, DataFormat, ReadOptions};
use crate::device::ComputeSpec;
use crate::encode::{encode, EncodeOptions};
use crate::loss::{self, LossKind, LossParams};
use crate::model::{ModelSpec, SentenceEncoder};
use crate::train::optimizer::{AdamW, AdamWConfig};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::Serialize;
use std::path::Path;

/// One comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// Max abs difference (or 1.0/0.0 for yes/no checks).
    pub value: f64,
    pub tolerance: f64,
    pub pass: bool,
    pub note: String,
}

impl Check {
    fn diff(name: impl Into<String>, value: f64, tolerance: f64, note: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value,
            tolerance,
            pass: value.is_finite() && value <= tolerance,
            note: note.into(),
        }
    }
}

/// Rows of STS-B-format data used by the checks: (sentence1, sentence2, score/5).
struct Rows {
    a: Vec<String>,
    b: Vec<String>,
    score: Vec<f32>,
}

fn read_rows(path: &Path, n: usize) -> Result<Rows> {
    let t = read_table(path, Some(DataFormat::Stsb), &ReadOptions::default())?;
    let mut r = Rows {
        a: Vec::new(),
        b: Vec::new(),
        score: Vec::new(),
    };
    let (c1, c2, cs) = (
        t.column("sentence1")?,
        t.column("sentence2")?,
        t.column("score")?,
    );
    for row in t.rows.iter().take(n) {
        r.a.push(t.text(row, c1)?.into_owned());
        r.b.push(t.text(row, c2)?.into_owned());
        r.score.push((t.number(row, cs)? / 5.0) as f32);
    }
    if r.a.len() < 8 {
        bail!(
            "{}: need at least 8 rows for the device check",
            path.display()
        );
    }
    Ok(r)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(
            0.0,
            |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
        )
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()?)
}

/// Runs every check of `spec`'s model on `spec.compute`'s device against the CPU, with
/// sentences from an STS-B-format file. Returns all rows (failed ones included).
pub fn run(spec: &ModelSpec, stsb: &Path) -> Result<Vec<Check>> {
    let dev = crate::device::resolve(&spec.compute)?;
    if dev.is_cpu() {
        bail!("check-device compares a device against the CPU: pass --device cuda");
    }
    compare(spec, &dev, stsb)
}

/// The checks of [`run`] with `dev` as the device under test. With the CPU as `dev` (this
/// crate's tests), the model under test takes the CUDA path's choice of ops on the CPU, so the
/// GPU path's wiring — fused LayerNorm/softmax and sublayer ops with their backwards, hash dropout masks in the same
/// order as the CPU fast path's — is checked without a GPU.
pub fn compare(spec: &ModelSpec, dev: &Device, stsb: &Path) -> Result<Vec<Check>> {
    let dev = dev.clone();
    let rows = read_rows(stsb, 256)?;
    let cpu_spec = ModelSpec {
        compute: ComputeSpec {
            device: crate::device::DeviceChoice::Cpu,
            ..Default::default()
        },
        ..spec.clone()
    };
    let mut cpu = SentenceEncoder::load(&cpu_spec, &Device::Cpu)?;
    let mut gpu = SentenceEncoder::load(&cpu_spec, &dev)?;
    if dev.is_cpu() {
        // CPU against CPU: the device under test runs the CUDA path's ops (fused LayerNorm,
        // softmax, GELU, hash dropout on composed layers) against the CPU fast path.
        gpu.set_exec(crate::ops::Exec::CudaFused);
    }
    let mut out = Vec::new();

    // Embeddings.
    let texts: Vec<&str> = rows.a.iter().chain(&rows.b).map(|s| s.as_str()).collect();
    let opts = EncodeOptions {
        batch_size: 64,
        max_tokens: None,
        normalize: false,
        progress: false,
        prompt: None,
        truncate_dim: None,
        shard: Default::default(),
    };
    let e_cpu = encode(&cpu, &texts, &opts)?;
    let e_gpu = encode(&gpu, &texts, &opts)?;
    let n = texts.len();
    out.push(Check::diff(
        "embeddings f32",
        max_abs_diff(&e_cpu.data, &e_gpu.data),
        1e-4,
        format!("{n} STS-B sentences, max abs diff vs CPU"),
    ));
    candle_core::cuda::set_gemm_reduced_precision_f32(true);
    let e_tf32 = encode(&gpu, &texts, &opts)?;
    candle_core::cuda::set_gemm_reduced_precision_f32(spec.compute.tf32);
    out.push(Check::diff(
        "embeddings f32 + TF32 matmul",
        max_abs_diff(&e_cpu.data, &e_tf32.data),
        1e-2,
        "max abs diff vs CPU f32",
    ));
    for (dt, name) in [(DType::BF16, "bf16"), (DType::F16, "f16")] {
        gpu.set_compute_dtype(dt);
        let e = encode(&gpu, &texts, &opts)?;
        out.push(Check::diff(
            format!("embeddings {name}"),
            max_abs_diff(&e_cpu.data, &e.data),
            1e-2,
            "mixed precision, max abs diff vs CPU f32",
        ));
    }
    gpu.set_compute_dtype(DType::F32);

    // Losses and gradients on a fixed batch, dropout off.
    cpu.set_dropout(0.0);
    gpu.set_dropout(0.0);
    let b = 32.min(rows.a.len() - 1);
    let third: Vec<String> = (0..b).map(|i| rows.b[i + 1].clone()).collect();
    for kind in [
        LossKind::Cosent,
        LossKind::Angle,
        LossKind::Cosine,
        LossKind::Mnrl,
        LossKind::Contrastive,
        LossKind::OnlineContrastive,
        LossKind::Triplet,
    ] {
        let l = loss::build(kind, &LossParams::default());
        let mut cols: Vec<&[String]> = vec![&rows.a[..b], &rows.b[..b]];
        if kind == LossKind::Triplet {
            cols.push(&third);
        }
        let labels: Option<Vec<f32>> = match kind {
            LossKind::Cosent | LossKind::Angle | LossKind::Cosine => Some(rows.score[..b].to_vec()),
            LossKind::Contrastive | LossKind::OnlineContrastive => Some(
                rows.score[..b]
                    .iter()
                    .map(|&s| if s >= 0.6 { 1.0 } else { 0.0 })
                    .collect(),
            ),
            _ => None,
        };
        let (lc, gc) = loss_and_grads(&cpu, &*l, &cols, labels.as_deref())?;
        let (lg, gg) = loss_and_grads(&gpu, &*l, &cols, labels.as_deref())?;
        let name = format!("{kind:?}").to_lowercase();
        out.push(Check::diff(
            format!("loss {name}"),
            (lc - lg).abs(),
            1e-4,
            format!("batch {b}: cpu {lc:.6}, device {lg:.6}"),
        ));
        let gmax = gc
            .iter()
            .map(|g| g.iter().fold(0f32, |m, x| m.max(x.abs())))
            .fold(0f32, f32::max);
        let gd = gc
            .iter()
            .zip(&gg)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0.0, f64::max);
        out.push(Check::diff(
            format!("gradients {name}"),
            gd,
            1e-4,
            format!("{} tensors, max |grad| {gmax:.3e}", gc.len()),
        ));
    }

    // Seeded dropout on the device: same seed → same output, other seed → different output.
    gpu.set_dropout(0.1);
    let batch = gpu
        .tokenizer
        .encode(&texts[..b], gpu.device())
        .context("tokenizing the dropout batch")?;
    let mut run_seed = |s: u64| -> Result<Vec<f32>> {
        gpu.seed_dropout(s);
        flat(&gpu.embed_batch(&batch, true)?)
    };
    let (x1, x2, x3) = (run_seed(7)?, run_seed(7)?, run_seed(8)?);
    let same = max_abs_diff(&x1, &x2);
    let other = max_abs_diff(&x1, &x3);
    out.push(Check {
        name: "dropout seeded on device".into(),
        value: same,
        tolerance: 0.0,
        pass: same == 0.0 && other > 1e-3,
        note: format!("same seed: max diff {same:.1e}; another seed: {other:.3e}"),
    });
    // embtune's kernels draw the masks as the CPU does (same hash, seeds, element order): the
    // same seed gives the same dropout on both devices (candle's composed path uses curand).
    if crate::ops::exec::cuda_kernels_enabled() {
        cpu.set_dropout(0.1);
        cpu.seed_dropout(7);
        let cb = cpu.tokenizer.encode(&texts[..b], cpu.device())?;
        let xc = flat(&cpu.embed_batch(&cb, true)?)?;
        out.push(Check::diff(
            "dropout masks CPU = device",
            max_abs_diff(&xc, &x1),
            1e-4,
            format!("p 0.1, seed 7, train-mode embeddings; another seed differs by {other:.3e}"),
        ));
    }
    cpu.set_dropout(0.0);
    gpu.set_dropout(0.0);
    out.extend(packing::checks(
        &mut gpu,
        [&rows.a[..b], &rows.b[..b]],
        &rows.score[..b],
    )?);

    // Three optimizer steps (CoSENT, clipping on) from the same start on both devices, through
    // the training loop's own clip + step (on a GPU: norm and factor on the device).
    let l = loss::build(LossKind::Cosent, &LossParams::default());
    let cols: Vec<&[String]> = vec![&rows.a[..b], &rows.b[..b]];
    let mut oc = AdamW::new(cpu.named_vars(), AdamWConfig::default())?;
    let mut og = AdamW::new(gpu.named_vars(), AdamWConfig::default())?;
    let mut norm_diff = 0f64;
    let mut norms = Vec::new();
    for _ in 0..3 {
        let mut step_norms = [0f64; 2];
        for (k, (m, o)) in [(&cpu, &mut oc), (&gpu, &mut og)].into_iter().enumerate() {
            let grads = grads_of(m, &*l, &cols, Some(&rows.score[..b]))?;
            // max_norm below the norms seen here, so the clipping factor matters.
            step_norms[k] = crate::train::clip::clip_and_step(o, &grads, 1e-4, 0.5)?.value()?;
        }
        norm_diff = norm_diff.max((step_norms[0] - step_norms[1]).abs() / step_norms[0].max(1e-12));
        norms.push(step_norms[0]);
    }
    out.push(Check::diff(
        "gradient norm (relative)",
        norm_diff,
        1e-4,
        format!(
            "3 steps, CPU norms {}",
            norms
                .iter()
                .map(|n| format!("{n:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ));
    let wd = cpu
        .named_vars()
        .iter()
        .zip(gpu.named_vars())
        .map(|((_, a), (_, b))| Ok(max_abs_diff(&flat(a.as_tensor())?, &flat(b.as_tensor())?)))
        .collect::<Result<Vec<f64>>>()?
        .into_iter()
        .fold(0.0, f64::max);
    out.push(Check::diff(
        "weights after 3 AdamW steps",
        wd,
        1e-4,
        "lr 1e-4, clipping to 0.5, the training loop's clip + fused update vs CPU",
    ));

    Ok(out)
}

fn grads_of(
    m: &SentenceEncoder,
    l: &dyn loss::Loss,
    cols: &[&[String]],
    labels: Option<&[f32]>,
) -> Result<Vec<Option<Tensor>>> {
    let (_, g) = loss_tensors(m, l, cols, labels)?;
    Ok(g)
}

fn loss_tensors(
    m: &SentenceEncoder,
    l: &dyn loss::Loss,
    cols: &[&[String]],
    labels: Option<&[f32]>,
) -> Result<(f64, Vec<Option<Tensor>>)> {
    let dev = m.device();
    let mut embs = Vec::new();
    for c in cols {
        let refs: Vec<&str> = c.iter().map(|s| s.as_str()).collect();
        embs.push(m.embed_batch(&m.tokenizer.encode(&refs, dev)?, true)?);
    }
    let lab = labels
        .map(|v| Tensor::from_slice(v, v.len(), dev))
        .transpose()?;
    let loss = l.compute(&embs, lab.as_ref())?;
    let lv = loss.to_scalar::<f32>()? as f64;
    let grads = loss.backward()?;
    let g = m
        .named_vars()
        .iter()
        .map(|(_, v)| grads.get(v.as_tensor()).cloned())
        .collect();
    Ok((lv, g))
}

fn loss_and_grads(
    m: &SentenceEncoder,
    l: &dyn loss::Loss,
    cols: &[&[String]],
    labels: Option<&[f32]>,
) -> Result<(f64, Vec<Vec<f32>>)> {
    let (lv, g) = loss_tensors(m, l, cols, labels)?;
    let g = g
        .iter()
        .map(|g| match g {
            Some(t) => flat(t),
            None => Ok(Vec::new()),
        })
        .collect::<Result<_>>()?;
    Ok((lv, g))
}

/// The checks as an aligned text table, failed rows marked.
pub fn to_text(rows: &[Check]) -> String {
    let mut s = format!(
        "{:<34} {:>11} {:>9}  {}\n",
        "check", "max diff", "tol", "result"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<34} {:>11.3e} {:>9.0e}  {}  {}\n",
            r.name,
            r.value,
            r.tolerance,
            if r.pass { "ok  " } else { "FAIL" },
            r.note
        ));
    }
    s
}
