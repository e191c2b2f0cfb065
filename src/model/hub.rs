//! Where a model's files come from: a local directory, or a Hugging Face Hub repo resolved through
//! the hf-hub crate. A file already in the standard Hub cache (`models--org--name/{refs,snapshots}`)
//! is used without network; offline mode (`--offline` or `HF_HUB_OFFLINE=1`) means cache only;
//! when the Hub cannot be reached, a cached snapshot is used as it is (one warning).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// How to reach the Hub. Resolved once from flags and environment.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HubOptions {
    /// Branch, tag or commit (default "main").
    pub revision: Option<String>,
    /// Access token (default `HF_TOKEN`); never written to disk by us.
    #[serde(skip)]
    pub token: Option<String>,
    /// Cache root (default `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Cache only, no network (also on when `HF_HUB_OFFLINE` is 1/true/yes/on).
    pub offline: bool,
}

impl HubOptions {
    /// Fills unset fields from the environment, as huggingface_hub does.
    pub fn with_env(mut self) -> Self {
        if self.token.is_none() {
            self.token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
        }
        if self.cache_dir.is_none() {
            self.cache_dir = Some(default_cache_dir());
        }
        if env_flag("HF_HUB_OFFLINE") {
            self.offline = true;
        }
        self
    }

    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name)
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref(),
        Ok("1" | "true" | "yes" | "on")
    )
}

/// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("huggingface").join("hub")
}

/// Resolves file names of one model to local paths.
#[derive(Debug, Clone)]
pub enum ModelSource {
    Local(PathBuf),
    Hub { repo_id: String, opts: HubOptions },
}

impl ModelSource {
    /// A path that exists is a local directory; `org/name` (or `name`) is a Hub id.
    pub fn parse(spec: &str, opts: HubOptions) -> Result<Self> {
        let p = Path::new(spec);
        if p.exists() {
            if !p.is_dir() {
                bail!(
                    "model {spec}: is a file; expected a model directory or a Hub id like org/name"
                );
            }
            return Ok(ModelSource::Local(p.to_path_buf()));
        }
        let looks_like_path = spec.starts_with('.')
            || spec.starts_with('/')
            || spec.starts_with('~')
            || spec.matches('/').count() > 1
            || spec.is_empty();
        let valid_id = !looks_like_path
            && spec.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !valid_id {
            bail!("model {spec}: no such directory, and not a Hugging Face Hub id (org/name)");
        }
        let opts = opts.with_env();
        // A bare name is a sentence-transformers model when the cache has one by that name, as
        // sentence-transformers resolves `SentenceTransformer("all-MiniLM-L6-v2")`.
        let mut repo_id = spec.to_string();
        if !spec.contains('/') {
            let st = format!("sentence-transformers/{spec}");
            let cache = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
            if cache
                .join(format!("models--{}", st.replace('/', "--")))
                .is_dir()
            {
                tracing::debug!("model {spec}: resolved to {st} (in the Hub cache)");
                repo_id = st;
            }
        }
        Ok(ModelSource::Hub { repo_id, opts })
    }

    /// What to call this model in messages and configs.
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Local(p) => p.display().to_string(),
            ModelSource::Hub { repo_id, opts } => format!("{repo_id}@{}", opts.revision()),
        }
    }

    /// A file the model cannot work without.
    pub fn required(&self, name: &str) -> Result<PathBuf> {
        match self.optional(name)? {
            Some(p) => Ok(p),
            None => match self {
                ModelSource::Local(dir) => bail!(
                    "{}: missing {name} in the model directory",
                    dir.join(name).display()
                ),
                ModelSource::Hub { repo_id, .. } => {
                    bail!("{name}: not found in Hub repo {repo_id}")
                }
            },
        }
    }

    /// A file that may legitimately be absent (e.g. modules.json of a plain HF model).
    pub fn optional(&self, name: &str) -> Result<Option<PathBuf>> {
        match self {
            ModelSource::Local(dir) => {
                let p = dir.join(name);
                if !p.is_file() {
                    return Ok(None);
                }
                // A snapshot of the Hub cache links its files to ../../blobs: the repo folder is
                // the boundary there; anywhere else it is the model directory itself.
                let in_snapshot = dir
                    .parent()
                    .and_then(|s| s.file_name())
                    .is_some_and(|n| n == "snapshots");
                let root = match (in_snapshot, dir.parent().and_then(|s| s.parent())) {
                    (true, Some(repo)) => repo.to_path_buf(),
                    _ => dir.clone(),
                };
                contained(&root, &p)?;
                Ok(Some(p))
            }
            ModelSource::Hub { repo_id, opts } => hub_file(repo_id, opts, name),
        }
    }
}

/// Refuses a file whose real location (symbolic links followed) is outside `root`: a model
/// directory we did not write must not make us read other files of the machine.
fn contained(root: &Path, file: &Path) -> Result<()> {
    let real_root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let real = file
        .canonicalize()
        .with_context(|| format!("resolving {}", file.display()))?;
    if !real.starts_with(&real_root) {
        bail!(
            "{}: a symbolic link to {}, outside the model directory {}; refusing to read it",
            file.display(),
            real.display(),
            root.display()
        );
    }
    Ok(())
}

/// Looks in the cache first (refs/<revision> → snapshots/<commit>/<file>, or a commit hash given
/// as revision); downloads only when online.
fn hub_file(repo_id: &str, opts: &HubOptions, name: &str) -> Result<Option<PathBuf>> {
    let cache = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let repo_dir = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    let rev = opts.revision();
    if let Some(p) = cached(&repo_dir, rev, name) {
        // Snapshot files link into the repo's blobs/; a link leading elsewhere is refused.
        contained(&repo_dir, &p)?;
        return Ok(Some(p));
    }
    if opts.offline {
        if !repo_dir.exists() {
            bail!(
                "model {repo_id}@{rev} is not in the Hugging Face cache ({}) and offline mode is on \
                 (HF_HUB_OFFLINE / --offline); download it with network access, or for \
                 sentence-transformers/all-MiniLM-L6-v2 run scripts/fetch-model.sh",
                repo_dir.display()
            );
        }
        // Absent from the cached snapshot: an optional file is treated as absent.
        return Ok(None);
    }
    // The Hub was unreachable earlier in this process: the cached snapshot is what there is.
    if NETWORK_DOWN.load(std::sync::atomic::Ordering::Relaxed) && snapshot_cached(&repo_dir, rev) {
        return Ok(None);
    }
    download(repo_id, opts, &cache, name, &repo_dir)
}

/// Set when a download failed for want of a network: later lookups of files that the cached
/// snapshot lacks treat them as absent instead of trying again (as huggingface_hub falls back to
/// the cache when the Hub cannot be reached).
static NETWORK_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the cache holds a snapshot of `rev` (its refs entry or the commit's folder).
fn snapshot_cached(repo_dir: &Path, rev: &str) -> bool {
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(rev))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| rev.to_string());
    repo_dir.join("snapshots").join(commit).is_dir()
}

fn cached(repo_dir: &Path, rev: &str, name: &str) -> Option<PathBuf> {
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(rev))
        .ok()
        .map(|s| s.trim().to_string());
    let commit = commit.or_else(|| {
        (rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())).then(|| rev.to_string())
    })?;
    let p = repo_dir.join("snapshots").join(commit).join(name);
    p.is_file().then_some(p)
}

fn download(
    repo_id: &str,
    opts: &HubOptions,
    cache: &Path,
    name: &str,
    repo_dir: &Path,
) -> Result<Option<PathBuf>> {
    use hf_hub::api::sync::{ApiBuilder, ApiError};
    use hf_hub::{Repo, RepoType};
    // from_env: HF_ENDPOINT (a mirror) is honoured, as huggingface_hub does.
    let api = ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_token(opts.token.clone())
        .with_progress(false)
        .build()
        .context("setting up the Hugging Face Hub client")?;
    let repo = api.repo(Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        opts.revision().to_string(),
    ));
    match repo.get(name) {
        Ok(p) => Ok(Some(p)),
        Err(ApiError::RequestError(e)) if matches!(*e, ureq::Error::Status(404, _)) => Ok(None),
        Err(ApiError::RequestError(e))
            if matches!(*e, ureq::Error::Transport(_))
                && snapshot_cached(repo_dir, opts.revision()) =>
        {
            // No network, but the model is cached: use the snapshot, as huggingface_hub does.
            if !NETWORK_DOWN.swap(true, std::sync::atomic::Ordering::Relaxed) {
                let reason = match e.as_ref() {
                    ureq::Error::Transport(t) => t.kind().to_string(),
                    _ => String::new(),
                };
                tracing::warn!(
                    "warning: the Hugging Face Hub cannot be reached ({reason}); using the cached snapshot of {repo_id} (HF_HUB_OFFLINE=1 or --offline skips the network)"
                );
            }
            Ok(None)
        }
        Err(e) => {
            // One line: the reason without the URL (ureq and hf-hub each repeat it).
            let reason = match &e {
                ApiError::RequestError(r) => match r.as_ref() {
                    ureq::Error::Status(code, _) => format!("HTTP {code}"),
                    ureq::Error::Transport(t) => t.kind().to_string(),
                },
                other => other.to_string().lines().next().unwrap_or("").to_string(),
            };
            // (The caller's context names the model.)
            bail!(
                "cannot download {name} from the Hugging Face Hub ({reason}) and the cache {} does not have it; check the network (HF_TOKEN for private repos), or pass --offline / HF_HUB_OFFLINE=1 to use the cache only",
                cache.display()
            )
        }
    }
}
