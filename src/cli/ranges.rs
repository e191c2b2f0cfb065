//! One range rule per numeric flag name, applied to every subcommand that has the flag, right
//! after parsing (before any file is read or any model loaded): the same flag is accepted or
//! refused the same way everywhere, and the error says the valid range. A test walks every
//! subcommand's numeric arguments and fails for one without a rule here. Depends on clap.

use anyhow::{bail, Result};
use clap::ArgMatches;

/// The values a numeric flag accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Range {
    /// An integer ≥ n.
    AtLeast(u64),
    /// A finite number > 0.
    Positive,
    /// A finite number ≥ 0.
    NonNegative,
    /// In [0, 1].
    Unit,
    /// In [0, 1).
    UnitOpen,
    /// In [lo, hi].
    Between(f64, f64),
    /// Any finite number.
    Finite,
}

impl Range {
    pub fn allows(self, v: f64) -> bool {
        v.is_finite()
            && match self {
                Range::AtLeast(n) => v >= n as f64 && v.fract() == 0.0,
                Range::Positive => v > 0.0,
                Range::NonNegative => v >= 0.0,
                Range::Unit => (0.0..=1.0).contains(&v),
                Range::UnitOpen => (0.0..1.0).contains(&v),
                Range::Between(lo, hi) => (lo..=hi).contains(&v),
                Range::Finite => true,
            }
    }

    /// The valid range in words, as the error says it.
    pub fn describe(self) -> String {
        match self {
            Range::AtLeast(n) => format!("an integer ≥ {n}"),
            Range::Positive => "a number > 0".into(),
            Range::NonNegative => "a number ≥ 0".into(),
            Range::Unit => "a number in [0, 1]".into(),
            Range::UnitOpen => "a number in [0, 1)".into(),
            Range::Between(lo, hi) => format!("a number in [{lo}, {hi}]"),
            Range::Finite => "a finite number".into(),
        }
    }

    /// A value this rule refuses (for the tests), as typed on a command line.
    pub fn refused_example(self) -> &'static str {
        match self {
            Range::AtLeast(0) | Range::Finite => "nan",
            Range::AtLeast(_) => "0",
            Range::Positive | Range::NonNegative | Range::Unit | Range::UnitOpen => "-1",
            Range::Between(..) => "1e9",
        }
    }
}

/// Every numeric flag of every subcommand (long name without dashes) and its rule.
pub const RULES: &[(&str, Range)] = &[
    // Sizes and counts: at least one (a zero would make the run meaningless).
    ("batch-size", Range::AtLeast(1)),
    ("epochs", Range::AtLeast(1)),
    ("max-steps", Range::AtLeast(1)),
    ("grad-accum", Range::AtLeast(1)),
    ("freeze-layers", Range::AtLeast(0)),
    ("lora-rank", Range::AtLeast(1)),
    ("test-thread-ranks", Range::AtLeast(1)),
    ("nnodes", Range::AtLeast(1)),
    ("node-rank", Range::AtLeast(0)),
    ("lora-alpha", Range::Positive),
    ("eval-steps", Range::AtLeast(1)),
    ("save-steps", Range::AtLeast(1)),
    ("save-total-limit", Range::AtLeast(1)),
    ("log-steps", Range::AtLeast(1)),
    ("chunk-rows", Range::AtLeast(1)),
    ("shards", Range::AtLeast(1)),
    ("top-k", Range::AtLeast(1)),
    ("num-negatives", Range::AtLeast(1)),
    ("per-anchor", Range::AtLeast(1)),
    ("mini-batch-size", Range::AtLeast(1)),
    ("max-tokens-per-batch", Range::AtLeast(0)),
    ("truncate-dim", Range::AtLeast(1)),
    ("matryoshka-dims", Range::AtLeast(1)),
    ("range-max", Range::AtLeast(1)),
    ("steps", Range::AtLeast(1)),
    ("n", Range::AtLeast(1)),
    ("texts", Range::AtLeast(2)),
    // [CLS] + one token + [SEP]; the model's own limits are checked when it is loaded.
    ("max-seq-length", Range::AtLeast(3)),
    ("range-min", Range::AtLeast(0)),
    ("warmup-steps", Range::AtLeast(0)),
    ("seed", Range::AtLeast(0)),
    // Rates and weights.
    ("lr", Range::Positive),
    ("scale", Range::Positive),
    ("temperature", Range::Positive),
    ("matryoshka-weights", Range::NonNegative),
    ("score-scale", Range::Positive),
    ("margin", Range::NonNegative),
    ("mining-margin", Range::NonNegative),
    ("weight-decay", Range::NonNegative),
    ("max-grad-norm", Range::NonNegative),
    ("warmup-ratio", Range::Unit),
    ("relative-margin", Range::Unit),
    ("dropout", Range::UnitOpen),
    // Cosine similarities.
    ("max-score", Range::Between(-1.0, 1.0)),
    ("min-score", Range::Between(-1.0, 1.0)),
    // Score thresholds in the data's own scale.
    ("positive-min", Range::Finite),
    ("negative-max", Range::Finite),
];

/// The rule of the flag `--name`.
pub fn rule(name: &str) -> Option<Range> {
    RULES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// Checks every numeric flag given to the parsed subcommand against its rule.
pub fn check(matches: &ArgMatches, command: &clap::Command) -> Result<()> {
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let Some(cmd) = command.find_subcommand(name) else {
        return Ok(());
    };
    for arg in cmd.get_arguments() {
        let (Some(long), Some(range)) = (arg.get_long(), arg.get_long().and_then(rule)) else {
            continue;
        };
        let Ok(Some(raw)) = sub.try_get_raw(arg.get_id().as_str()) else {
            continue;
        };
        for v in raw {
            let text = v.to_string_lossy();
            let ok = text.trim().parse::<f64>().is_ok_and(|x| range.allows(x));
            if !ok {
                bail!("{name} --{long} {text}: expected {}", range.describe());
            }
        }
    }
    Ok(())
}
