//! Hugging Face Hub datasets: `hf://datasets/<org>/<name>[/<config>][@<revision>]` with a split →
//! the repo's parquet files, from the standard cache (`datasets--org--name/{refs,snapshots}`)
//! first, downloaded through the hf-hub crate only when online (`HF_HUB_OFFLINE=1` honoured).
//! File layouts understood: `<config>/<split>-NNNNN-of-NNNNN.parquet` (push_to_hub, named config),
//! `data/<split>-….parquet` (default config), `<config>/<split>/NNNN.parquet` (the
//! refs/convert/parquet branch). README `configs:` YAML is not read yet.

use crate::model::hub::{default_cache_dir, HubOptions};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A parsed `hf://datasets/...` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRef {
    pub repo_id: String,
    pub config: Option<String>,
    pub revision: String,
}

pub const PREFIX: &str = "hf://datasets/";

impl DatasetRef {
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s.strip_prefix(PREFIX).with_context(|| {
            format!("{s}: expected hf://datasets/<org>/<name>[/<config>][@<revision>]")
        })?;
        let (path, revision) = match rest.split_once('@') {
            Some((p, r)) => (p, r.to_string()),
            None => (rest, "main".to_string()),
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let ok = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && p != ".."
                && p != "."
        };
        match parts.as_slice() {
            [org, name] if ok(org) && ok(name) => Ok(Self {
                repo_id: format!("{org}/{name}"),
                config: None,
                revision,
            }),
            [org, name, config] if ok(org) && ok(name) && ok(config) => Ok(Self {
                repo_id: format!("{org}/{name}"),
                config: Some(config.to_string()),
                revision,
            }),
            _ => bail!("{s}: expected hf://datasets/<org>/<name>[/<config>][@<revision>]"),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{PREFIX}{}{}@{}",
            self.repo_id,
            self.config
                .as_ref()
                .map(|c| format!("/{c}"))
                .unwrap_or_default(),
            self.revision
        )
    }
}

/// Does repo-relative `file` belong to `config` (None = default) and `split`?
pub fn matches(file: &str, config: Option<&str>, split: &str) -> bool {
    if !file.ends_with(".parquet") {
        return false;
    }
    let parts: Vec<&str> = file.split('/').collect();
    let name = parts.last().copied().unwrap_or("");
    let shard = |n: &str| {
        n.strip_prefix(split)
            .is_some_and(|rest| rest.starts_with('-') || rest.starts_with('.'))
    };
    match (config, parts.as_slice()) {
        // data/<split>-00000-of-00001.parquet (default config)
        (None, ["data", _]) => shard(name),
        (None | Some("default"), ["default", d, _]) => *d == split,
        // <config>/<split>-….parquet or <config>/<split>/0000.parquet (refs/convert/parquet)
        (Some(c), [dir, _]) => dir == &c && shard(name),
        (Some(c), [dir, d, _]) => dir == &c && (*d == split || *d == format!("partial-{split}")),
        // A repo with bare <split>.parquet files at the top.
        (None, [_]) => shard(name),
        _ => false,
    }
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, base, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The local parquet files of the dataset's split, sorted (shard order).
pub fn resolve(r: &DatasetRef, split: &str, opts: &HubOptions) -> Result<Vec<PathBuf>> {
    let opts = opts.clone().with_env();
    let cache = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let repo_dir = cache.join(format!("datasets--{}", r.repo_id.replace('/', "--")));
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(&r.revision))
        .ok()
        .map(|s| s.trim().to_string())
        .or_else(|| (r.revision.len() == 40).then(|| r.revision.clone()));
    if let Some(commit) = commit {
        let snap = repo_dir.join("snapshots").join(&commit);
        let mut files = Vec::new();
        walk(&snap, &snap, &mut files);
        let mut hits: Vec<String> = files
            .iter()
            .filter(|f| matches(f, r.config.as_deref(), split))
            .cloned()
            .collect();
        hits.sort();
        if !hits.is_empty() {
            return Ok(hits.into_iter().map(|f| snap.join(f)).collect());
        }
        if opts.offline {
            let mut all: Vec<&String> = files.iter().filter(|f| f.ends_with(".parquet")).collect();
            all.sort();
            bail!(
                "{}: no parquet files for split {split:?} in the cached snapshot {} (parquet files there: {})",
                r.describe(),
                snap.display(),
                if all.is_empty() { "none".to_string() } else { all.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") }
            );
        }
    } else if opts.offline {
        bail!(
            "{}: not in the Hugging Face cache ({}) and offline mode is on (HF_HUB_OFFLINE / --offline); download it with network access first",
            r.describe(),
            repo_dir.display()
        );
    }
    download(r, split, &opts, &cache)
}

fn download(r: &DatasetRef, split: &str, opts: &HubOptions, cache: &Path) -> Result<Vec<PathBuf>> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    let api = ApiBuilder::new()
        .with_cache_dir(cache.to_path_buf())
        .with_token(opts.token.clone())
        .with_progress(false)
        .build()?;
    let repo = api.repo(Repo::with_revision(
        r.repo_id.clone(),
        RepoType::Dataset,
        r.revision.clone(),
    ));
    let info = repo
        .info()
        .with_context(|| format!("listing the files of {}", r.describe()))?;
    let mut files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|f| matches(f, r.config.as_deref(), split))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no parquet files for split {split:?}", r.describe());
    }
    files
        .iter()
        .map(|f| {
            repo.get(f)
                .with_context(|| format!("downloading {f} of {}", r.describe()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references() {
        let r =
            DatasetRef::parse("hf://datasets/sentence-transformers/all-nli/triplet@refs%2Fconvert")
                .unwrap();
        assert_eq!(r.repo_id, "sentence-transformers/all-nli");
        assert_eq!(r.config.as_deref(), Some("triplet"));
        assert!(DatasetRef::parse("hf://datasets/../x").is_err());
        assert_eq!(
            DatasetRef::parse("hf://datasets/a/b").unwrap().revision,
            "main"
        );
    }

    #[test]
    fn file_layouts() {
        assert!(matches("data/train-00000-of-00002.parquet", None, "train"));
        assert!(!matches("data/test-00000-of-00001.parquet", None, "train"));
        assert!(matches(
            "triplet/train-00000-of-00001.parquet",
            Some("triplet"),
            "train"
        ));
        assert!(!matches(
            "pair/train-00000-of-00001.parquet",
            Some("triplet"),
            "train"
        ));
        assert!(matches("triplet/dev/0000.parquet", Some("triplet"), "dev"));
        assert!(!matches("data/training-x.parquet", None, "train"));
    }
}
