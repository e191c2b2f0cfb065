//! Sharded export: `embed --shard K/N` encodes a contiguous slice of the input's rows (by row
//! count, so every reader of the same file gives the same slices) into its own output
//! `<stem>-KKKKK-of-NNNNN.<ext>` with a sidecar `<that>.shard.json` (model, settings, input
//! checksum, rows); `--shard auto` takes K and N from a Slurm array
//! (`SLURM_ARRAY_TASK_ID` with `SLURM_ARRAY_TASK_COUNT` or `_MIN`/`_MAX`/`_STEP`) or a Kubernetes
//! Indexed Job (`JOB_COMPLETION_INDEX`, with `--shards N`). `embtune merge` joins the shards in
//! order into one output — on the CPU the bytes a single run writes (a text's embedding does
//! not depend on its batch there) — refusing missing, repeated or mismatched shards. Depends on `embed_write` and serde_json.

use crate::embed_write::{Elem, OutputFormat, OutputWriter};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One shard of `count` (0-based `index`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `--shard K/N`, or `auto` resolved from `env` (the scheduler's variables) and `--shards`.
    pub fn resolve(
        arg: &str,
        shards: Option<usize>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Shard> {
        if arg == "auto" {
            return Self::auto(shards, env);
        }
        if shards.is_some() {
            bail!("--shards applies only to --shard auto (with JOB_COMPLETION_INDEX); --shard {arg} gives the count itself");
        }
        let parsed = arg.split_once('/').and_then(|(k, n)| {
            Some((
                k.trim().parse::<usize>().ok()?,
                n.trim().parse::<usize>().ok()?,
            ))
        });
        let Some((index, count)) = parsed else {
            bail!("--shard {arg:?}: expected K/N (0-based shard K of N, e.g. 0/4) or auto");
        };
        Self::checked(index, count, &format!("--shard {arg}"))
    }

    fn checked(index: usize, count: usize, what: &str) -> Result<Shard> {
        if count == 0 {
            bail!("{what}: the number of shards must be at least 1");
        }
        if index >= count {
            bail!(
                "{what}: shard {index} of {count} does not exist (shards are numbered from 0: 0/{count} … {}/{count})",
                count - 1
            );
        }
        Ok(Shard { index, count })
    }

    fn auto(shards: Option<usize>, env: &dyn Fn(&str) -> Option<String>) -> Result<Shard> {
        let num = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| {
                    anyhow::anyhow!("--shard auto: {name}={v:?} is not a whole number")
                }),
            }
        };
        if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let count = match (num("SLURM_ARRAY_TASK_COUNT")?, num("SLURM_ARRAY_TASK_MAX")?) {
                (Some(c), _) => c,
                (None, Some(max)) if max >= min => (max - min) / step + 1,
                _ => bail!("--shard auto: SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX: is this an array job (sbatch --array)?"),
            };
            if id < min || (id - min) % step != 0 {
                bail!("--shard auto: SLURM_ARRAY_TASK_ID={id} is not in the array {min}..(step {step})");
            }
            let what = format!("--shard auto (SLURM_ARRAY_TASK_ID={id})");
            return Self::checked((id - min) / step, shards.unwrap_or(count), &what);
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let Some(count) = shards else {
                bail!("--shard auto: JOB_COMPLETION_INDEX={index} is set (a Kubernetes Indexed Job): pass --shards N, the Job's completions");
            };
            return Self::checked(
                index,
                count,
                &format!("--shard auto (JOB_COMPLETION_INDEX={index})"),
            );
        }
        bail!("--shard auto: no scheduler variables found (SLURM_ARRAY_TASK_ID of a Slurm array, or JOB_COMPLETION_INDEX of a Kubernetes Indexed Job with --shards N); pass --shard K/N")
    }

    /// This shard's rows of `total`: `[K·total/N, (K+1)·total/N)`.
    pub fn rows(&self, total: usize) -> Range<usize> {
        let at = |k: usize| ((k as u128 * total as u128) / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }

    /// The shard's output file next to `output`: `<stem>-KKKKK-of-NNNNN.<ext>`.
    pub fn output_path(&self, output: &Path) -> PathBuf {
        shard_path(output, self.index, self.count)
    }
}

fn shard_path(output: &Path, index: usize, count: usize) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = output
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!("{stem}-{index:05}-of-{count:05}.{ext}"))
}

/// Where a shard output's sidecar is: `<output>.shard.json`.
pub fn sidecar_path(output: &Path) -> PathBuf {
    crate::fsutil::with_name_suffix(output, ".shard.json")
}

/// More shards than this in a sidecar is taken for a damaged file.
const MAX_SHARDS: usize = 1_000_000;

/// What a shard records about itself (written after its output).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sidecar {
    pub embtune: String,
    pub shard: usize,
    pub shards: usize,
    /// Rows of the whole input, and this shard's first row and row count.
    pub rows_total: usize,
    pub row_start: usize,
    pub rows: usize,
    pub input: String,
    pub input_sha256: String,
    /// Model, column, prompt, normalisation, precision, truncation: must agree across shards.
    pub settings: serde_json::Value,
    pub format: OutputFormat,
    /// Values per row in the output (the dimension; ⌈dim/8⌉ for binary).
    pub cols: usize,
    pub precision: crate::quantize::Precision,
    /// The int8/uint8 ranges file written beside the shard, if any.
    pub ranges_file: Option<String>,
}

impl Sidecar {
    pub fn save(&self, output: &Path) -> Result<()> {
        crate::fsutil::write_atomic(&sidecar_path(output), &serde_json::to_vec_pretty(self)?)
    }

    fn load(output: &Path) -> Result<Sidecar> {
        let p = sidecar_path(output);
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!("{}: no shard sidecar {} (not an `embed --shard` output, or its run did not finish)", output.display(), p.display())
        })?;
        let c: Sidecar = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a shard sidecar", p.display()))?;
        if c.shards == 0 || c.shards > MAX_SHARDS || c.shard >= c.shards {
            bail!(
                "{}: shard {} of {}: not a valid shard (edited?)",
                p.display(),
                c.shard,
                c.shards
            );
        }
        Ok(c)
    }
}

/// What `merge` did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub output: PathBuf,
    pub shards: usize,
    pub rows: usize,
    pub ranges_file: Option<PathBuf>,
}

/// The shard outputs of `output` in its folder (`<stem>-?????-of-?????.<ext>`).
pub fn find_shards(output: &Path) -> Result<Vec<PathBuf>> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = output
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut v = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        let Some(mid) = name
            .strip_prefix(&format!("{stem}-"))
            .and_then(|r| r.strip_suffix(&format!(".{ext}")))
        else {
            continue;
        };
        let ok = mid.len() == 14
            && mid.as_bytes()[5..9] == *b"-of-"
            && mid[..5].bytes().all(|b| b.is_ascii_digit())
            && mid[9..].bytes().all(|b| b.is_ascii_digit());
        if ok {
            v.push(dir.join(name));
        }
    }
    v.sort();
    if v.is_empty() {
        bail!(
            "no shards of {} found (expected {} …); pass the shard files",
            output.display(),
            shard_path(output, 0, 1)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        );
    }
    Ok(v)
}

/// Joins shard outputs (in any order) into `output`, checking they are the N shards of one job.
pub fn merge(output: &Path, inputs: &[PathBuf]) -> Result<MergeReport> {
    let format = OutputFormat::from_path(output)?;
    crate::fsutil::check_writable_file(output)?;
    let mut cars: Vec<(PathBuf, Sidecar)> = Vec::new();
    for p in inputs {
        if !p.is_file() {
            bail!("{}: no such shard file", p.display());
        }
        cars.push((p.clone(), Sidecar::load(p)?));
    }
    let (p0, c0) = cars.first().context("merge: no shard files given")?.clone();
    for (p, c) in &cars {
        if c.format != format {
            bail!(
                "{}: a {:?} shard cannot be merged into {}",
                p.display(),
                c.format,
                output.display()
            );
        }
        let differs = |what: &str| -> Result<()> {
            bail!(
                "{}: {what} differs from {}'s: shards of different jobs cannot be merged",
                p.display(),
                p0.display()
            )
        };
        if c.shards != c0.shards {
            bail!(
                "{}: shard {} of {}, but {} is one of {}",
                p.display(),
                c.shard,
                c.shards,
                p0.display(),
                c0.shards
            );
        }
        if c.input_sha256 != c0.input_sha256 || c.rows_total != c0.rows_total {
            differs("the input (checksum)")?;
        }
        if c.settings.get("model") != c0.settings.get("model") {
            differs("the model")?;
        }
        if c.settings != c0.settings || c.precision != c0.precision || c.cols != c0.cols {
            differs("the settings (column, prompt, normalisation, precision or dimension)")?;
        }
    }
    let n = c0.shards;
    let mut by_index: Vec<Option<&(PathBuf, Sidecar)>> = vec![None; n];
    for entry in &cars {
        let k = entry.1.shard;
        if let Some(prev) = by_index[k] {
            bail!(
                "two copies of shard {k} of {n}: {} and {}",
                prev.0.display(),
                entry.0.display()
            );
        }
        by_index[k] = Some(entry);
    }
    if let Some(k) = by_index.iter().position(|e| e.is_none()) {
        bail!(
            "shard {k} of {n} is missing (expected {}); run `embed --shard {k}/{n}` for it",
            shard_path(output, k, n).display()
        );
    }
    let shards: Vec<&(PathBuf, Sidecar)> = by_index.into_iter().flatten().collect();
    let mut next = 0;
    for (p, c) in &shards {
        if c.row_start != next {
            bail!(
                "{}: starts at row {} but the shards before it end at row {next}",
                p.display(),
                c.row_start
            );
        }
        next += c.rows;
    }
    if next != c0.rows_total {
        bail!(
            "the shards hold {next} rows but the input has {}",
            c0.rows_total
        );
    }
    // int8/uint8: every shard must have used the same ranges (given, or from one calibration).
    let ranges_file = match &c0.ranges_file {
        None => None,
        Some(_) => {
            let read = |(p, c): &(PathBuf, Sidecar)| -> Result<Vec<u8>> {
                let f = p.with_file_name(c.ranges_file.as_deref().unwrap_or_default());
                std::fs::read(&f).with_context(|| format!("reading {}", f.display()))
            };
            let first = read(shards[0])?;
            for s in &shards[1..] {
                if read(s)? != first {
                    bail!(
                        "{}: its int8/uint8 ranges differ from shard 0's",
                        s.0.display()
                    );
                }
            }
            let out = crate::embed::ranges_path(output);
            crate::fsutil::write_atomic(&out, &first)?;
            Some(out)
        }
    };
    let elem = Elem::of(c0.precision);
    let mut w = OutputWriter::create(output, format, elem, c0.rows_total, c0.cols)?;
    for (p, c) in &shards {
        w.append_file(p, c.rows)?;
    }
    w.finish()?;
    Ok(MergeReport {
        output: output.to_path_buf(),
        shards: n,
        rows: c0.rows_total,
        ranges_file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn fixed_and_auto_shards() {
        let none = env(&[]);
        assert_eq!(
            Shard::resolve("1/3", None, &none).unwrap(),
            Shard { index: 1, count: 3 }
        );
        for bad in ["3/3", "0/0", "x", "1-3"] {
            assert!(Shard::resolve(bad, None, &none).is_err(), "{bad}");
        }
        let e = Shard::resolve("auto", None, &none).unwrap_err().to_string();
        assert!(e.contains("no scheduler variables"), "{e}");
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(
            Shard::resolve("auto", None, &slurm).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let minmax = env(&[
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_MAX", "8"),
        ]);
        assert_eq!(
            Shard::resolve("auto", None, &minmax).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let step = env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "6"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]);
        assert_eq!(
            Shard::resolve("auto", None, &step).unwrap(),
            Shard { index: 2, count: 4 }
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "0")]);
        assert_eq!(
            Shard::resolve("auto", Some(5), &k8s).unwrap(),
            Shard { index: 0, count: 5 }
        );
        assert!(Shard::resolve("auto", None, &k8s)
            .unwrap_err()
            .to_string()
            .contains("--shards"));
        assert!(Shard::resolve("auto", Some(2), &env(&[("JOB_COMPLETION_INDEX", "2")])).is_err());
    }

    #[test]
    fn slices_tile_the_rows() {
        for total in [0, 1, 2, 7, 100, 1001] {
            for count in 1..6 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.rows(total);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
    }
}
