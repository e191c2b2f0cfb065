//! Multi-dataset training (sentence-transformers' dict datasets and losses): the datasets of a
//! run ([`DatasetSpec`], from `--dataset "data=…;loss=…"` flags or a recipe's `[[datasets]]`
//! tables), and the order in which their batches are drawn ([`Sampler`], ST's
//! `MultiDatasetBatchSamplers`). A run without `--dataset` is one dataset made from the
//! top-level flags (`TrainConfig::parts`), so the loop has one code path. Every batch — every
//! optimizer step, with `--grad-accum` — comes from one dataset; the order is a pure function of
//! the seed and the epoch, so resume needs only the step. Depends on data, loss.

use super::batcher::epoch_batches;
use crate::data::{ColumnSpec, DataFormat};
use crate::loss::{Distance, LossKind, LossParams};
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One dataset with its loss.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Its name in logs (`loss_<name>` in metrics.jsonl) and the model card [default: the file
    /// stem].
    pub name: String,
    pub data: PathBuf,
    pub format: Option<DataFormat>,
    pub columns: ColumnSpec,
    pub loss: LossKind,
    pub loss_params: LossParams,
    /// Prompts per column (`--prompts` syntax).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<(String, String)>,
    /// The loss is multiplied by this [default 1].
    pub weight: f64,
}

/// How the batches of several datasets are ordered (`--multi-dataset-sampler`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    /// Every batch of every dataset once per epoch, the datasets in a seeded random order, so
    /// each is drawn in proportion to its size (ST's default, PROPORTIONAL).
    #[default]
    Proportional,
    /// One batch of each dataset in turn; the epoch ends when the smallest runs out
    /// (ROUND_ROBIN).
    RoundRobin,
}

/// The keys `--dataset` takes.
pub const KEYS: &[&str] = &[
    "name",
    "data",
    "format",
    "columns",
    "label-column",
    "loss",
    "scale",
    "margin",
    "distance",
    "symmetric",
    "temperature",
    "prompts",
    "weight",
];

impl DatasetSpec {
    /// Parses `key=value;key=value` (the keys of [`KEYS`]; `columns` a comma list).
    pub fn parse(spec: &str) -> Result<Self> {
        let mut kv: Vec<(String, String)> = Vec::new();
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                bail!(
                    "--dataset {spec:?}: {part:?} is not key=value (keys: {})",
                    KEYS.join(", ")
                );
            };
            let k = k.trim().replace('_', "-");
            if !KEYS.contains(&k.as_str()) {
                bail!(
                    "--dataset {spec:?}: unknown key {k:?} (keys: {})",
                    KEYS.join(", ")
                );
            }
            kv.push((k, v.trim().to_string()));
        }
        let get = |k: &str| {
            kv.iter()
                .rev()
                .find(|(x, _)| x == k)
                .map(|(_, v)| v.as_str())
        };
        let enum_of = |k: &str, v: &str| -> Result<_> {
            Ok(
                <LossKind as clap::ValueEnum>::from_str(v, false).map_err(|_| {
                    anyhow::anyhow!(
                        "--dataset {spec:?}: {k}={v:?} is not a loss (see --help for --loss)"
                    )
                })?,
            )
        };
        let num = |k: &str| -> Result<Option<f64>> {
            get(k)
                .map(|v| {
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .with_context(|| format!("--dataset {spec:?}: {k}={v:?} is not a number"))
                })
                .transpose()
        };
        let data = PathBuf::from(
            get("data").with_context(|| format!("--dataset {spec:?}: give its data=FILE"))?,
        );
        let loss = enum_of(
            "loss",
            get("loss").with_context(|| format!("--dataset {spec:?}: give its loss=…"))?,
        )?;
        let format = get("format")
            .map(|v| {
                <DataFormat as clap::ValueEnum>::from_str(v, false).map_err(|_| {
                    anyhow::anyhow!("--dataset {spec:?}: format={v:?} is not a data format")
                })
            })
            .transpose()?;
        let distance = get("distance")
            .map(|v| {
                <Distance as clap::ValueEnum>::from_str(v, false).map_err(|_| {
                    anyhow::anyhow!(
                        "--dataset {spec:?}: distance={v:?} is not cosine, euclidean or manhattan"
                    )
                })
            })
            .transpose()?;
        let symmetric = match get("symmetric") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => bail!("--dataset {spec:?}: symmetric={v:?}: expected true or false"),
        };
        let cols: Vec<String> = get("columns")
            .map(|c| c.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default();
        let columns = crate::data::columns::training_columns(
            crate::data::ColumnsArg::parse(&cols)?,
            get("label-column").map(String::from),
        )?;
        let prompts = match get("prompts") {
            Some(p) => super::prompts::parse(p)?,
            None => Vec::new(),
        };
        let weight = num("weight")?.unwrap_or(1.0);
        if weight <= 0.0 {
            bail!("--dataset {spec:?}: weight must be > 0, got {weight}");
        }
        let name = get("name").map(String::from).unwrap_or_else(|| {
            data.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "data".into())
        });
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '.') {
            bail!("--dataset {spec:?}: name={name:?}: give a name without spaces or dots");
        }
        Ok(Self {
            name,
            data,
            format,
            columns,
            loss,
            loss_params: LossParams {
                scale: num("scale")?,
                margin: num("margin")?,
                distance,
                symmetric,
                temperature: num("temperature")?,
            },
            prompts,
            weight,
        })
    }
}

/// Which dataset each optimizer step draws from, and its batches of rows.
pub type Plan = Vec<(usize, Vec<Vec<usize>>)>;

/// The steps of one epoch: each dataset's batches (its own seeded shuffle, `no_dup[d]` for its
/// loss) grouped `accum` to a step, then the datasets' steps ordered by the sampler.
pub fn epoch_plan(
    texts: &[&[Vec<String>]],
    no_dup: &[bool],
    batch_size: usize,
    accum: usize,
    seed: u64,
    epoch: usize,
    shuffle: bool,
    sampler: Sampler,
) -> Plan {
    let mut per: Vec<std::collections::VecDeque<Vec<Vec<usize>>>> = texts
        .iter()
        .enumerate()
        .map(|(d, t)| {
            // Dataset 0 keeps the single-dataset stream, so one dataset trains as before.
            let s = seed.wrapping_add((d as u64) << 32);
            let b = epoch_batches(t, batch_size, s, epoch, shuffle, no_dup[d]);
            b.chunks(accum.max(1)).map(|c| c.to_vec()).collect()
        })
        .collect();
    let mut order: Vec<usize> = Vec::new();
    match sampler {
        Sampler::Proportional => {
            for (d, steps) in per.iter().enumerate() {
                order.extend(std::iter::repeat_n(d, steps.len()));
            }
            if per.len() > 1 {
                Rng::with_stream(seed, 2_000 + epoch as u64).shuffle(&mut order);
            }
        }
        Sampler::RoundRobin => {
            let rounds = per.iter().map(|s| s.len()).min().unwrap_or(0);
            for _ in 0..rounds {
                order.extend(0..per.len());
            }
        }
    }
    order
        .into_iter()
        .filter_map(|d| per[d].pop_front().map(|s| (d, s)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, tag: &str) -> Vec<Vec<String>> {
        (0..n)
            .map(|i| vec![format!("{tag}{i}"), format!("{tag}x{i}")])
            .collect()
    }

    #[test]
    fn proportional_uses_every_batch_once_round_robin_stops_at_the_smallest() {
        let (a, b) = (rows(40, "a"), rows(8, "b"));
        let t: Vec<&[Vec<String>]> = vec![&a, &b];
        let p = epoch_plan(&t, &[false, false], 4, 1, 7, 0, true, Sampler::Proportional);
        assert_eq!(p.len(), 10 + 2);
        assert_eq!(p.iter().filter(|(d, _)| *d == 1).count(), 2);
        // Seeded: the same plan again, another one for another epoch.
        assert_eq!(
            p,
            epoch_plan(&t, &[false, false], 4, 1, 7, 0, true, Sampler::Proportional)
        );
        assert_ne!(
            p,
            epoch_plan(&t, &[false, false], 4, 1, 7, 1, true, Sampler::Proportional)
        );
        // Every row of each dataset once.
        for d in 0..2 {
            let mut all: Vec<usize> = p
                .iter()
                .filter(|(x, _)| *x == d)
                .flat_map(|(_, s)| s.concat())
                .collect();
            all.sort();
            assert_eq!(all, (0..t[d].len()).collect::<Vec<_>>());
        }
        let r = epoch_plan(&t, &[false, false], 4, 1, 7, 0, true, Sampler::RoundRobin);
        assert_eq!(
            r.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            vec![0, 1, 0, 1]
        );
        // One dataset: exactly the single-dataset batches.
        let one = epoch_plan(&t[..1], &[false], 4, 1, 7, 0, true, Sampler::Proportional);
        let plain = epoch_batches(&a, 4, 7, 0, true, false);
        assert_eq!(
            one.into_iter()
                .map(|(_, s)| s[0].clone())
                .collect::<Vec<_>>(),
            plain
        );
        // Accumulation: each step's batches from one dataset.
        let g = epoch_plan(&t, &[false, false], 4, 2, 7, 0, true, Sampler::Proportional);
        assert_eq!(g.len(), 5 + 1);
        assert!(g.iter().all(|(_, s)| s.len() == 2));
    }

    #[test]
    fn dataset_specs_parse_and_bad_ones_name_the_key() {
        let d = DatasetSpec::parse(
            "data=a/nli.tsv; loss=softmax; weight=0.5; columns=p,h; label-column=label",
        )
        .unwrap();
        assert_eq!(
            (d.name.as_str(), d.loss, d.weight),
            ("nli", LossKind::Softmax, 0.5)
        );
        assert_eq!(d.columns.label_column.as_deref(), Some("label"));
        for (bad, needle) in [
            ("data=a.tsv", "give its loss"),
            ("loss=cosent", "give its data"),
            ("data=a.tsv;loss=nope", "not a loss"),
            (
                "data=a.tsv;loss=cosent;colour=red",
                "unknown key \"colour\"",
            ),
            ("data=a.tsv;loss=cosent;weight=-1", "weight must be > 0"),
            (
                "data=a.tsv;loss=cosent;scale=big",
                "scale=\"big\" is not a number",
            ),
        ] {
            let e = DatasetSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }
}
