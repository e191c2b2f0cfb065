//! The model card: `README.md` in a training run's output directory, in the style of the cards
//! sentence-transformers writes — base model, module stack, data (rows, columns, examples), loss,
//! the hyperparameters that differ from the defaults, the training-loss table (from
//! metrics.jsonl), evaluation results, hardware and wall time, versions, and usage snippets for
//! embtune, Python sentence-transformers and text-embeddings-inference.

use super::outcome::TrainReport;
use super::TrainConfig;
use crate::model::SentenceEncoder;
use anyhow::Result;
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

/// One training dataset as the card shows it.
pub struct CardDataset<'a> {
    pub spec: &'a super::datasets::DatasetSpec,
    pub rows: usize,
    pub columns: &'a [String],
    pub label_column: Option<&'a str>,
    /// The first few rows (texts of each column, label).
    pub examples: Vec<(Vec<String>, Option<f32>)>,
}

/// What the card needs from the run besides the config and the report.
pub struct CardInput<'a> {
    pub model: &'a SentenceEncoder,
    /// Every training dataset (one for a plain run).
    pub datasets: Vec<CardDataset<'a>>,
    pub device: String,
    pub wall_seconds: f64,
}

/// The loss of a dataset as sentence-transformers names it (`MatryoshkaLoss(…)` when wrapped).
fn st_loss(cfg: &TrainConfig, d: &super::datasets::DatasetSpec) -> String {
    cfg.loss_spec_for(d.loss).st_name()
}

/// Config fields whose values differ from `TrainConfig::default()` (paths and I/O excluded).
fn non_default(cfg: &TrainConfig) -> Vec<(String, String)> {
    let (Ok(Value::Object(a)), Ok(Value::Object(d))) = (
        serde_json::to_value(cfg),
        serde_json::to_value(TrainConfig::default()),
    ) else {
        return Vec::new();
    };
    let skip = [
        "model", "data", "output", "resume", "read", "format", "eval", "guide", "datasets",
        "teacher",
    ];
    a.iter()
        .filter(|(k, v)| !skip.contains(&k.as_str()) && d.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn md_cell(s: &str) -> String {
    let s = s.replace('|', "\\|").replace('\n', " ");
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// The card's Markdown.
pub fn render(cfg: &TrainConfig, report: &TrainReport, inp: &CardInput) -> String {
    let base = &cfg.model.model;
    let m = inp.model;
    let name = report
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "---\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\ntags:\n- sentence-transformers\n- sentence-similarity\n- feature-extraction\n- embtune\nbase_model: {base}\n---\n"
    );
    let _ = writeln!(
        s,
        "# {name}\n\nA sentence-transformers model fine-tuned from `{base}` with embtune \
         ({}). It maps sentences to a {}-dimensional vector space for semantic similarity, search, clustering and classification.\n",
        {
            let mut l: Vec<String> = inp.datasets.iter().map(|d| st_loss(cfg, d.spec)).collect();
            l.dedup();
            format!("{} loss", l.join(" + "))
        },
        m.dim()
    );
    let _ = writeln!(s, "## Model\n\n- Base model: `{base}`");
    let _ = writeln!(
        s,
        "- Module stack: Transformer ({}, {} layers, hidden {}, max_seq_length {}) → Pooling ({}){}{}",
        m.family(),
        m.num_layers(),
        m.hidden_size(),
        m.tokenizer.max_seq_length(),
        m.pooling
            .modes
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", "),
        if m.dense.is_empty() {
            String::new()
        } else {
            format!(" → {} Dense", m.dense.len())
        },
        if m.normalize { " → Normalize" } else { "" }
    );
    let _ = writeln!(s, "- Output: {} dimensions, cosine similarity", m.dim());
    if !m.prompts.map.is_empty() {
        let list: Vec<String> = m
            .prompts
            .map
            .iter()
            .map(|(k, v)| format!("`{k}`: {v:?}"))
            .collect();
        let _ = writeln!(
            s,
            "- Prompts: {}{}",
            list.join(", "),
            m.prompts
                .default_name
                .as_ref()
                .map(|d| format!(" (default: `{d}`)"))
                .unwrap_or_default()
        );
    }
    s.push('\n');

    let _ = writeln!(s, "## Training data\n");
    let several = inp.datasets.len() > 1;
    if several {
        let _ = writeln!(
            s,
            "{} datasets, each batch drawn from one of them ({:?} sampling):\n",
            inp.datasets.len(),
            cfg.sampler
        );
    }
    for d in &inp.datasets {
        if several {
            let _ = writeln!(s, "### {}\n", d.spec.name);
        }
        let _ = writeln!(
            s,
            "`{}`: {} rows; text columns {}{}.\n",
            d.spec.data.display(),
            d.rows,
            d.columns
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", "),
            d.label_column
                .map(|l| format!(", label `{l}`"))
                .unwrap_or_default()
        );
        if !d.examples.is_empty() {
            let mut head: Vec<String> = d.columns.to_vec();
            if let Some(l) = d.label_column {
                head.push(l.to_string());
            }
            let _ = writeln!(s, "| {} |", head.join(" | "));
            let _ = writeln!(s, "|{}", "---|".repeat(head.len()));
            for (texts, label) in &d.examples {
                let mut cells: Vec<String> = texts.iter().map(|t| md_cell(t)).collect();
                if let Some(l) = label {
                    cells.push(format!("{l}"));
                }
                let _ = writeln!(s, "| {} |", cells.join(" | "));
            }
            s.push('\n');
        }
    }

    let _ = writeln!(s, "## Training\n");
    for d in &inp.datasets {
        let params: Vec<String> = match serde_json::to_value(&d.spec.loss_params) {
            Ok(Value::Object(o)) => o
                .iter()
                .filter(|(_, v)| !v.is_null() && **v != Value::Bool(false))
                .map(|(k, v)| format!("{k} = {v}"))
                .collect(),
            _ => Vec::new(),
        };
        let _ = writeln!(
            s,
            "- Loss{}: `{}` (`--loss {}`){}{}",
            if several {
                format!(" on {}", d.spec.name)
            } else {
                String::new()
            },
            st_loss(cfg, d.spec),
            clap::ValueEnum::to_possible_value(&d.spec.loss)
                .map(|v| v.get_name().to_string())
                .unwrap_or_default(),
            if params.is_empty() {
                " with sentence-transformers' default parameters".to_string()
            } else {
                format!(", {}", params.join(", "))
            },
            if d.spec.weight != 1.0 {
                format!(", weight {}", d.spec.weight)
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        s,
        "- Steps: {} of {} (batch {}, {} epoch(s) requested), learning rate {}, warmup ratio {}, {:?} schedule",
        report.steps,
        report.total_steps,
        cfg.batch_size,
        cfg.epochs,
        cfg.lr,
        cfg.warmup_ratio,
        cfg.schedule
    );
    let nd = non_default(cfg);
    if !nd.is_empty() {
        let _ = writeln!(s, "- Non-default hyperparameters:");
        for (k, v) in nd {
            let _ = writeln!(s, "  - `{k}`: {v}");
        }
    }
    let _ = writeln!(
        s,
        "- Hardware: {}; wall time {:.1} s\n",
        inp.device, inp.wall_seconds
    );

    let losses = read_losses(&report.output.join("metrics.jsonl"));
    if !losses.is_empty() {
        let _ = writeln!(
            s,
            "### Training loss\n\n| step | epoch | loss |\n|---:|---:|---:|"
        );
        let stride = losses.len().div_ceil(20).max(1);
        for (i, (step, epoch, loss)) in losses.iter().enumerate() {
            if i % stride == 0 || i + 1 == losses.len() {
                let _ = writeln!(s, "| {step} | {epoch:.3} | {loss:.4} |");
            }
        }
        s.push('\n');
    }
    if !report.final_evals.is_empty() {
        let _ = writeln!(s, "## Evaluation\n");
        for (i, (name, ev)) in report.final_evals.iter().enumerate() {
            let task = cfg
                .eval
                .get(i)
                .map(|e| format!(" (task {})", format!("{:?}", e.task).to_lowercase()))
                .unwrap_or_default();
            let _ = writeln!(s, "On `{name}`{task} after the last step:\n");
            let _ = writeln!(s, "| metric | value |\n|---|---:|");
            for (k, v) in &ev.values {
                let mark = if *k == ev.primary { " (primary)" } else { "" };
                let _ = writeln!(s, "| {k}{mark} | {v:.4} |");
            }
            if let (0, Some((b, step))) = (i, report.best) {
                let _ = writeln!(s, "\nBest {}: {b:.4} at step {step}.", ev.primary);
            }
            s.push('\n');
        }
        if let (false, Some((name, ev))) = (
            report.matryoshka_evals.is_empty(),
            report.final_evals.first(),
        ) {
            let _ = writeln!(
                s,
                "### By embedding size (Matryoshka)\n\n{} on `{name}` with the embeddings truncated to each trained size (`--truncate-dim`):\n\n| dimensions | {} |\n|---:|---:|",
                ev.primary, ev.primary
            );
            for (d, v) in &report.matryoshka_evals {
                let _ = writeln!(s, "| {d} | {v:.4} |");
            }
            s.push('\n');
        }
    }

    let _ = writeln!(
        s,
        "## Usage\n\nembtune:\n\n```bash\nembtune embed --model {name} --input sentences.txt --output embeddings.npy\nembtune similarity --model {name} \"A man is eating food.\" \"A man is eating a meal.\"\n```\n"
    );
    let _ = writeln!(
        s,
        "Python (sentence-transformers):\n\n```python\nfrom sentence_transformers import SentenceTransformer\nmodel = SentenceTransformer(\"path/to/{name}\")\nembeddings = model.encode([\"A man is eating food.\", \"A man is eating a meal.\"])\nprint(model.similarity(embeddings, embeddings))\n```\n"
    );
    let _ = writeln!(
        s,
        "text-embeddings-inference:\n\n```bash\ndocker run -p 8080:80 -v $PWD/{name}:/data/model ghcr.io/huggingface/text-embeddings-inference:cpu-latest --model-id /data/model\ncurl 127.0.0.1:8080/embed -X POST -d '{{\"inputs\": \"A man is eating food.\"}}' -H 'Content-Type: application/json'\n```\n"
    );
    let _ = writeln!(
        s,
        "## Versions\n\n- embtune {}\n- candle 0.11.1\n",
        env!("CARGO_PKG_VERSION")
    );
    s
}

/// (step, epoch, loss) of every loss line of metrics.jsonl.
fn read_losses(p: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            Some((
                v["step"].as_u64()?,
                v["epoch"].as_f64()?,
                v["loss"].as_f64()?,
            ))
        })
        .collect()
}

/// Writes the card to `<output>/README.md` (atomically).
pub fn write(cfg: &TrainConfig, report: &TrainReport, inp: &CardInput) -> Result<()> {
    crate::fsutil::write_atomic(
        &report.output.join("README.md"),
        render(cfg, report, inp).as_bytes(),
    )
}

/// The card's view of every dataset of the run.
pub(super) fn datasets(parts: &[super::prepare::Part]) -> Vec<CardDataset<'_>> {
    parts
        .iter()
        .map(|part| CardDataset {
            spec: &part.spec,
            rows: part.set.len(),
            columns: &part.set.columns,
            label_column: part.set.label_column.as_deref(),
            examples: (0..part.set.len().min(3))
                .map(|i| {
                    let label = part
                        .set
                        .labels
                        .as_ref()
                        .filter(|_| part.set.label_width() == 1)
                        .and_then(|l| l.get(i).copied());
                    (part.set.texts[i].clone(), label)
                })
                .collect(),
        })
        .collect()
}
