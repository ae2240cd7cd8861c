//! The datum flusher: writes the datum files behind the map, decides when a checkpoint is
//! due (by entries, by bytes, and once more when writes pause) and lets the log be compacted
//! behind it; and the start-up reconcile of the datum files with the state.

use std::time::{Duration, Instant};

use super::*;

/// Writes datum files behind the map and, when a checkpoint is due, writes one and lets the
/// log before the previous checkpoint (less a retained tail) be dropped.
pub(super) fn run_flusher(shared: &Shared) {
    lower_thread_priority();
    let cfg = &shared.cfg;
    let mut last_round = 0;
    // Bytes applied when the newest checkpoint of this run began (0: none yet).
    let mut bytes_at_checkpoint = 0;
    let mut short = ShortOfDescriptors::default();
    loop {
        // A timer, not a trigger: changes to one key within a round cost one file rewrite.
        // Each rewrite allocates and frees an inode, which measured at a third of the node's
        // CPU when done per publish (docs/benchmarks.md).
        if shared.wait_stopping(DATUM_FLUSH_INTERVAL) {
            return;
        }
        let flushed = match shared.datums.flush() {
            Ok(i) => i,
            Err(e) if e.is_out_of_descriptors() => {
                short.hit("write datum files", &e);
                continue;
            }
            // Not a checkpoint either this round: it would wait for the same log.
            Err(Error::Timeout { .. }) => {
                postponed("datum files");
                continue;
            }
            Err(e) => fatal(&format!("cannot write datum files: {e}")),
        };
        let quiet = flushed == last_round;
        last_round = flushed;
        let (applied_bytes, live_bytes) = shared.datums.bytes();
        let due = checkpoint_due(
            shared.datums.checkpoints(),
            flushed,
            quiet,
            shared.datums.len(),
            cfg.checkpoint_entries,
        ) || bytes_due(applied_bytes - bytes_at_checkpoint, live_bytes);
        if !due {
            short.recovered();
            continue;
        }
        let started = Instant::now();
        let (base, bytes) = match shared.datums.checkpoint() {
            Ok(done) => done,
            // The log holds everything a checkpoint would: it can wait for descriptors.
            Err(e) if e.is_out_of_descriptors() => {
                short.hit("write a checkpoint", &e);
                continue;
            }
            // The log here is not durable up to the state yet (a stalled disk): the
            // checkpoint waits for a later round, and the log keeps everything meanwhile.
            Err(Error::Timeout { .. }) => {
                postponed("checkpoint");
                continue;
            }
            Err(e) => fatal(&format!("cannot write a checkpoint: {e}")),
        };
        short.recovered();
        bytes_at_checkpoint = applied_bytes;
        shared
            .metrics
            .checkpoint_seconds
            .observe(started.elapsed().as_secs_f64());
        // One line per checkpoint (etcd logs each snapshot too): what a checkpoint costs at
        // this size, for sizing `--checkpoint-entries`.
        log_event(&format!(
            "checkpoint at index {base}: {} datums, {bytes} bytes in {} ms",
            shared.datums.len(),
            started.elapsed().as_millis()
        ));
        // Up to the previous checkpoint only: if the newest one is ever unreadable, the
        // previous one and the log after it still rebuild the state.
        let Some(previous) = shared.datums.checkpoints().previous else {
            continue;
        };
        let pinned = shared
            .snapshot_pins
            .lock()
            .expect("pins lock")
            .values()
            .map(|p| p.index)
            .min();
        let _ = shared.driver.send(DriverEvent::Compact {
            upto: previous.saturating_sub(cfg.log_retain_entries),
            limit: previous,
            pinned,
        });
    }
}

/// A flush round or a checkpoint waited in vain for the log here to be durable up to what
/// it would write (`DatumSet::set_durable`): the log keeps everything meanwhile.
fn postponed(what: &str) {
    log_event(&format!(
        "{what} postponed: the log is not durable up to the applied state yet (a slow disk); trying again next round"
    ));
}

/// Whether the bytes applied since the last checkpoint call for one: at least
/// [`CHECKPOINT_BYTES`], and at least an eighth of the live set, so that, as with entries,
/// the cost of checkpoints per byte written stays constant whatever the set's size.
fn bytes_due(since: u64, live: u64) -> bool {
    since >= CHECKPOINT_BYTES.max(live / 8)
}

/// Whether a checkpoint is due: at once when there is none (a new node, an upgraded data
/// dir, or right after a snapshot install), else every `every` applied entries, and never
/// more often than one per eight entries per live key. A checkpoint writes every key, so that
/// bound keeps its cost per applied entry constant whatever the key count (with a million
/// keys and the default 20,000 it would rewrite the whole set for every 2% of it changed).
/// And once more when writes pause (`quiet`) after one: the log is compacted up to the
/// previous checkpoint only, so a second one lets the last stretch of a burst go too. Sparse
/// writes do not trigger it again until the next regular checkpoint.
fn checkpoint_due(
    have: datum_set::Checkpoints,
    flushed: u64,
    quiet: bool,
    keys: usize,
    every: u64,
) -> bool {
    match (have.newest, have.previous) {
        (None, _) => flushed > 0,
        (Some(newest), previous) => {
            flushed >= newest + every.max(keys as u64 / 8) || (quiet && previous != Some(newest))
        }
    }
}

/// At start-up: compares every datum file with the state and queues the stale ones (after
/// a crash some may be stale; after a clean stop only a hand could have changed them).
pub(super) fn reconcile_datum_files(shared: &Shared, log_end: u64, clean_stop: bool) {
    lower_thread_priority();
    // Compare with the state once the local log is replayed, not with the checkpoint it
    // started from: files written before the stop may hold writes the replay has not
    // reached yet (it needs the commit index from a leader), and "repairing" them to the
    // older state would empty `nacosctl dump` of a member cut off since its restart.
    while !shared
        .datums
        .wait_applied(log_end, Instant::now() + Duration::from_secs(1))
    {
        if shared.wait_stopping(Duration::ZERO) {
            return;
        }
    }
    let started = Instant::now();
    let after = if clean_stop {
        "after a clean stop"
    } else {
        "after an unclean stop"
    };
    match shared.datums.reconcile_files() {
        Ok((0, _)) => {}
        Ok((_, 0)) if clean_stop => {}
        Ok((checked, 0)) => log_event(&format!(
            "checked {checked} datum files {after} in {} ms: all up to date",
            started.elapsed().as_millis()
        )),
        Ok((checked, queued)) => log_event(&format!(
            "checked {checked} datum files {after} in {} ms: {queued} stale, damaged or missing, rewritten at the next flush",
            started.elapsed().as_millis()
        )),
        Err(e) => log_event(&format!(
            "warning: could not check the datum files {after}: {e}; nacosctl dump may show stale values until each key is written again"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::datum_set::Checkpoints;

    #[test]
    fn checkpoints_follow_the_bytes_written_too() {
        assert!(!bytes_due(CHECKPOINT_BYTES - 1, 0));
        assert!(bytes_due(CHECKPOINT_BYTES, 0));
        // A large live set spaces them out, as many keys do.
        assert!(!bytes_due(CHECKPOINT_BYTES, 16 * CHECKPOINT_BYTES));
        assert!(bytes_due(2 * CHECKPOINT_BYTES, 16 * CHECKPOINT_BYTES));
    }

    #[test]
    fn checkpoint_cadence() {
        // (newest, previous, flushed, quiet, keys, due) with `--checkpoint-entries 100`.
        let cases = [
            // None yet: as soon as anything is applied.
            (None, None, 0, true, 0, false),
            (None, Some(5), 1, false, 0, true),
            // Every 100 entries, or one per eight per key when that is more.
            (Some(50), Some(10), 149, false, 10, false),
            (Some(50), Some(10), 150, false, 10, true),
            (Some(50), Some(10), 150, false, 8000, false),
            (Some(50), Some(10), 1050, false, 8000, true),
            // A pause after a checkpoint: one more, so that compaction reaches the newest;
            // then sparse writes wait for the regular spacing.
            (Some(50), Some(10), 60, true, 10, true),
            (Some(60), Some(60), 61, true, 10, false),
            (Some(60), Some(60), 70, false, 10, false),
        ];
        for (newest, previous, flushed, quiet, keys, due) in cases {
            let have = Checkpoints { newest, previous };
            assert_eq!(
                checkpoint_due(have, flushed, quiet, keys, 100),
                due,
                "{have:?} flushed {flushed} quiet {quiet} keys {keys}"
            );
        }
    }
}

/// Datum files and checkpoints put off because the process was out of descriptors (a
/// connection flood, say): nothing is lost, since the log holds every change, and the
/// next round tries again. One warning per episode, and one line when it ends.
#[derive(Default)]
struct ShortOfDescriptors {
    since: Option<Instant>,
}

impl ShortOfDescriptors {
    fn hit(&mut self, what: &str, e: &crate::Error) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            log_event(&format!(
                "warning: cannot {what}: {e}; retrying every round until descriptors come back (raise `ulimit -n` or lower --max-connections)"
            ));
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            log_event(&format!(
                "datum files and checkpoints written again after {} ms",
                since.elapsed().as_millis()
            ));
        }
    }
}
