//! `stockade`: the command-line front end. Parses flags into core requests, hands them to a driver
//! and prints the results; it does no sandbox work of its own. A library as well as the binary,
//! so a binary with more drivers is this one plus a line: `main_with(register)`.

pub mod args;
pub mod commands;
pub mod drivers;
pub mod exit;
mod progress;
mod task;
mod terminal;

use clap::Parser;
use stockade_core::Registry;

/// Logs go to stderr through `tracing`: `RUST_LOG` filters them; the daemon logs at `info` by
/// default (`--log-format json` for one object per line), other commands only warnings, since
/// their stderr is for people.
fn init_logging(command: &args::Command) {
    use tracing_subscriber::EnvFilter;
    let (default, json) = match command {
        args::Command::Serve(a) => ("info", a.log_format == "json"),
        _ => ("warn", false),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_target(false).try_init()
    };
}

/// Runs the `stockade` command with the drivers `register` adds, and exits.
pub fn main_with(register: fn(&mut Registry)) -> ! {
    let cli = args::Cli::parse();
    init_logging(&cli.command);
    // One thread: a CLI run is a short sequence of awaits; worker threads would only cost startup.
    // The daemon serves many clients at once and gets a thread per core.
    let runtime = if matches!(cli.command, args::Command::Serve(_)) {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stockade: cannot start the async runtime: {e}");
            std::process::exit(exit::BACKEND);
        }
    };
    let code = runtime.block_on(commands::run(cli, register));
    // Do not wait for a blocked stdin reader thread.
    runtime.shutdown_timeout(std::time::Duration::from_millis(10));
    std::process::exit(code);
}
