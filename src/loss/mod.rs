//! Training losses on pooled embeddings: trait [`Loss`], one file per loss, [`build`] is the
//! registry of base losses and [`LossSpec`] the nested configuration (a modifier such as
//! Matryoshka wraps any loss). Each loss declares the data it needs ([`InputShape`]) so that
//! `train` can refuse mismatched data before step 1. Defaults are sentence-transformers'.
//!
//! Contract: `compute(embeddings, labels)` gets one `[B, D]` tensor per text column, in column
//! order, and labels `[B]` (f32: 0/1 or a score) when the loss needs them; returns a scalar.
//! A guided loss (GIST) also gets the frozen guide model's embeddings of the same texts
//! (`compute_guided`). Labels may be wider than one value per row (teacher embeddings or
//! margins, `[B, …]`). A loss may own trainable parameters (`init`, `params`; `head.rs`).

pub mod contrastive;
pub mod cosent;
pub mod cosine;
pub mod distill;
pub mod gist;
pub mod head;
pub mod matryoshka;
pub mod mnrl;
pub mod online_contrastive;
pub mod softmax;
pub mod triplet;

use anyhow::{bail, Result};
use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

/// Closed set of losses (`--loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Pairs + 0/1 label: ½·[y·d² + (1−y)·relu(margin−d)²], mean (ContrastiveLoss).
    Contrastive,
    /// Pairs + 0/1 label: contrastive on the batch's hard pairs only, summed (OnlineContrastiveLoss).
    OnlineContrastive,
    /// (anchor, positive, negative): relu(d(a,p) − d(a,n) + margin), mean (TripletLoss).
    Triplet,
    /// (anchor, positive, [negatives…]): cross-entropy over scaled cosine with in-batch negatives
    /// (MultipleNegativesRankingLoss / InfoNCE).
    #[value(alias = "infonce")]
    Mnrl,
    /// MNRL with GradCache (CachedMultipleNegativesRankingLoss): the same loss and gradients,
    /// the batch embedded --mini-batch-size texts at a time, so a large batch fits in memory.
    CachedMnrl,
    /// GISTEmbedLoss: MNRL at temperature 0.01 whose in-batch candidates that the frozen
    /// --guide-model scores above the positive are left out (false negatives).
    Gist,
    /// GIST with GradCache (CachedGISTEmbedLoss).
    CachedGist,
    /// Pairs + float score: CoSENT ranking loss on scaled cosine (CoSENTLoss).
    Cosent,
    /// Pairs + float score: CoSENT on AnglE's angle similarity |cos + sin| instead of cosine
    /// (AnglELoss, scale 20).
    Angle,
    /// Pairs + float score: MSE between cosine and score (CosineSimilarityLoss).
    Cosine,
    /// Distillation: MSE between the student's embeddings and the teacher's (--teacher MODEL
    /// or an embeddings file; MSELoss).
    Mse,
    /// Distillation: (query, positive, negatives…), MSE between the student's dot-product
    /// margins q·p − q·n and the teacher's (--teacher, or a margin column; MarginMSELoss).
    MarginMse,
    /// Pairs + class label (NLI): a classifier on [u, v, |u−v|] with cross-entropy (SoftmaxLoss;
    /// the classifier is not saved with the model).
    Softmax,
}

impl LossKind {
    /// Losses whose negatives are the batch's other texts (a duplicate text in a batch would be
    /// its own negative: batches avoid them by default).
    pub fn in_batch_negatives(self) -> bool {
        matches!(
            self,
            LossKind::Mnrl | LossKind::CachedMnrl | LossKind::Gist | LossKind::CachedGist
        )
    }
    /// The cached (GradCache) variants: the step embeds mini-batches (default 32, as
    /// sentence-transformers).
    pub fn cached(self) -> bool {
        matches!(self, LossKind::CachedMnrl | LossKind::CachedGist)
    }
    /// The distillation losses, whose labels a teacher gives.
    pub fn distills(self) -> bool {
        matches!(self, LossKind::Mse | LossKind::MarginMse)
    }
    /// The losses that need a guide model.
    pub fn guided(self) -> bool {
        matches!(self, LossKind::Gist | LossKind::CachedGist)
    }
    /// The loss's name in sentence-transformers.
    pub fn st_name(self) -> &'static str {
        match self {
            LossKind::Contrastive => "ContrastiveLoss",
            LossKind::OnlineContrastive => "OnlineContrastiveLoss",
            LossKind::Triplet => "TripletLoss",
            LossKind::Mnrl => "MultipleNegativesRankingLoss",
            LossKind::CachedMnrl => "CachedMultipleNegativesRankingLoss",
            LossKind::Gist => "GISTEmbedLoss",
            LossKind::CachedGist => "CachedGISTEmbedLoss",
            LossKind::Cosent => "CoSENTLoss",
            LossKind::Angle => "AnglELoss",
            LossKind::Cosine => "CosineSimilarityLoss",
            LossKind::Mse => "MSELoss",
            LossKind::MarginMse => "MarginMSELoss",
            LossKind::Softmax => "SoftmaxLoss",
        }
    }
}

/// Distance used by contrastive and triplet losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// 1 − cosine similarity.
    Cosine,
    /// L2 distance (torch's pairwise_distance, eps 1e-6).
    Euclidean,
    /// L1 distance (torch's pairwise_distance, eps 1e-6).
    Manhattan,
}

/// What a row's label must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelKind {
    None,
    /// 0 or 1.
    Binary,
    /// A finite float (e.g. a similarity score in 0..1).
    Score,
    /// A class id or class name (a classifier's label).
    Class,
    /// Given by a teacher model (`--teacher`) or a column/file of teacher values.
    Teacher,
}

/// The data a loss accepts: how many text columns, and the label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputShape {
    pub min_texts: usize,
    /// None: any number ≥ min (extra hard-negative columns).
    pub max_texts: Option<usize>,
    pub label: LabelKind,
}

impl InputShape {
    /// A one-line description for error messages.
    pub fn describe(&self) -> String {
        let cols = match self.max_texts {
            Some(m) if m == self.min_texts => format!("{m} text columns"),
            Some(m) => format!("{}–{m} text columns", self.min_texts),
            None => format!("{} or more text columns", self.min_texts),
        };
        let label = match self.label {
            LabelKind::None => "no label column".to_string(),
            LabelKind::Binary => "a 0/1 label column".to_string(),
            LabelKind::Score => "a numeric score column".to_string(),
            LabelKind::Class => "a class label column".to_string(),
            LabelKind::Teacher => "teacher labels (--teacher, or a label column)".to_string(),
        };
        format!("{cols} and {label}")
    }

    /// Checks a dataset's column count and label presence.
    pub fn check(&self, loss: &str, n_texts: usize, has_label: bool) -> Result<()> {
        let ok_cols = n_texts >= self.min_texts && self.max_texts.is_none_or(|m| n_texts <= m);
        let ok_label = has_label == (self.label != LabelKind::None);
        if !ok_cols || !ok_label {
            // The likely fix, when there is one.
            let hint = if n_texts < self.min_texts && self.min_texts >= 3 {
                "; make (anchor, positive, negative) rows with `embtune pairs --from pairs` (random negatives, or --mine with a model)"
            } else if !has_label && self.label != LabelKind::None {
                "; name the label/score column with --label-column (for STS-B files: --format stsb)"
            } else {
                ""
            };
            bail!(
                "loss {loss} expects {}; the data has {n_texts} text column{} and {}{hint}",
                self.describe(),
                if n_texts == 1 { "" } else { "s" },
                if has_label {
                    "a label/score column"
                } else {
                    "no label column"
                }
            );
        }
        Ok(())
    }
}

/// Loss parameters (sentence-transformers' defaults when None).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LossParams {
    /// Similarity scale for MNRL/CoSENT [default 20].
    pub scale: Option<f64>,
    /// Margin [default: contrastive 0.5, triplet 5].
    pub margin: Option<f64>,
    /// Distance [default: contrastive cosine, triplet euclidean].
    pub distance: Option<Distance>,
    /// MNRL: add the positive→anchor direction.
    pub symmetric: bool,
    /// GIST: similarity temperature [default 0.01].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

/// `--matryoshka-dims` / `--matryoshka-weights`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatryoshkaSpec {
    pub dims: Vec<usize>,
    /// One per dimension [default: 1 each].
    pub weights: Vec<f64>,
}

/// A loss configuration: a base loss, or a modifier wrapping one (nested).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossSpec {
    Base {
        kind: LossKind,
    },
    Matryoshka {
        dims: Vec<usize>,
        weights: Vec<f64>,
        loss: Box<LossSpec>,
    },
}

impl LossSpec {
    /// The base loss at the heart of the configuration.
    pub fn base(&self) -> LossKind {
        match self {
            LossSpec::Base { kind } => *kind,
            LossSpec::Matryoshka { loss, .. } => loss.base(),
        }
    }
    /// As sentence-transformers would name it: `MatryoshkaLoss(MultipleNegativesRankingLoss)`.
    pub fn st_name(&self) -> String {
        match self {
            LossSpec::Base { kind } => kind.st_name().to_string(),
            LossSpec::Matryoshka { loss, .. } => format!("MatryoshkaLoss({})", loss.st_name()),
        }
    }
    /// Builds the loss.
    pub fn build(&self, p: &LossParams) -> Box<dyn Loss> {
        match self {
            LossSpec::Base { kind } => build(*kind, p),
            LossSpec::Matryoshka {
                dims,
                weights,
                loss,
            } => Box::new(matryoshka::Matryoshka::new(loss.build(p), dims, weights)),
        }
    }
}

/// One loss.
pub trait Loss: Send + Sync {
    fn name(&self) -> &'static str;
    fn input_shape(&self) -> InputShape;
    /// Scalar loss from one `[B, D]` embedding tensor per text column and labels `[B]` (f32).
    fn compute(
        &self,
        embeddings: &[Tensor],
        labels: Option<&Tensor>,
    ) -> candle_core::Result<Tensor>;
    /// Sets up the loss's own parameters (a classifier, a projection) once the model and data
    /// are known; most losses have none.
    fn init(&self, _h: &head::HeadInit) -> anyhow::Result<()> {
        Ok(())
    }
    /// The loss's own trainable parameters (`loss.…` names; see `head.rs`).
    fn params(&self) -> Vec<(String, candle_core::Var)> {
        Vec::new()
    }
    /// Whether [`Loss::compute_guided`] needs the guide model's embeddings.
    fn needs_guide(&self) -> bool {
        false
    }
    /// The loss given the frozen guide model's embeddings of the same texts too (one `[B, D']`
    /// per column, no graph); losses without a guide ignore them.
    fn compute_guided(
        &self,
        embeddings: &[Tensor],
        _guide: &[Tensor],
        labels: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.compute(embeddings, labels)
    }
}

/// The registry.
pub fn build(kind: LossKind, p: &LossParams) -> Box<dyn Loss> {
    match kind {
        LossKind::Contrastive => Box::new(contrastive::Contrastive {
            margin: p.margin.unwrap_or(0.5),
            distance: p.distance.unwrap_or(Distance::Cosine),
        }),
        LossKind::OnlineContrastive => Box::new(online_contrastive::OnlineContrastive {
            margin: p.margin.unwrap_or(0.5),
            distance: p.distance.unwrap_or(Distance::Cosine),
        }),
        LossKind::Triplet => Box::new(triplet::Triplet {
            margin: p.margin.unwrap_or(5.0),
            distance: p.distance.unwrap_or(Distance::Euclidean),
        }),
        LossKind::Mnrl | LossKind::CachedMnrl => Box::new(mnrl::Mnrl {
            scale: p.scale.unwrap_or(20.0),
            symmetric: p.symmetric,
        }),
        LossKind::Gist | LossKind::CachedGist => Box::new(gist::Gist {
            temperature: p.temperature.unwrap_or(0.01),
            margin: p.margin.unwrap_or(0.0),
            comm: None,
        }),
        LossKind::Cosent => Box::new(cosent::Cosent {
            scale: p.scale.unwrap_or(20.0),
            angle: false,
        }),
        LossKind::Angle => Box::new(cosent::Cosent {
            scale: p.scale.unwrap_or(20.0),
            angle: true,
        }),
        LossKind::Cosine => Box::new(cosine::CosineSimilarity),
        LossKind::Mse => Box::<distill::Mse>::default(),
        LossKind::MarginMse => Box::new(distill::MarginMse),
        LossKind::Softmax => Box::<softmax::Softmax>::default(),
    }
}

/// Row-wise L2 normalisation with torch's eps (F.normalize).
pub fn normalize_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&n)
}

/// Cosine similarity of matching rows: `[B, D] × [B, D] → [B]`.
pub fn pairwise_cosine(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    (normalize_rows(a)? * normalize_rows(b)?)?.sum(D::Minus1)
}

/// sentence-transformers' `pairwise_angle_sim` (AnglE): `|cos(a, b) + sin(a, b)|` of matching
/// rows after L2 normalisation, dimension i paired with i + D/2 for the sine term
/// (`Σ last_a·first_b − first_a·last_b`); an odd D is padded with a zero, as there. `[B]`.
pub fn pairwise_angle(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let pad = |x: &Tensor| -> candle_core::Result<Tensor> {
        let (n, d) = x.dims2()?;
        if d % 2 == 0 {
            Ok(x.clone())
        } else {
            Tensor::cat(&[x, &Tensor::zeros((n, 1), x.dtype(), x.device())?], 1)
        }
    };
    let (a, b) = (normalize_rows(&pad(a)?)?, normalize_rows(&pad(b)?)?);
    let h = a.dim(1)? / 2;
    let cos = (&a * &b)?.sum(D::Minus1)?;
    let (fa, la) = (a.narrow(1, 0, h)?, a.narrow(1, h, h)?);
    let (fb, lb) = (b.narrow(1, 0, h)?, b.narrow(1, h, h)?);
    let sin = ((la * fb)? - (fa * lb)?)?.sum(D::Minus1)?;
    (cos + sin)?.abs()
}

/// Cosine similarity matrix: `[N, D] × [M, D] → [N, M]`.
pub fn cosine_matrix(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    normalize_rows(a)?.matmul(&normalize_rows(b)?.t()?)
}

/// Distance of matching rows `[B]`.
pub fn pairwise_distance(d: Distance, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    match d {
        Distance::Cosine => pairwise_cosine(a, b)?.affine(-1.0, 1.0),
        // torch.nn.functional.pairwise_distance adds eps to the difference.
        Distance::Euclidean => ((a - b)? + 1e-6)?.sqr()?.sum(D::Minus1)?.sqrt(),
        Distance::Manhattan => ((a - b)? + 1e-6)?.abs()?.sum(D::Minus1),
    }
}

/// Shape check shared by the losses.
pub(crate) fn expect_columns(
    name: &str,
    embeddings: &[Tensor],
    min: usize,
) -> candle_core::Result<()> {
    if embeddings.len() < min {
        candle_core::bail!(
            "{name}: expected at least {min} embedding columns, got {}",
            embeddings.len()
        );
    }
    Ok(())
}

pub(crate) fn need_labels<'a>(
    name: &str,
    labels: Option<&'a Tensor>,
) -> candle_core::Result<&'a Tensor> {
    labels.ok_or_else(|| candle_core::Error::Msg(format!("{name}: labels are required")))
}
