//! Progress for a person at a terminal: `indicatif` spinners and byte bars on stderr when
//! stderr is a terminal (and `TERM` is not `dumb`); plain, occasional lines otherwise, so
//! pipes, files and CI logs never get control codes or redraws. Used by image builds
//! (`image build-test`), copies made by routines run from the command line, and long waits
//! (`log --follow`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use provhost::prim::scp;

/// Whether progress is drawn (stderr a terminal that can redraw) or given as plain lines.
pub fn drawn() -> bool {
    std::io::stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

/// A spinner with a message and the elapsed time (at a terminal), or nothing but the
/// lines printed through it (elsewhere).
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A spinner for a wait or a job of unknown length.
    pub fn spinner(message: &str) -> Progress {
        Progress::spinner_if(drawn(), message)
    }

    fn spinner_if(draw: bool, message: &str) -> Progress {
        if !draw {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress { bar: Some(bar) }
    }

    /// Change the spinner's message (nothing without a terminal: a changing status is
    /// not worth a line each time).
    pub fn set_message(&self, message: &str) {
        if let Some(b) = &self.bar {
            b.set_message(message.to_string());
        }
    }

    /// A line on standard output, above the spinner.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// A line on standard error, above the spinner.
    pub fn eprintln(&self, line: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Remove the spinner.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The most copies drawn at once; a copy that failed mid-way (no final report) is
/// cleared when this many are open.
const MAX_OPEN_COPIES: usize = 8;

/// Copies made by routines this command runs: a byte bar each at a terminal, else a line
/// at the start and one at each quarter (at most five lines a copy).
pub struct CopyProgress {
    draw: bool,
    open: Mutex<HashMap<String, CopyState>>,
}

struct CopyState {
    bar: Option<ProgressBar>,
    quarter: u64,
}

impl CopyProgress {
    /// Watch every copy of this process (`prim::scp`); call once, before routines run.
    pub fn install() {
        scp::observe_copies(Box::new(CopyProgress {
            draw: drawn(),
            open: Mutex::new(HashMap::new()),
        }));
    }

    fn bar(total: u64, dest: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "copy {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(dest.to_string());
        bar
    }
}

impl scp::CopyObserver for CopyProgress {
    fn copy_progress(&self, dest: &str, p: scp::Progress) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        if !open.contains_key(dest) {
            if open.len() >= MAX_OPEN_COPIES {
                for (_, s) in open.drain() {
                    if let Some(b) = s.bar {
                        b.abandon();
                    }
                }
            }
            let bar = self.draw.then(|| CopyProgress::bar(p.total, dest));
            if bar.is_none() {
                eprintln!("copy {dest}: {} bytes", p.total);
            }
            open.insert(dest.to_string(), CopyState { bar, quarter: 0 });
        }
        let done = p.done >= p.total;
        if let Some(s) = open.get_mut(dest) {
            match &s.bar {
                Some(b) => b.set_position(p.done),
                None => {
                    let quarter = (p.percent() / 25).min(4);
                    if quarter > s.quarter {
                        s.quarter = quarter;
                        eprintln!(
                            "copy {dest}: {}% ({} of {} bytes)",
                            p.percent(),
                            p.done,
                            p.total
                        );
                    }
                }
            }
        }
        if done {
            if let Some(s) = open.remove(dest) {
                if let Some(b) = s.bar {
                    b.finish_and_clear();
                }
            }
        }
    }
}

/// An image build's steps: a spinner showing the current step at a terminal (each step
/// also kept as a line), plain `[  12.3 s] step` lines elsewhere.
pub struct Steps {
    spinner: Progress,
    start: std::time::Instant,
}

impl Steps {
    pub fn new(what: &str) -> Steps {
        Steps {
            spinner: Progress::spinner(what),
            start: std::time::Instant::now(),
        }
    }

    /// One step begins.
    pub fn step(&self, step: &str) {
        self.spinner.eprintln(&format!(
            "[{:6.1} s] {step}",
            self.start.elapsed().as_secs_f64()
        ));
        self.spinner.set_message(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provhost::prim::scp::CopyObserver;

    #[test]
    fn without_a_terminal_a_spinner_draws_nothing() {
        let p = Progress::spinner_if(false, "waiting");
        assert!(p.bar.is_none());
        p.set_message("still waiting");
        p.finish();
    }

    #[test]
    fn plain_copy_progress_forgets_finished_copies_and_bounds_open_ones() {
        let c = CopyProgress {
            draw: false,
            open: Mutex::new(HashMap::new()),
        };
        let at = |done, total| scp::Progress { done, total };
        c.copy_progress("h:/a", at(0, 100));
        c.copy_progress("h:/a", at(50, 100));
        assert_eq!(c.open.lock().expect("lock")["h:/a"].quarter, 2);
        c.copy_progress("h:/a", at(100, 100));
        assert!(c.open.lock().expect("lock").is_empty());
        for i in 0..(MAX_OPEN_COPIES + 3) {
            c.copy_progress(&format!("h:/{i}"), at(1, 100));
        }
        assert!(c.open.lock().expect("lock").len() <= MAX_OPEN_COPIES);
    }
}
