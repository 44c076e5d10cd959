//! Running external tools (umoci, skopeo, openssl, ...) with failures that explain themselves.
//!
//! A fixture that shells out must never fail silently: every helper here panics with the
//! full command line, exit status, stdout and stderr, so a broken test setup is obvious.

use std::process::{Command, Output};

/// Runs `cmd` to completion and returns its output, panicking with the command line,
/// status, stdout and stderr when it cannot be spawned or exits non-zero.
pub fn run(cmd: &mut Command) -> Output {
    let shown = describe(cmd);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e} (is the tool installed?)"));
    if !out.status.success() {
        panic!(
            "`{shown}` failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs `cmd` and returns its output whatever the exit status, so that a test can assert on
/// an expected failure (for example skopeo refusing a sha512 image).
pub fn run_unchecked(cmd: &mut Command) -> Output {
    let shown = describe(cmd);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e} (is the tool installed?)"))
}

/// Renders a command line for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
