//! `nacosctl watch`: prints the CHANGE / DELETE events of a key or prefix, one flushed line
//! each, until interrupted (exit 0) or the connection is lost (exit 4, saying where to resume).
//!
//! A lost watch must never look like a quiet key (etcd #8980, confd #819): the node sends a
//! keep-alive every second, and silence past the bound counts as a lost connection. The
//! keep-alives themselves are never printed.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use nacos_raft::client::{
    Client, ClientError, WatchEvent, WatchEventKind, WatchLine, WatchStream, WatchTarget,
};

use crate::cli::Output;
use crate::exit::Exit;
use crate::render;
use crate::ui;

/// Silence never counts as a lost connection sooner than this, whatever `--timeout` says:
/// keep-alives come once a second, and a loaded node may send one late.
pub const MIN_SILENCE: Duration = Duration::from_secs(3);

/// How often the main loop checks for Ctrl-C while no line arrives.
const TICK: Duration = Duration::from_millis(100);

pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Once the stream is open, Ctrl-C (SIGINT) and SIGTERM end the watch with exit 0, between
/// two lines: a line is never cut in half, so a script reading the output never sees a torn
/// event.
pub fn catch_interrupts() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe, and
        // `signal` has no other precondition.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

/// The line-by-line text form: tab-separated (keys cannot hold a tab), the value last as
/// compact JSON, so `grep`, `cut -f` and `awk -F'\t'` work.
pub fn text_line(e: &WatchEvent) -> String {
    let kind = match e.event {
        WatchEventKind::Change => "CHANGE",
        WatchEventKind::Delete => "DELETE",
    };
    let mut line = format!(
        "{kind}\t{}\tindex={}\ttimestamp={}",
        e.key, e.index, e.timestamp
    );
    if e.event == WatchEventKind::Change {
        line.push_str("\tvalue=");
        line.push_str(&render::compact(&e.value));
    }
    line
}

/// What the watch was asked for, to spell the command that resumes it.
pub struct Args<'a> {
    pub target: WatchTarget<'a>,
    pub from_index: Option<u64>,
    pub endpoints: &'a [String],
}

pub fn run(client: &Client, output: Output, out: &mut dyn Write, args: &Args) -> Result<Exit> {
    let silence = client.timeout().max(MIN_SILENCE);
    // Without --from-index, start right after the applied index of a member: then even a
    // watch that never saw an event knows exactly where to resume.
    let (from, mut next) = match args.from_index {
        Some(f) => (Some(f), Some(f)),
        None => match first_applied_index(client) {
            Some(applied) => (Some(applied + 1), Some(applied + 1)),
            None => (None, None),
        },
    };
    let stream = match client.watch(args.target, from, silence) {
        // The implicit start point raced with a member that had just restarted (it only
        // keeps events after the checkpoint it started from): follow live events instead.
        Err(e) if e.is_compacted() && args.from_index.is_none() => {
            next = None;
            client.watch(args.target, None, silence)?
        }
        Err(e) if e.is_compacted() => {
            return Err(anyhow::Error::new(e).context("cannot resume the watch"));
        }
        other => other?,
    };
    // Only now: until the stream is open, Ctrl-C simply stops the process, at once.
    catch_interrupts();
    let endpoint = stream.endpoint().to_string();
    let lines = read_in_background(stream);
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Ok(Exit::Ok);
        }
        let line = match lines.recv_timeout(TICK) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("the reader ends with Err"),
        };
        match line {
            Ok(WatchLine::Progress { .. }) => {}
            Ok(WatchLine::Event(e)) => {
                let text = match output {
                    Output::Json => serde_json::to_string(&e).context("event to JSON")?,
                    Output::Text | Output::Table => text_line(&e),
                };
                // One write and a flush per event: `nacosctl watch k | while read ...` sees
                // each one at once.
                out.write_all(format!("{text}\n").as_bytes())?;
                out.flush()?;
                next = Some(e.index + 1);
            }
            Err(e) => return Ok(lost(&endpoint, &e, next, args)),
        }
    }
}

/// The applied index of the first endpoint that answers its status, if any does.
fn first_applied_index(client: &Client) -> Option<u64> {
    client.status().ok().map(|s| s.applied_index)
}

/// Lines are read on their own thread, so the main loop can notice Ctrl-C between them.
fn read_in_background(mut stream: WatchStream) -> mpsc::Receiver<Result<WatchLine, ClientError>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || loop {
        let line = stream.next_line();
        let done = line.is_err();
        if tx.send(line).is_err() || done {
            return;
        }
    });
    rx
}

/// Reports a lost or broken stream, with the command that resumes it with no gap and no
/// duplicate. A malformed line is exit 1; everything else is a lost connection, exit 4.
fn lost(endpoint: &str, e: &ClientError, next: Option<u64>, args: &Args) -> Exit {
    let (what, exit) = match e {
        ClientError::Unavailable { message, .. } => (
            format!("lost the connection to {endpoint}: {message}"),
            Exit::Unavailable,
        ),
        other => (other.to_string(), Exit::of_client_error(other)),
    };
    match next {
        Some(n) => {
            eprintln!(
                "{} watch: {what}; last index seen: {}",
                ui::prefix(),
                n.saturating_sub(1)
            );
            eprintln!(
                "hint: resume with no gap and no duplicate: {}",
                resume_command(args, n)
            );
        }
        None => {
            eprintln!("{} watch: {what}; no event was seen", ui::prefix());
            eprintln!("hint: resume from the applied_index + 1 that `nacosctl status` reports");
        }
    }
    exit
}

/// `nacosctl --endpoints E watch KEY --from-index N`, quoted for a POSIX shell.
pub fn resume_command(args: &Args, next: u64) -> String {
    let target = match args.target {
        WatchTarget::Key(k) => {
            // A key that starts with '-' goes after '--'.
            if k.starts_with('-') {
                format!("-- {}", shell_quote(k))
            } else {
                shell_quote(k)
            }
        }
        WatchTarget::Prefix(p) => format!("--prefix {}", shell_quote(p)),
    };
    let (flag, target) = match args.target {
        WatchTarget::Key(k) if k.starts_with('-') => (format!("--from-index {next} "), target),
        _ => (String::new(), format!("{target} --from-index {next}")),
    };
    format!(
        "nacosctl --endpoints {} watch {flag}{target}",
        shell_quote(&args.endpoints.join(","))
    )
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:,@%+=".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_lines_are_tab_separated_with_the_value_last() {
        let change = WatchEvent {
            event: WatchEventKind::Change,
            key: "svc a".into(),
            value: json!({"port": 1}),
            timestamp: 2,
            index: 9,
        };
        assert_eq!(
            text_line(&change),
            "CHANGE\tsvc a\tindex=9\ttimestamp=2\tvalue={\"port\":1}"
        );
        let delete = WatchEvent {
            event: WatchEventKind::Delete,
            value: serde_json::Value::Null,
            ..change
        };
        assert_eq!(text_line(&delete), "DELETE\tsvc a\tindex=9\ttimestamp=2");
    }

    #[test]
    fn json_lines_hold_exactly_the_contract_fields() {
        let e = WatchEvent {
            event: WatchEventKind::Delete,
            key: "k".into(),
            value: serde_json::Value::Null,
            timestamp: 1,
            index: 4,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"event":"DELETE","key":"k","value":null,"timestamp":1,"index":4}"#
        );
    }

    #[test]
    fn resume_commands_are_shell_safe() {
        let eps = ["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        let args = |target| Args {
            target,
            from_index: None,
            endpoints: &eps,
        };
        assert_eq!(
            resume_command(&args(WatchTarget::Key("svc.a")), 18),
            "nacosctl --endpoints 127.0.0.1:1,127.0.0.1:2 watch svc.a --from-index 18"
        );
        assert_eq!(
            resume_command(&args(WatchTarget::Prefix("it's/")), 3),
            r"nacosctl --endpoints 127.0.0.1:1,127.0.0.1:2 watch --prefix 'it'\''s/' --from-index 3"
        );
        assert_eq!(
            resume_command(&args(WatchTarget::Prefix("")), 3),
            "nacosctl --endpoints 127.0.0.1:1,127.0.0.1:2 watch --prefix '' --from-index 3"
        );
        assert_eq!(
            resume_command(&args(WatchTarget::Key("-odd")), 5),
            "nacosctl --endpoints 127.0.0.1:1,127.0.0.1:2 watch --from-index 5 -- -odd"
        );
    }
}
