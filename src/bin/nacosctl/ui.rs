//! Terminal decisions, made once per run: whether to colour (table cells on stdout, the
//! `nacosctl:` prefix on stderr) and whether to show progress (stderr, terminals only).
//!
//! It owns no output of its own beyond progress lines: data stays on stdout and is never
//! coloured outside tables; JSON is never coloured.

use std::io::IsTerminal;
use std::sync::OnceLock;

use crate::cli::ColorWhen;

/// What this run may do to the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ui {
    /// Colour the ROLE / health cells of tables on stdout.
    pub color_out: bool,
    /// Colour the `nacosctl:` prefix of diagnostics on stderr.
    pub color_err: bool,
    /// Say what a slow command is waiting for, on stderr. Only for a person watching: a
    /// script's stderr stays empty on success.
    pub progress: bool,
}

static UI: OnceLock<Ui> = OnceLock::new();

impl Ui {
    /// The rule: `always` and `never` are what they say; `auto` colours a stream only when it
    /// is a terminal and `NO_COLOR` is unset or empty (no-color.org).
    pub fn decide(when: ColorWhen, out_tty: bool, err_tty: bool, no_color: bool) -> Ui {
        let (color_out, color_err) = match when {
            ColorWhen::Always => (true, true),
            ColorWhen::Never => (false, false),
            ColorWhen::Auto => (out_tty && !no_color, err_tty && !no_color),
        };
        Ui {
            color_out,
            color_err,
            progress: err_tty,
        }
    }
}

/// Decides for this process; later calls keep the first decision.
pub fn init(when: ColorWhen) {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ui = Ui::decide(
        when,
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
        no_color,
    );
    let _ = UI.set(ui);
}

fn get() -> Ui {
    // Before `init` (unit tests, clap errors): plain.
    *UI.get_or_init(|| Ui::decide(ColorWhen::Never, false, false, true))
}

pub fn color_stdout() -> bool {
    get().color_out
}

/// `nacosctl:`, in bold red when stderr is coloured.
pub fn prefix() -> &'static str {
    if get().color_err {
        "\x1b[1;31mnacosctl:\x1b[0m"
    } else {
        "nacosctl:"
    }
}

/// A progress line on stderr, shown only when stderr is a terminal.
pub fn progress(message: &str) {
    if get().progress {
        eprintln!("nacosctl: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_colours_terminals_only_and_respects_no_color() {
        let ui = Ui::decide(ColorWhen::Auto, true, false, false);
        assert!(ui.color_out && !ui.color_err && !ui.progress);
        let ui = Ui::decide(ColorWhen::Auto, true, true, true);
        assert!(!ui.color_out && !ui.color_err && ui.progress);
    }

    #[test]
    fn explicit_choices_win_over_the_terminal_and_no_color() {
        let ui = Ui::decide(ColorWhen::Always, false, false, true);
        assert!(ui.color_out && ui.color_err);
        assert!(!ui.progress, "progress follows the terminal, not --color");
        let ui = Ui::decide(ColorWhen::Never, true, true, false);
        assert!(!ui.color_out && !ui.color_err);
    }
}
