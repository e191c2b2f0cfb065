//! `--config FILE.toml` and `--print-config` for every subcommand. The file's keys are the
//! subcommand's long flag names (`batch-size` or `batch_size`), its values their values (true
//! for a switch, arrays for comma lists and for flags given several times, such as
//! `eval-data`); they are placed before the command line's own flags, and a flag given on the
//! command line wins (the command is parsed with args_override_self; a repeated flag adds to the
//! file's); a
//! switch the file sets is turned off with `--switch=false`. Relative paths in a file are read
//! from the file's folder; a value the flag does not accept is an error naming the file and key.
//! `--print-config` prints every resolved flag as TOML — a file `--config` accepts, paths made
//! absolute — and exits; without the required flags it prints a template.

use anyhow::{bail, Context, Result};
use clap::{ArgAction, ArgMatches, Command};
use std::ffi::OsString;
use std::path::PathBuf;

/// Flags a run needs unless another flag replaces them (a required group in clap, which an
/// argument does not report): (subcommand, flag).
pub const REQUIRED_UNLESS: &[(&str, &str)] = &[("train", "data"), ("train", "loss")];

/// The argument list after `--config` is expanded, and whether `--print-config` was asked.
pub struct Expanded {
    pub args: Vec<OsString>,
    pub print_config: bool,
}

/// What `--help` says about these two flags (they are handled before clap parses).
pub const HELP: &str = "Recipes: --config FILE.toml takes this command's flags from a TOML file (keys are the flag names; flags given here win); --print-config prints every resolved flag as TOML and exits.";

/// The command with repeated flags allowed (the last one wins).
pub fn command() -> Command {
    <super::Cli as clap::CommandFactory>::command()
        .after_help(HELP)
        .mut_subcommands(|s| s.args_override_self(true).after_help(HELP))
}

/// Takes `--config FILE` / `--config=FILE` and `--print-config` out of `args` and puts the
/// file's flags right after the subcommand name.
pub fn expand(args: Vec<OsString>) -> Result<Expanded> {
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    let (mut config, mut print_config) = (None::<PathBuf>, false);
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--print-config" {
            print_config = true;
        } else if s == "--config" {
            let f = it.next().context("--config needs a file")?;
            config = Some(PathBuf::from(f));
        } else if let Some(f) = s.strip_prefix("--config=") {
            config = Some(PathBuf::from(f));
        } else {
            out.push(a);
        }
    }
    let Some(path) = config else {
        return Ok(Expanded {
            args: switches_set_false(out),
            print_config,
        });
    };
    // The subcommand: the first argument after the program name that is not a flag.
    let Some(pos) = out
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|p| p + 1)
    else {
        bail!(
            "--config {}: give a subcommand (embed, eval, train, pairs, …)",
            path.display()
        );
    };
    let sub_name = out[pos].to_string_lossy().into_owned();
    let cmd = command();
    let Some(sub) = cmd.find_subcommand(&sub_name) else {
        // Let clap report the unknown subcommand.
        return Ok(Expanded {
            args: out,
            print_config,
        });
    };
    let injected = file_args(&path, sub)?;
    let mut args: Vec<OsString> = out[..=pos].to_vec();
    args.extend(injected);
    args.extend(out[pos + 1..].iter().cloned());
    Ok(Expanded {
        args: switches_set_false(args),
        print_config,
    })
}

/// `--switch=false` removes every `--switch` before it (one set by a recipe); `--switch=true`
/// is `--switch`. Other flags are left to clap.
fn switches_set_false(args: Vec<OsString>) -> Vec<OsString> {
    let cmd = command();
    let sub = args
        .iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .and_then(|a| cmd.find_subcommand(&*a.to_string_lossy()).cloned());
    let Some(sub) = sub else {
        return args;
    };
    let is_switch = |long: &str| {
        sub.get_arguments()
            .any(|a| a.get_long() == Some(long) && matches!(a.get_action(), ArgAction::SetTrue))
    };
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    for a in args {
        let s = a.to_string_lossy().into_owned();
        if let Some((long, val)) = s.strip_prefix("--").and_then(|r| r.split_once('=')) {
            if is_switch(long) && (val == "false" || val == "true") {
                out.retain(|x| x.to_string_lossy() != format!("--{long}"));
                if val == "true" {
                    out.push(format!("--{long}").into());
                }
                continue;
            }
        }
        out.push(a);
    }
    out
}

/// Whether `arg` takes a path (its value parser makes a `PathBuf`).
fn is_path(arg: &clap::Arg) -> bool {
    arg.get_value_parser().type_id() == std::any::TypeId::of::<PathBuf>()
}

/// A TOML file → `--flag value` arguments, each key checked against the subcommand's flags.
fn file_args(path: &PathBuf, sub: &Command) -> Result<Vec<OsString>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{}: not a valid TOML file", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        if flag == "datasets" && sub.get_name() == "train" {
            out.extend(dataset_args(path, &value)?);
            continue;
        }
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
        else {
            let valid: Vec<&str> = sub.get_arguments().filter_map(|a| a.get_long()).collect();
            bail!(
                "{}: unknown key {key:?} for `embtune {}`; the keys are its flags: {}",
                path.display(),
                sub.get_name(),
                valid.join(", ")
            );
        };
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        // Relative paths are read from the recipe's folder (a model, teacher or guide is a path
        // only when that folder has it; else it is a Hub id).
        let relocate = |v: String| -> String {
            let Some(dir) = dir else { return v };
            let p = std::path::Path::new(&v);
            let rel = p.is_relative() && !v.starts_with("hf://");
            let model_like = matches!(flag.as_str(), "model" | "teacher" | "guide-model");
            if rel && (is_path(arg) || (model_like && dir.join(p).exists())) {
                dir.join(p).to_string_lossy().into_owned()
            } else {
                v
            }
        };
        // The flag's own parser, so a bad value names the file and key.
        let parse_check = |v: &str| -> Result<()> {
            let one = Command::new("recipe").arg(arg.clone().required(false));
            one.try_get_matches_from(["recipe".to_string(), format!("--{flag}"), v.to_string()])
                .map(|_| ())
                .map_err(|e| {
                    let msg = e.to_string();
                    let first = msg
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim_start_matches("error: ");
                    anyhow::anyhow!("{}: key {key:?}: {first}", path.display())
                })
        };
        let item = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => bail!(
                    "{}: key {key:?}: expected a string, number, boolean or array",
                    path.display()
                ),
            })
        };
        match (&value, switch) {
            (toml::Value::Boolean(true), true) => out.push(format!("--{flag}").into()),
            (toml::Value::Boolean(false), true) => {}
            (_, true) => bail!(
                "{}: key {key:?} is a switch: expected true or false",
                path.display()
            ),
            (toml::Value::Array(a), false) if arg.get_value_delimiter().is_none() => {
                // A flag given several times (--eval-data A --eval-data B): one per item.
                for v in a {
                    let v = relocate(item(v)?);
                    parse_check(&v)?;
                    out.push(format!("--{flag}").into());
                    out.push(v.into());
                }
            }
            (toml::Value::Array(a), false) => {
                let parts = a.iter().map(&item).collect::<Result<Vec<_>>>()?;
                let joined = parts.join(",");
                parse_check(&joined)?;
                out.push(format!("--{flag}").into());
                out.push(joined.into());
            }
            (v, false) => {
                let v = relocate(item(v)?);
                parse_check(&v)?;
                out.push(format!("--{flag}").into());
                out.push(v.into());
            }
        }
    }
    Ok(out)
}

/// Every flag of the parsed subcommand with its resolved value (defaults included) as TOML.
pub fn print(matches: &ArgMatches) -> Result<String> {
    let cmd = command();
    let Some((name, sub_m)) = matches.subcommand() else {
        bail!("--print-config needs a subcommand");
    };
    let Some(sub) = cmd.find_subcommand(name) else {
        bail!("unknown subcommand {name}");
    };
    let mut table = toml::Table::new();
    for arg in sub.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if matches!(long, "help" | "version" | "token" | "verbose") {
            continue; // never write a secret into a recipe; -v is about this run, not the recipe
        }
        match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => {
                if let Ok(Some(b)) = sub_m.try_get_one::<bool>(id) {
                    table.insert(long.to_string(), toml::Value::Boolean(*b));
                }
            }
            _ => {
                let Ok(Some(raw)) = sub_m.try_get_raw(id) else {
                    continue;
                };
                let vals: Vec<toml::Value> = raw
                    .map(|v| {
                        let s = v.to_string_lossy();
                        if is_path(arg) && !s.starts_with("hf://") {
                            toml::Value::String(absolute(&s))
                        } else {
                            scalar(&s)
                        }
                    })
                    .collect();
                let multi = arg.get_value_delimiter().is_some()
                    || matches!(arg.get_action(), ArgAction::Append);
                let v = if multi {
                    toml::Value::Array(vals)
                } else {
                    match vals.into_iter().next() {
                        Some(v) => v,
                        None => continue,
                    }
                };
                table.insert(long.to_string(), v);
            }
        }
    }
    let mut text = toml::to_string(&table)?;
    // A template (flags missing): say which ones a run needs.
    for arg in sub.get_arguments() {
        let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        let set = matches!(sub_m.try_contains_id(id), Ok(true));
        if arg.is_required_set() && !set {
            text.push_str(&format!("# {long} = …   (required)\n"));
        } else if REQUIRED_UNLESS.contains(&(sub.get_name(), long)) && !set {
            let datasets = matches!(sub_m.try_contains_id("dataset"), Ok(true));
            if !datasets {
                text.push_str(&format!(
                    "# {long} = …   (required, unless [[datasets]] tables are given)\n"
                ));
            }
        }
    }
    Ok(text)
}

/// `p` as an absolute path (lexically, from the working directory), so a printed recipe reads the
/// same files from wherever it is kept.
fn absolute(p: &str) -> String {
    let path = std::path::Path::new(p);
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.to_string_lossy().into_owned()
}

/// The command for `--print-config`: no flag required, so that a template can be printed.
pub fn command_for_print() -> Command {
    command().mut_subcommands(|s| {
        let s = s.mut_args(|a| a.required(false));
        if s.get_name() == "train" {
            s.mut_group("training_data", |g| g.required(false))
                .mut_group("training_loss", |g| g.required(false))
        } else {
            s
        }
    })
}

/// A raw flag value as the most specific TOML scalar it reads as.
fn scalar(s: &str) -> toml::Value {
    if let Ok(i) = s.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && s.contains(['.', 'e', 'E']) {
            return toml::Value::Float(f);
        }
    }
    toml::Value::String(s.to_string())
}

/// A recipe's `[[datasets]]` tables → one `--dataset "key=value;…"` each (`data` read from the
/// recipe's folder, lists joined with commas), each checked as `train` will read it.
fn dataset_args(path: &std::path::Path, value: &toml::Value) -> Result<Vec<OsString>> {
    let Some(list) = value.as_array() else {
        bail!(
            "{}: key \"datasets\": expected [[datasets]] tables",
            path.display()
        );
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut out = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let at = || format!("{}: [[datasets]] entry {}", path.display(), i + 1);
        let Some(t) = t.as_table() else {
            bail!("{}: expected a table of keys", at());
        };
        let mut parts = Vec::new();
        for (k, v) in t {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                _ => bail!(
                    "{}: key {k:?}: expected a string, number, boolean or list",
                    at()
                ),
            };
            let text = match (k.as_str(), dir) {
                ("data", Some(d)) if std::path::Path::new(&text).is_relative() => {
                    d.join(&text).to_string_lossy().into_owned()
                }
                _ => text,
            };
            if text.contains(';') {
                bail!("{}: key {k:?}: a value may not contain ';'", at());
            }
            parts.push(format!("{k}={text}"));
        }
        let spec = parts.join(";");
        crate::train::datasets::DatasetSpec::parse(&spec).with_context(at)?;
        out.push("--dataset".into());
        out.push(spec.into());
    }
    Ok(out)
}
