//! How slow steps show on stderr: a spinner on a terminal (here a pseudo-terminal from
//! util-linux's `script`), plain `stockade: ...` lines anywhere else. The fake driver's image
//! build reports three steps, a moment apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn stockade() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stockade-with-fake"))
}

#[test]
fn off_a_terminal_each_step_is_a_plain_line() {
    let home = tempfile::tempdir().unwrap();
    let out = stockade()
        .env("STOCKADE_HOME", home.path())
        .args(["image", "base", "--driver", "fake"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fake/base\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "stockade: resolving the recipe\nstockade: unpacking packages\nstockade: tagging fake/base\n"
    );
}

#[test]
fn on_a_terminal_the_current_step_is_a_spinner_and_done_steps_stay() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=true needs util-linux's script"
        );
        eprintln!("skipped: no `script` (util-linux) to make a pseudo-terminal");
        return;
    }
    let line = format!(
        "{} image base --driver fake",
        env!("CARGO_BIN_EXE_stockade-with-fake")
    );
    // `script` runs the command on a pseudo-terminal and copies what it writes to our stdout.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("STOCKADE_HOME", home.path())
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    // The spinner redraws its line: carriage returns and erase-line sequences, with the step
    // and its elapsed time.
    assert!(screen.contains("\r\x1b[2K"), "no redrawn line in {screen:?}");
    assert!(screen.contains("stockade: unpacking packages"), "{screen:?}");
    // Each step ends as a line of its own (after an erased line, with no spinner before it),
    // and the image's name comes after the spinner is down.
    for step in ["resolving the recipe", "unpacking packages", "tagging fake/base"] {
        let plain = format!("stockade: {step}");
        assert!(
            screen.contains(&format!("\x1b[2K{plain}")) || screen.contains(&format!("\n{plain}")),
            "{step} is not a line of its own in {screen:?}"
        );
    }
    assert!(screen.trim_end().ends_with("fake/base"), "{screen:?}");
}
