//! Progress of long work: a bar on a terminal, a log line every few seconds otherwise. What the
//! bar and the lines say is the caller's: the backfill counts keys, a swap's move counts rows.

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
    started: Instant,
    bar: Option<ProgressBar>,
    log: bool,
    last_line: Mutex<Instant>,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// A bar of `total` units standing at `position`; `unit` follows the percentage on the bar
    /// (`of keys`, `moved`).
    pub fn new(mode: ProgressMode, label: &str, unit: &str, total: i64, position: i64) -> Progress {
        let bar_wanted = match mode {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Bar => true,
            ProgressMode::Log | ProgressMode::Silent => false,
        };
        let bar = bar_wanted.then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total.max(0) as u64),
                ProgressDrawTarget::stderr(),
            );
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix}} [{{bar:40}}] {{percent:>3}}% {unit}  {{msg}}  eta {{eta}}"
                ))
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            bar.set_position(position.max(0) as u64);
            bar
        });
        Progress {
            label: label.to_owned(),
            started: Instant::now(),
            bar,
            log: matches!(mode, ProgressMode::Log)
                || (matches!(mode, ProgressMode::Auto) && !bar_wanted),
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// Seconds since the work started (never zero, so rates can divide by it).
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64().max(0.001)
    }

    /// Moves the bar to `position` of `total` with `message` beside it, and prints the log line
    /// `line` builds when one is due.
    pub fn show(&self, position: i64, total: i64, message: &str, line: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.set_length(total.max(0) as u64);
            bar.set_position(position.max(0) as u64);
            bar.set_message(message.to_owned());
        }
        if self.log {
            let mut last = self.last_line.lock().expect("progress");
            if last.elapsed() >= LOG_EVERY {
                *last = Instant::now();
                eprintln!("{}: {}", self.label, line());
            }
        }
    }

    /// Clears the bar and prints `summary` with the time the work took.
    pub fn finish(&self, summary: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.log || self.bar.is_some() {
            let elapsed = self.started.elapsed().as_secs_f64();
            eprintln!("{}: {summary} in {elapsed:.1}s", self.label);
        }
    }
}

/// What a crew's workers are doing, as the bar and the log lines say it after their numbers;
/// `yielding` is `Some(busy sessions)` while they yield to other sessions' work.
pub(crate) fn activity(paused: bool, backing_off: bool, yielding: Option<i64>) -> String {
    if paused {
        " (paused)".to_owned()
    } else if backing_off {
        " (backing off: database under strain)".to_owned()
    } else if let Some(sessions) = yielding {
        format!(
            " (yielding to live traffic: {sessions} other session{} busy; short batches, pausing)",
            if sessions == 1 { "" } else { "s" }
        )
    } else {
        String::new()
    }
}

/// For the closing line: how many of the `batches` were followed by a yield, when any were.
pub(crate) fn yielded(yields: u64, batches: u64) -> String {
    if yields == 0 {
        String::new()
    } else {
        format!("; yielded to live traffic after {yields} of {batches} batches")
    }
}

/// The estimated time left at `rate` units per second, for log lines.
pub(crate) fn eta(left: i64, rate: f64) -> String {
    if rate > 0.0 {
        format!("{:.0}s", left.max(0) as f64 / rate)
    } else {
        "unknown".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_when_workers_yield() {
        assert_eq!(activity(false, false, None), "");
        assert_eq!(activity(true, false, Some(2)), " (paused)");
        assert_eq!(
            activity(false, false, Some(1)),
            " (yielding to live traffic: 1 other session busy; short batches, pausing)"
        );
        assert!(activity(false, false, Some(3)).contains("3 other sessions busy"));
        assert_eq!(yielded(0, 10), "");
        assert_eq!(
            yielded(4, 10),
            "; yielded to live traffic after 4 of 10 batches"
        );
    }
}
