//! Diagnostics through `tracing`: one subscriber, installed once by the binary, writing to
//! stderr. The level comes from `RUST_LOG` when it is set (full `EnvFilter` syntax, e.g.
//! `embtune=debug`), else from the flags: INFO for embtune's own messages and WARN for
//! dependencies by default, `-v` DEBUG, `-vv` TRACE, `-q` WARN (warnings and errors only).
//! At the default level a line is the bare message (no time, level or target), so the output
//! reads as plain text; with `-v` or `RUST_LOG` each line also shows its level and target.
//! The library only emits events (`tracing::info!` …); `model_loaded` is the one shared debug
//! event about a loaded model (it reads `model` and `device`, nothing else).

use std::sync::Once;
use tracing_subscriber::EnvFilter;

/// What the command line asked for: `-v` count and `-q`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verbosity {
    pub verbose: u8,
    pub quiet: bool,
}

impl Verbosity {
    /// The filter directive the flags stand for (used when `RUST_LOG` is unset). `-q` wins
    /// over `-v`.
    pub fn directive(self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "warn",
            (false, 0) => "warn,embtune=info",
            (false, 1) => "warn,embtune=debug",
            (false, _) => "warn,embtune=trace",
        }
    }
}

/// Installs the stderr subscriber (the first call wins; later calls do nothing).
pub fn init(v: Verbosity) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| install(v));
}

fn install(v: Verbosity) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    // An unparsable RUST_LOG falls back to the flags rather than silencing everything.
    let env_filter = from_env.as_deref().and_then(|s| EnvFilter::try_new(s).ok());
    let detailed = env_filter.is_some() || v.verbose > 0;
    let filter = env_filter.unwrap_or_else(|| EnvFilter::new(v.directive()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    // try_init: a subscriber set elsewhere (an embedding program) is left alone.
    let _ = if detailed {
        builder.with_target(true).with_level(true).try_init()
    } else {
        builder
            .without_time()
            .with_target(false)
            .with_level(false)
            .try_init()
    };
}

/// DEBUG: where a model came from (Hub id → local files), what was built and on which device.
/// Resolving the file paths again is done only when DEBUG is on.
pub fn model_loaded(spec: &crate::model::ModelSpec, model: &crate::model::SentenceEncoder) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    if let Ok(src) = crate::model::hub::ModelSource::parse(&spec.model, spec.hub.clone()) {
        let files = [
            "modules.json",
            "config.json",
            "model.safetensors",
            "tokenizer.json",
        ];
        let found: Vec<(&str, std::path::PathBuf)> = files
            .iter()
            .filter_map(|f| Some((*f, src.optional(f).ok().flatten()?)))
            .collect();
        let dir = found.first().and_then(|(_, p)| p.parent());
        let names: Vec<&str> = found.iter().map(|(f, _)| *f).collect();
        tracing::debug!(
            "model {} ({}) resolved to {}: files {names:?}",
            spec.model,
            src.describe(),
            dir.map(|d| d.display().to_string()).unwrap_or_default()
        );
    }
    tracing::debug!(
        "model {}: {} encoder, dim {}, pooling {:?}, {} dense layer(s), normalize {}, on {} ({}, {} ops)",
        model.source,
        model.family(),
        model.dim(),
        model.pooling.modes,
        model.dense.len(),
        model.normalize,
        crate::device::describe(model.device()),
        spec.compute.dtype,
        model.exec()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_to_levels() {
        let d = |verbose, quiet| Verbosity { verbose, quiet }.directive();
        assert_eq!(d(0, false), "warn,embtune=info");
        assert_eq!(d(1, false), "warn,embtune=debug");
        assert_eq!(d(2, false), "warn,embtune=trace");
        assert_eq!(d(3, false), "warn,embtune=trace");
        assert_eq!(d(0, true), "warn");
        assert_eq!(d(2, true), "warn");
    }
}
