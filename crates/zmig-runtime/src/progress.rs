//! Progress of long work: a bar on a terminal, a log line every few seconds otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    Bar,
    Log,
    Silent,
}

pub(crate) struct Progress {
    label: String,
    keys_total: i64,
    keys_before: i64,
    started: Instant,
    bar: Option<ProgressBar>,
    log: bool,
    last_line: Mutex<Instant>,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(mode: ProgressMode, label: &str, keys_total: i64, keys_before: i64) -> Progress {
        let bar_wanted = match mode {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Bar => true,
            ProgressMode::Log | ProgressMode::Silent => false,
        };
        let bar = bar_wanted.then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(keys_total.max(0) as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:40}] {percent:>3}% of keys  {msg}  eta {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar.set_position(keys_before.max(0) as u64);
            bar
        });
        Progress {
            label: label.to_owned(),
            keys_total,
            keys_before,
            started: Instant::now(),
            bar,
            log: matches!(mode, ProgressMode::Log)
                || (matches!(mode, ProgressMode::Auto) && !bar_wanted),
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// `keys` and `owners` count this run's work so far.
    pub fn update(&self, keys: i64, owners: i64, paused: bool, backing_off: bool) {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = owners as f64 / elapsed;
        let state = if paused {
            " (paused)"
        } else if backing_off {
            " (backing off: database under strain)"
        } else {
            ""
        };
        if let Some(bar) = &self.bar {
            bar.set_position((self.keys_before + keys).max(0) as u64);
            bar.set_message(format!("{owners} owners, {rate:.0}/s{state}"));
        }
        if self.log {
            let mut last = self.last_line.lock().expect("progress");
            if last.elapsed() >= LOG_EVERY {
                *last = Instant::now();
                let done = self.keys_before + keys;
                let percent = if self.keys_total > 0 {
                    100.0 * done as f64 / self.keys_total as f64
                } else {
                    100.0
                };
                let key_rate = keys as f64 / elapsed;
                let eta = if key_rate > 0.0 {
                    format!("{:.0}s", (self.keys_total - done).max(0) as f64 / key_rate)
                } else {
                    "unknown".to_owned()
                };
                eprintln!("{}: {percent:.1}% of keys, {owners} owners copied, {rate:.0} owners/s, eta {eta}{state}", self.label);
            }
        }
    }

    pub fn finish(&self, finished: bool, owners: i64, written: i64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.log || self.bar.is_some() {
            let elapsed = self.started.elapsed().as_secs_f64();
            let state = if finished {
                "done"
            } else {
                "stopped; run it again to resume"
            };
            eprintln!(
                "{}: {state}: {owners} owners read, {written} rows written in {elapsed:.1}s",
                self.label
            );
        }
    }
}
