//! Files that are never half-written: write to a temporary name in the same directory, fsync,
//! rename into place, fsync the directory. Used for every output and checkpoint. Also a file's
//! size and sha256, read in pieces (checkpoint manifests, embed job keys, shard sidecars), and
//! the names of a file's companions (`with_name_suffix`).

use anyhow::{Context, Result};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` and fsyncs it (the caller handles atomicity, e.g. inside a temp dir).
pub fn write_file_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// Creates `dir` (and its parents) and checks that files can be written in it: done before any
/// long work, so a bad output location fails in the first second, not after the work.
pub fn check_writable_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("output directory {} cannot be created", dir.display()))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    fs::write(&probe, b"ok")
        .with_context(|| format!("output directory {} is not writable", dir.display()))?;
    fs::remove_file(&probe).ok();
    Ok(())
}

/// [`check_writable_dir`] for the directory an output file will be written into (created when
/// missing), and refuses a path that is a directory.
pub fn check_writable_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        anyhow::bail!("output {} is a directory; give a file name", path.display());
    }
    check_writable_dir(&parent_dir(path)).with_context(|| format!("output {}", path.display()))
}

/// A sibling temporary path: `<dir>/.<name>.tmp-<pid>`.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = parent_dir(path);
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) {
    // Best effort: some filesystems refuse to fsync directories.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes a whole file atomically: a reader sees the old content or the new, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path);
    let res = write_file_synced(&tmp, bytes).and_then(|_| {
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    });
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    sync_dir(&parent_dir(path));
    Ok(())
}

/// Fsyncs a finished temporary file and renames it to `path`.
pub fn commit_temp(tmp: &Path, path: &Path) -> Result<()> {
    fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(&parent_dir(path));
    Ok(())
}

/// Streams into a temporary file and renames it into place on [`AtomicFile::commit`];
/// dropped without commit, the temporary file is removed and `path` is untouched.
pub struct AtomicFile {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<std::io::BufWriter<fs::File>>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temp_sibling(path);
        let f = fs::File::create(&tmp)
            .with_context(|| format!("creating {} (for {})", tmp.display(), path.display()))?;
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
            file: Some(std::io::BufWriter::new(f)),
        })
    }

    pub fn writer(&mut self) -> Result<&mut std::io::BufWriter<fs::File>> {
        self.file
            .as_mut()
            .with_context(|| format!("{}: already committed", self.path.display()))
    }

    pub fn commit(mut self) -> Result<()> {
        let w = self
            .file
            .take()
            .with_context(|| format!("{}: already committed", self.path.display()))?;
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", self.path.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        fs::rename(&self.tmp, &self.path).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.path.display())
        })?;
        sync_dir(&parent_dir(&self.path));
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Fills a fresh temporary directory with `fill`, then swaps it in for `target`. An existing
/// `target` is moved aside first and removed only after the new one is in place, so at every
/// moment `target` is either absent, the complete old directory, or the complete new one.
pub fn write_dir_atomic(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = parent_dir(target);
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = temp_sibling(target);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sync_dir(&tmp);
    let old = parent.join(format!(
        ".{}.old-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let had_old = target.exists();
    if had_old {
        fs::rename(target, &old).with_context(|| format!("moving aside {}", target.display()))?;
    }
    if let Err(e) = fs::rename(&tmp, target) {
        if had_old {
            let _ = fs::rename(&old, target);
        }
        return Err(e)
            .with_context(|| format!("renaming {} to {}", tmp.display(), target.display()));
    }
    sync_dir(&parent);
    if had_old {
        fs::remove_dir_all(&old).with_context(|| format!("removing old {}", old.display()))?;
    }
    Ok(())
}

/// Fills a temporary directory inside `target` with `fill`, then renames each of its entries into
/// `target` (replacing same-named files or directories). Other entries of `target` (logs,
/// checkpoints) stay. Each entry appears complete; used for a model saved next to run outputs.
pub fn write_entries_into(target: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    let tmp = target.join(format!(".save.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    for e in fs::read_dir(&tmp).with_context(|| format!("listing {}", tmp.display()))? {
        let e = e?;
        let dest = target.join(e.file_name());
        if dest.is_dir() && e.path().is_dir() {
            fs::remove_dir_all(&dest).with_context(|| format!("replacing {}", dest.display()))?;
        }
        fs::rename(e.path(), &dest)
            .with_context(|| format!("moving {} into place", dest.display()))?;
    }
    fs::remove_dir_all(&tmp).ok();
    sync_dir(target);
    Ok(())
}

/// The size and sha256 (hex) of a file, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    let hex = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((size, hex))
}

/// `path` with `suffix` appended to its file name (`out.npy` → `out.npy.parts`): where a
/// file's companions live (parts, ranges, shard sidecars, caches).
pub fn with_name_suffix(path: &Path, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{name}{suffix}"))
}
