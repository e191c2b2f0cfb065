//! `embtune train`: flags → [`TrainConfig`] → [`crate::train::run`].

use super::{InputArgs, ModelArgs};
use crate::data::DataFormat;
use crate::eval::EvalTask;
use crate::loss::{Distance, LossKind, LossParams};
use crate::train::schedule::Schedule;
use crate::train::{EvalSpec, TrainConfig};
use anyhow::Result;
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("training_data").args(["data", "dataset"]).required(true).multiple(true)))]
#[command(group(clap::ArgGroup::new("training_loss").args(["loss", "dataset"]).required(true).multiple(true)))]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training data: CSV/TSV (header row), JSONL, or STS-B with --format stsb (sentence1, sentence2, score/5).
    #[arg(long, short = 'd')]
    pub data: Option<PathBuf>,
    /// One of several training datasets, each with its own loss (repeat the flag; instead of
    /// --data/--loss): "data=FILE;loss=LOSS" plus any of name, format, columns (a,b,…),
    /// label-column, scale, margin, distance, symmetric, temperature, prompts, weight (the
    /// loss is multiplied by it). Each batch comes from one dataset. In a recipe: [[datasets]]
    /// tables with the same keys.
    #[arg(long, conflicts_with_all = ["data", "loss", "columns", "label_column", "scale", "margin", "distance", "symmetric", "temperature", "prompts"])]
    pub dataset: Vec<String>,
    /// How the batches of several --dataset are ordered: proportional (every batch of every
    /// dataset once per epoch, in a seeded random order) or round-robin (one of each in turn,
    /// until the smallest runs out) — sentence-transformers' MultiDatasetBatchSamplers.
    #[arg(long, value_enum, default_value = "proportional")]
    pub multi_dataset_sampler: crate::train::datasets::Sampler,
    #[command(flatten)]
    pub reader: InputArgs,
    /// Text columns in role order (anchor, positive/second, negatives…), comma-separated, or as
    /// role=column pairs (anchor=question,positive=answer,negative_1=…,label=score), the syntax
    /// `pairs --columns` takes too [default: every column except the label, in file order].
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Label or score column [default: "label" or "score" when present].
    #[arg(long)]
    pub label_column: Option<String>,
    /// Loss (see README for the data each expects; infonce = mnrl).
    #[arg(long, value_enum)]
    pub loss: Option<LossKind>,
    /// Similarity scale for mnrl/cosent/angle [default: 20].
    #[arg(long)]
    pub scale: Option<f64>,
    /// Margin for contrastive (default 0.5) and triplet (default 5).
    #[arg(long)]
    pub margin: Option<f64>,
    /// Distance for contrastive (default cosine) and triplet (default euclidean).
    #[arg(long, value_enum)]
    pub distance: Option<Distance>,
    /// mnrl, cached-mnrl: also rank anchors for each positive (symmetric InfoNCE:
    /// MultipleNegativesSymmetricRankingLoss and its cached variant).
    #[arg(long)]
    pub symmetric: bool,
    /// GradCache: embed the batch this many texts at a time, so memory stays that of a small
    /// batch while the loss sees the whole batch [default with cached-mnrl/cached-gist: 32;
    /// given with another loss, that loss is computed the same way].
    #[arg(long)]
    pub mini_batch_size: Option<usize>,
    /// gist, cached-gist: the frozen guide model (Hub id or directory) whose similarities mark
    /// in-batch false negatives; often the model you start from.
    #[arg(long)]
    pub guide_model: Option<String>,
    /// mse, margin-mse: the teacher — a model (Hub id or directory) that embeds every text
    /// column once before training (cached), or a .npy / .safetensors file of teacher
    /// embeddings (mse: [rows, D] or [rows, columns, D]) or margins (margin-mse: [rows] or
    /// [rows, negatives]) aligned with the training rows. margin-mse can read margins from the
    /// label column instead.
    #[arg(long)]
    pub teacher: Option<String>,
    /// mse: the teacher's embeddings have another dimension than the student's — learn a
    /// linear projection from the student's into the teacher's on the loss (trained with the
    /// model, kept in checkpoints, not saved with the model). Without it such a teacher is an
    /// error: a projection is not guessed (sentence-transformers' `MSELoss(projection_dim=…)`).
    #[arg(long)]
    pub teacher_projection: bool,
    /// gist, cached-gist: similarity temperature [default: 0.01].
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Matryoshka: also train the embeddings truncated to these sizes (comma-separated, e.g.
    /// 384,256,128,64), the loss summed over them (MatryoshkaLoss around --loss).
    #[arg(long, value_delimiter = ',')]
    pub matryoshka_dims: Option<Vec<usize>>,
    /// Matryoshka: one weight per size [default: 1 each].
    #[arg(long, value_delimiter = ',', requires = "matryoshka_dims")]
    pub matryoshka_weights: Option<Vec<f64>>,
    /// Prompts prepended to the texts while training: one for every column ("query: "), or
    /// per column as role or column name (anchor="query: ",positive="passage: "). Saved with
    /// the model (and as its query / document prompts, which retrieval evaluation uses).
    #[arg(long)]
    pub prompts: Option<String>,
    /// Output directory: the final model (sentence-transformers layout), metrics.jsonl,
    /// train_config.json, checkpoints/.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Passes over the data.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Examples per batch.
    #[arg(long, short = 'b', default_value_t = 16)]
    pub batch_size: usize,
    /// Batches accumulated per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-5)]
    pub lr: f64,
    /// Warmup as a share of all steps (rounded up).
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Warmup steps (overrides --warmup-ratio).
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Learning-rate schedule after warmup.
    #[arg(long, value_enum, default_value = "linear")]
    pub schedule: Schedule,
    /// AdamW decoupled weight decay (not applied to biases and LayerNorm weights).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Seed for shuffling and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the file order (reproducible checks).
    #[arg(long)]
    pub no_shuffle: bool,
    /// Allow a text twice in a batch [default: refused for mnrl, whose in-batch negatives it would corrupt].
    #[arg(long)]
    pub allow_duplicates: bool,
    /// Override the model's dropout rates (0 disables dropout).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// mnrl, cached-mnrl on several data-parallel ranks: every rank's positives and negatives are
    /// candidates for every anchor (the global batch's in-batch negatives), each rank keeping the
    /// gradient of its own rows (sentence-transformers' gather_across_devices).
    #[arg(long)]
    pub gather_across_devices: bool,
    /// Data-parallel training, one worker process per device, started by this command (no
    /// torchrun): a comma list (cuda:0,cuda:1), all (every CUDA GPU), or cpu,cpu (CPU
    /// processes). --batch-size is per device; the ranks sum their gradients (NCCL on GPUs) and
    /// take the same step; rank 0 writes. docs/multi-gpu.md.
    #[arg(long, value_name = "LIST")]
    pub devices: Option<String>,
    /// With --devices: the number of nodes; start the same command on each, with its
    /// --node-rank and the same --rdzv-endpoint.
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// With --nnodes: this node's index, 0 .. nnodes-1 (node 0 hosts the rendezvous).
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// With --nnodes: node 0's HOST:PORT, reachable from every node (node 0 listens on the
    /// port; EMBTUNE_RDZV_TIMEOUT seconds to wait for the others, default 600).
    #[arg(long, value_name = "HOST:PORT")]
    pub rdzv_endpoint: Option<String>,
    /// Data parallelism as N threads of this process with an in-process communicator: a test
    /// double for checking data-parallel training on the CPU (no speed-up).
    #[arg(long, default_value_t = 1, hide = true)]
    pub test_thread_ranks: usize,
    /// LoRA: train rank-R adapters on the targeted linear layers instead of the model's weights
    /// (PEFT's LoRA, dropout 0, no bias); the output is the merged model (a plain
    /// sentence-transformers folder), --save-adapter adds the PEFT adapter.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA scaling: the update is (alpha / rank)·B·A [default: 8, PEFT's].
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// LoRA: the linear layers to adapt, by the last part of their name (query,key,value,dense
    /// for BERT) [default: the family's query and value projections, as PEFT].
    #[arg(long, value_delimiter = ',', requires = "lora_rank")]
    pub lora_targets: Option<Vec<String>>,
    /// LoRA: also save the adapter as PEFT does (adapter_config.json + adapter_model.safetensors)
    /// in <output>/adapter/, for peft / sentence-transformers' load_adapter.
    #[arg(long, requires = "lora_rank")]
    pub save_adapter: bool,
    /// Leave the embeddings (token, position, token-type tables and their norm) untrained.
    #[arg(long)]
    pub freeze_embeddings: bool,
    /// Leave the first N encoder layers (from the input side) untrained.
    #[arg(long, default_value_t = 0)]
    pub freeze_layers: usize,
    /// Evaluation data used during training (repeat for several sets; the first one's primary
    /// metric decides --save-best): a file, or a BEIR folder for retrieval.
    #[arg(long)]
    pub eval_data: Vec<PathBuf>,
    /// Evaluation data format [default: from the extension].
    #[arg(long, value_enum)]
    pub eval_format: Option<DataFormat>,
    /// Evaluation task: one for every --eval-data, or one per --eval-data in order [default:
    /// retrieval for a folder with corpus.jsonl, else sts].
    #[arg(long, value_enum)]
    pub eval_task: Vec<EvalTask>,
    /// Retrieval evaluation: the qrels split of the BEIR folder [default: test].
    #[arg(long)]
    pub eval_split: Option<String>,
    /// Evaluation columns (as `eval --columns`).
    #[arg(long, value_delimiter = ',')]
    pub eval_columns: Option<Vec<String>>,
    /// Evaluate every N steps [default: at the end of each epoch].
    #[arg(long)]
    pub eval_steps: Option<usize>,
    /// Keep the best model by the evaluation's primary metric in <output>/best.
    #[arg(long)]
    pub save_best: bool,
    /// Write a checkpoint every N steps.
    #[arg(long)]
    pub save_steps: Option<usize>,
    /// Keep at most K checkpoints (oldest deleted first).
    #[arg(long)]
    pub save_total_limit: Option<usize>,
    /// Log loss, lr, grad-norm and throughput to metrics.jsonl every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_steps: usize,
    /// Continue from a checkpoint directory, or the newest checkpoint of an output directory
    /// (with the same flags as the original run).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Train into an output directory that already holds files: a previous run's checkpoints
    /// and best/ are removed first (without it such a directory is refused).
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Hide the progress bar and the notes and summaries (warnings and errors only).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl TrainArgs {
    /// The processes of a `--devices` run (None: train in this process).
    pub fn launch_plan(&self) -> Result<Option<crate::dist::launch::Plan>> {
        let Some(d) = &self.devices else {
            return Ok(None);
        };
        if self.model.load.compute.device != crate::device::DeviceChoice::Auto {
            anyhow::bail!("--devices and --device: give one (--devices lists every rank's device)");
        }
        if self.test_thread_ranks > 1 {
            anyhow::bail!("--devices and --test-thread-ranks: give one");
        }
        crate::dist::launch::Plan::parse(d, self.nnodes, self.node_rank, self.rdzv_endpoint.clone())
            .map(Some)
    }

    pub fn into_config(self) -> Result<TrainConfig> {
        let tasks = &self.eval_task;
        if tasks.len() > 1 && tasks.len() != self.eval_data.len() {
            anyhow::bail!(
                "--eval-task given {} times for {} --eval-data: give one task for all, or one per --eval-data in the same order",
                tasks.len(),
                self.eval_data.len()
            );
        }
        let eval = self
            .eval_data
            .iter()
            .enumerate()
            .map(|(i, data)| EvalSpec {
                data: data.clone(),
                format: self.eval_format,
                task: tasks
                    .get(i)
                    .or(tasks.first())
                    .copied()
                    .unwrap_or_else(|| default_eval_task(data)),
                columns: self.eval_columns.clone(),
                score_scale: None,
                split: self.eval_split.clone(),
            })
            .collect();
        let guide = self
            .guide_model
            .map(|g| self.model.load.clone().guide_spec(g));
        if self.lora_rank.is_none() && self.lora_alpha.is_some() {
            anyhow::bail!("--lora-alpha is set but not --lora-rank: give the adapters' rank too (e.g. --lora-rank 8)");
        }
        let teacher = self.teacher.as_deref().map(|t| {
            crate::train::teacher::Teacher::parse(t, |m| self.model.load.clone().guide_spec(m))
        });
        let prompts = match &self.prompts {
            Some(p) => crate::train::prompts::parse(p)?,
            None => Vec::new(),
        };
        let mut datasets = self
            .dataset
            .iter()
            .map(|d| crate::train::datasets::DatasetSpec::parse(d))
            .collect::<Result<Vec<_>>>()?;
        // --format is the default of the datasets that name none.
        for d in datasets.iter_mut() {
            d.format = d.format.or(self.reader.format);
        }
        let first = datasets.first();
        let cfg = TrainConfig {
            model: self.model.into_spec(),
            data: self
                .data
                .or_else(|| first.map(|d| d.data.clone()))
                .unwrap_or_default(),
            datasets: datasets.clone(),
            sampler: self.multi_dataset_sampler,
            format: self.reader.format,
            read: self.reader.read_options(),
            columns: crate::data::columns::training_columns(
                crate::data::ColumnsArg::parse(&self.columns.unwrap_or_default())?,
                self.label_column,
            )?,
            loss: self
                .loss
                .or_else(|| first.map(|d| d.loss))
                .unwrap_or(LossKind::Cosent),
            loss_params: LossParams {
                scale: self.scale,
                margin: self.margin,
                distance: self.distance,
                symmetric: self.symmetric,
                temperature: self.temperature,
            },
            matryoshka: self
                .matryoshka_dims
                .map(|dims| crate::loss::MatryoshkaSpec {
                    dims,
                    weights: self.matryoshka_weights.unwrap_or_default(),
                }),
            mini_batch_size: self.mini_batch_size,
            guide,
            teacher,
            teacher_projection: self.teacher_projection,
            prompts,
            output: self.output,
            epochs: self.epochs,
            max_steps: self.max_steps,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            lr: self.lr,
            warmup_ratio: self.warmup_ratio,
            warmup_steps: self.warmup_steps,
            schedule: self.schedule,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
            seed: self.seed,
            shuffle: !self.no_shuffle,
            no_duplicates: if self.allow_duplicates {
                Some(false)
            } else {
                None
            },
            dropout: self.dropout,
            lora: self.lora_rank.map(|rank| crate::model::lora::LoraConfig {
                rank,
                alpha: self.lora_alpha.unwrap_or(8.0),
                targets: self.lora_targets.clone().unwrap_or_default(),
            }),
            save_adapter: self.save_adapter,
            ranks: self.test_thread_ranks,
            worker: None,
            gather_across_devices: self.gather_across_devices,
            freeze: crate::train::freeze::Freeze {
                embeddings: self.freeze_embeddings,
                layers: self.freeze_layers,
            },
            eval,
            eval_steps: self.eval_steps,
            save_best: self.save_best,
            save_steps: self.save_steps,
            save_total_limit: self.save_total_limit,
            log_steps: self.log_steps,
            resume: self.resume,
            overwrite: self.overwrite,
            progress: !self.quiet && std::io::stderr().is_terminal(),
            log_lines: !self.quiet && !std::io::stderr().is_terminal(),
            phase_timing: false,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A folder with a corpus is a retrieval set; anything else is scored pairs (sts).
fn default_eval_task(data: &std::path::Path) -> EvalTask {
    if data.join("corpus.jsonl").is_file() {
        EvalTask::Retrieval
    } else {
        EvalTask::Sts
    }
}

pub fn run(args: TrainArgs) -> Result<()> {
    let plan = args.launch_plan()?;
    let mut cfg = args.into_config()?;
    if let Some(plan) = plan {
        // This process launches the workers (and ends with their exit code) or is one of them.
        match crate::train::ddp::role(&plan, &mut cfg)? {
            Some(0) => return Ok(()),
            Some(code) => std::process::exit(code),
            None => {}
        }
    }
    let r = crate::train::run(&cfg)?;
    if let Some(sig) = r.interrupted {
        std::process::exit(128 + sig);
    }
    if cfg.worker.as_ref().is_some_and(|w| w.rank != 0) {
        // Rank 0 reports (and wrote the model).
        return Ok(());
    }
    if let (Some(a), Some(b)) = (r.first_loss, r.last_loss) {
        tracing::info!("trained {} steps: loss {a:.6} → {b:.6}", r.steps);
    }
    if let Some(m) = &r.final_eval {
        tracing::info!("final {} = {:.4}", m.primary, m.primary_value());
    }
    tracing::info!("model saved to {}", r.output.display());
    Ok(())
}
