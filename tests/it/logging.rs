//! Logging levels on stderr: `-q`, `-v`/`-vv` and `RUST_LOG` (through `tracing`), on a real
//! `embed` run whose summary line ("wrote N … embeddings") is an INFO event.

use crate::common;
use std::process::Output;

const SUMMARY: &str = "wrote 2 float32 embeddings";

/// `embtune embed` of two texts with the real model; `extra` flags and an optional RUST_LOG
/// (RUST_LOG is removed otherwise, so the flags decide).
fn embed(extra: &[&str], rust_log: Option<&str>) -> (Output, String) {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("t.txt");
    std::fs::write(&input, "hello world\nanother text\n").unwrap();
    let out_path = tmp.path().join("e.npy");
    let mut c = common::embtune_cmd_offline();
    c.args(["embed", "-m", common::REAL_MODEL, "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&out_path)
        .args(extra);
    c.env_remove("RUST_LOG");
    if let Some(l) = rust_log {
        c.env("RUST_LOG", l);
    }
    let out = c.output().expect("running embtune");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "embed failed: {err}");
    assert!(out_path.is_file(), "no output written; stderr: {err}");
    (out, err)
}

fn debug_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.contains(" DEBUG ")).collect()
}

#[test]
fn default_shows_the_plain_summary_and_no_debug() {
    let (_, err) = embed(&[], None);
    let line = err
        .lines()
        .find(|l| l.contains(SUMMARY))
        .unwrap_or_else(|| panic!("no summary line at the default level: {err}"));
    assert!(
        line.starts_with("wrote "),
        "the default format is the bare message (no time/level/target): {line:?}"
    );
    assert!(
        debug_lines(&err).is_empty(),
        "DEBUG lines by default: {err}"
    );
}

#[test]
fn quiet_removes_the_info_lines() {
    let (_, err) = embed(&["-q"], None);
    assert!(
        !err.contains(SUMMARY),
        "-q still prints the INFO summary: {err}"
    );
    assert!(
        err.trim().is_empty(),
        "-q on a clean run should print nothing: {err}"
    );
}

#[test]
fn verbose_adds_debug_lines_with_level_and_target() {
    // -v is global: after the subcommand here, before it in the next test.
    let (_, err) = embed(&["-v"], None);
    let dbg = debug_lines(&err);
    assert!(
        dbg.iter().any(|l| l.contains("DEBUG embtune::")),
        "-v shows no DEBUG line with its target: {err}"
    );
    assert!(
        dbg.iter().any(|l| l.contains("resolved to")),
        "-v does not say where the model was resolved: {err}"
    );
    assert!(
        dbg.iter().any(|l| l.contains("2 rows")),
        "-v does not say how many rows were read: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains(" INFO embtune::") && l.contains(SUMMARY)),
        "with -v the summary shows its level and target: {err}"
    );
    assert!(
        !err.contains(" TRACE "),
        "-v shows TRACE lines (that is -vv): {err}"
    );
}

#[test]
fn verbose_before_the_subcommand_and_quiet_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("t.txt");
    std::fs::write(&input, "hello world\nanother text\n").unwrap();
    let out = common::embtune_cmd_offline()
        .env_remove("RUST_LOG")
        .args(["-v", "embed", "-m", common::REAL_MODEL, "-i"])
        .arg(&input)
        .arg("-o")
        .arg(tmp.path().join("e.npy"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(
        !debug_lines(&err).is_empty(),
        "-v before the subcommand: {err}"
    );
    let (_, err) = embed(&["-v", "-q"], None);
    assert!(
        err.trim().is_empty(),
        "-q wins over -v (warnings only): {err}"
    );
}

#[test]
fn rust_log_debug_enables_debug_without_flags() {
    let (_, err) = embed(&[], Some("embtune=debug"));
    assert!(
        debug_lines(&err)
            .iter()
            .any(|l| l.contains("DEBUG embtune::")),
        "RUST_LOG=embtune=debug shows no DEBUG line: {err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains(" INFO embtune::") && l.contains(SUMMARY)),
        "RUST_LOG=embtune=debug keeps the INFO summary, with its level: {err}"
    );
}

#[test]
fn rust_log_warn_hides_the_info_lines() {
    let (_, err) = embed(&[], Some("warn"));
    assert!(
        !err.contains(SUMMARY),
        "RUST_LOG=warn still prints the INFO summary: {err}"
    );
    assert!(debug_lines(&err).is_empty(), "{err}");
    // RUST_LOG decides over the flags.
    let (_, err) = embed(&["-v"], Some("warn"));
    assert!(
        !err.contains(SUMMARY) && debug_lines(&err).is_empty(),
        "{err}"
    );
}

#[test]
fn print_config_has_no_verbose_key() {
    let out = common::embtune(&[
        "-v",
        "embed",
        "-m",
        common::REAL_MODEL,
        "-i",
        "x.txt",
        "-o",
        "y.npy",
        "--print-config",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("quiet = false"), "{text}");
    assert!(!text.contains("verbose"), "-v is not a recipe key: {text}");
}
