//! Progress of slow steps (image builds, code loading, agent installs) on stderr. On a terminal
//! the current step is a spinner with its elapsed time, and each finished step stays above it
//! as a line; anywhere else every step is one plain `stockade: ...` line, as logs want.
//!
//! Steps come from anywhere in the process (the drivers' progress sink too), so the spinner is
//! one per process. [`finish`] takes it down; a command calls it before it writes output of
//! its own, and `main` before the process exits.

use std::io::IsTerminal;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// The spinner and the step it shows, when one is up.
struct Current {
    bar: ProgressBar,
    step: String,
}

fn current() -> MutexGuard<'static, Option<Current>> {
    static CURRENT: OnceLock<Mutex<Option<Current>>> = OnceLock::new();
    CURRENT
        .get_or_init(|| Mutex::new(None))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How steps are shown: decided once, from whether stderr is a terminal.
fn on_terminal() -> bool {
    static TERMINAL: OnceLock<bool> = OnceLock::new();
    *TERMINAL.get_or_init(|| {
        std::io::stderr().is_terminal() && std::env::var_os("STOCKADE_PLAIN_PROGRESS").is_none()
    })
}

/// Reports that the step `step` has begun (the one before it is over).
pub fn step(step: &str) {
    if !on_terminal() {
        eprintln!("stockade: {step}");
        return;
    }
    let mut current = current();
    match current.as_mut() {
        Some(c) => {
            c.bar.println(format!("stockade: {}", c.step));
            c.bar.reset_elapsed();
            c.bar.set_message(step.to_owned());
            c.step = step.to_owned();
        }
        None => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} stockade: {wide_msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(step.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            *current = Some(Current {
                bar,
                step: step.to_owned(),
            });
        }
    }
}

/// Takes the spinner down, leaving its last step as a line. Nothing to do off a terminal.
pub fn finish() {
    if let Some(c) = current().take() {
        c.bar.finish_and_clear();
        eprintln!("stockade: {}", c.step);
    }
}

/// A progress callback for the libraries' `FnMut(&str)` parameters.
pub fn sink() -> impl FnMut(&str) + Send {
    |line: &str| step(line)
}
