//! Distillation from a teacher — labels are the teacher's, computed once before training
//! (`--teacher`, `train/teacher.rs`) or given in the data.
//! - [`Mse`] (sentence-transformers' MSELoss): the mean squared error between each column's
//!   student embedding and its teacher embedding, averaged over columns. Labels `[B, D]` are one
//!   teacher embedding for every column (multilingual distillation), `[B, C, D]` one per column.
//!   A teacher of another dimension is an error unless `--teacher-projection` asks for a
//!   trained projection D_student → D_teacher on the loss (not saved with the model), as
//!   sentence-transformers' `MSELoss(projection_dim=…)`, which is also never implied.
//! - [`MarginMse`] (MarginMSELoss): (query, positive, negative…) rows, the MSE between the
//!   student's margins `q·p − q·nᵢ` (dot product, ST's default) and the teacher's; labels `[B]`
//!   or `[B, k]` margins, or `[B, k + 1]` raw scores (positive first), as ST.

use super::head::{HeadInit, LinearHead};
use super::{expect_columns, need_labels, InputShape, LabelKind, Loss};
use candle_core::{Tensor, Var, D};
use std::sync::OnceLock;

/// MSE's teacher against the student: the same dimension, or another with `projection`
/// (`--teacher-projection`). As sentence-transformers: without projection_dim the dimensions
/// must match; a projection is never implied.
pub fn check_teacher_dim(student: usize, teacher: usize, projection: bool) -> anyhow::Result<()> {
    if teacher != student && !projection {
        anyhow::bail!(
            "mse: the teacher's embeddings have {teacher} dimensions and the student's {student}: a projection is not guessed; pass --teacher-projection to learn one {student} → {teacher} on the loss, or use a teacher with {student} dimensions"
        );
    }
    Ok(())
}

#[derive(Default)]
pub struct Mse {
    projection: OnceLock<Option<LinearHead>>,
}

impl Mse {
    /// With a given projection into the teacher's space (or none).
    pub fn with_projection(head: Option<LinearHead>) -> Self {
        let s = Self::default();
        let _ = s.projection.set(head);
        s
    }
}

impl Loss for Mse {
    fn name(&self) -> &'static str {
        "mse"
    }
    fn input_shape(&self) -> InputShape {
        InputShape {
            min_texts: 1,
            max_texts: None,
            label: LabelKind::Teacher,
        }
    }
    fn init(&self, h: &HeadInit) -> anyhow::Result<()> {
        check_teacher_dim(h.dim, h.teacher_dim, h.teacher_projection)?;
        let proj = if h.teacher_dim != h.dim {
            tracing::info!(
                "note: mse: the student's embeddings have {} dimensions and the teacher's {}: a trained projection {} → {} maps them (--teacher-projection, as sentence-transformers' projection_dim; on the loss, not saved with the model)",
                h.dim, h.teacher_dim, h.dim, h.teacher_dim
            );
            Some(LinearHead::new(h.dim, h.teacher_dim, h.device, h.seed)?)
        } else {
            None
        };
        let _ = self.projection.set(proj);
        Ok(())
    }
    fn params(&self) -> Vec<(String, Var)> {
        match self.projection.get() {
            Some(Some(p)) => p.named("projection"),
            _ => Vec::new(),
        }
    }
    fn compute(&self, e: &[Tensor], labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 1)?;
        let y = need_labels(self.name(), labels)?;
        let mut total = Tensor::zeros((), e[0].dtype(), e[0].device())?;
        for (c, s) in e.iter().enumerate() {
            let t = match y.rank() {
                2 => y.clone(),
                3 => y.narrow(1, c, 1)?.squeeze(1)?,
                r => candle_core::bail!(
                    "mse: teacher labels of rank {r}; expected [B, D] or [B, C, D]"
                ),
            };
            let s = match self.projection.get() {
                Some(Some(p)) => p.forward(s)?,
                _ => s.clone(),
            };
            let l = (s - t.to_dtype(e[c].dtype())?)?.sqr()?.mean_all()?;
            total = (total + l)?;
        }
        total / e.len() as f64
    }
}

pub struct MarginMse;

impl Loss for MarginMse {
    fn name(&self) -> &'static str {
        "margin-mse"
    }
    fn input_shape(&self) -> InputShape {
        InputShape {
            min_texts: 3,
            max_texts: None,
            label: LabelKind::Teacher,
        }
    }
    fn compute(&self, e: &[Tensor], labels: Option<&Tensor>) -> candle_core::Result<Tensor> {
        expect_columns(self.name(), e, 3)?;
        let k = e.len() - 2;
        let y = need_labels(self.name(), labels)?.to_dtype(e[0].dtype())?;
        let b = e[0].dim(0)?;
        let y = match y.dims() {
            [n] if *n == b => y.unsqueeze(1)?,
            [_, w] if *w == k + 1 => y.narrow(1, 0, 1)?.broadcast_sub(&y.narrow(1, 1, k)?)?,
            _ => y,
        };
        if y.dims() != [b, k] {
            candle_core::bail!(
                "margin-mse: labels of shape {:?} for {b} rows and {k} negatives; give [B] / [B, {k}] margins or [B, {}] scores",
                y.dims(),
                k + 1
            );
        }
        let dot = |a: &Tensor, c: &Tensor| (a * c)?.sum_keepdim(D::Minus1);
        let pos = dot(&e[0], &e[1])?;
        let margins: Vec<Tensor> = e[2..]
            .iter()
            .map(|n| pos.clone() - dot(&e[0], n)?)
            .collect::<candle_core::Result<_>>()?;
        (Tensor::cat(&margins, 1)? - y)?.sqr()?.mean_all()
    }
}
