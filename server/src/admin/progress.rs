//! Progress of long `pdome-admin` operations (release, store migrate, the
//! issues audit), drawn on stderr only when it is a terminal and the output
//! is for people: with `--json`, or piped or under a timer, nothing.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress should be drawn at all.
fn wanted(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A bar counting `len` items, labelled `what`.
pub fn bar(len: u64, what: &str, json: bool) -> ProgressBar {
    if !wanted(json) {
        return ProgressBar::hidden();
    }
    let style =
        ProgressStyle::with_template("{prefix:<16} [{bar:32}] {pos}/{len} ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_prefix(what.to_string())
}

/// A spinner saying what is under way, ticking on its own.
pub fn spinner(what: &str, json: bool) -> ProgressBar {
    if !wanted(json) {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let s = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        .with_style(style)
        .with_message(what.to_string());
    s.enable_steady_tick(Duration::from_millis(120));
    s
}
