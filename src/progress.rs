//! Progress on stderr for long loops (encode, evaluation, mining, training): an indicatif bar on a
//! terminal; elsewhere (CI logs, nohup, pipes) a plain line every 30 s (EMBTUNE_PROGRESS_EVERY); nothing when
//! disabled (`-q`).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Time between plain progress lines when stderr is not a terminal: 30 s, or
/// `EMBTUNE_PROGRESS_EVERY` seconds.
fn line_every() -> Duration {
    std::env::var("EMBTUNE_PROGRESS_EVERY")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

enum Mode {
    Hidden,
    Bar(ProgressBar),
    Lines {
        what: String,
        total: u64,
        done: u64,
        start: Instant,
        last: Instant,
        every: Duration,
    },
}

pub struct Progress {
    mode: Mode,
}

impl Progress {
    pub fn new(what: &str, total: u64, enabled: bool) -> Self {
        if !enabled {
            return Self { mode: Mode::Hidden };
        }
        if !std::io::stderr().is_terminal() {
            let now = Instant::now();
            return Self {
                mode: Mode::Lines {
                    what: what.to_string(),
                    total,
                    done: 0,
                    start: now,
                    last: now,
                    every: line_every(),
                },
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_string());
        Self {
            mode: Mode::Bar(bar),
        }
    }

    pub fn inc(&mut self, n: u64) {
        match &mut self.mode {
            Mode::Hidden => {}
            Mode::Bar(b) => b.inc(n),
            Mode::Lines {
                what,
                total,
                done,
                start,
                last,
                every,
            } => {
                *done += n;
                if last.elapsed() >= *every {
                    *last = Instant::now();
                    let rate = *done as f64 / start.elapsed().as_secs_f64().max(1e-9);
                    eprintln!("{what}: {done}/{total} ({rate:.1}/s)");
                }
            }
        }
    }

    pub fn set_message(&mut self, msg: String) {
        if let Mode::Bar(b) = &self.mode {
            b.set_message(msg);
        }
    }

    pub fn finish(&mut self) {
        if let Mode::Bar(b) = std::mem::replace(&mut self.mode, Mode::Hidden) {
            b.finish_and_clear();
        }
    }
}
