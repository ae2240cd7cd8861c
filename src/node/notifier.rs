//! The notifier (Nacos `Notifier`): listeners on a key or a prefix, and the recent event
//! history that a watcher resuming from an index replays.
//!
//! Owns what listening costs, and bounds all of it: the history by event count and by
//! bytes, each listener's queue (a listener that falls that far behind is dropped; its
//! watcher resumes from the history), and the number of listeners. A replay is read from
//! the history a page at a time, never copied whole. Must not decide what an event is: the
//! datum set applies entries and hands the events over in log order.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// What a listener sees, in log order (Nacos `Notifier` CHANGE / DELETE).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub key: String,
    pub value: Option<serde_json::Value>,
    pub timestamp: u64,
    pub index: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventKind {
    Change,
    Delete,
}

impl Event {
    /// About what the event holds in memory (its value counted as JSON text).
    fn bytes(&self) -> usize {
        96 + self.key.len()
            + self
                .value
                .as_ref()
                .map_or(0, crate::datum::approx_json_size)
    }
}

/// Most events kept for watchers that resume from an index.
pub const HISTORY_EVENTS: usize = 100_000;
/// Most bytes of events kept: with large values the history holds fewer events, not more
/// memory (each 4 MiB write once stayed resident for good).
pub const HISTORY_BYTES: usize = 64 << 20;
/// Events queued for one listener before it counts as stuck and is dropped.
pub const LISTENER_QUEUE: usize = 8192;
/// Default most listeners at once (each watch holds one, and a connection).
pub const DEFAULT_MAX_LISTENERS: usize = 1024;

/// Why a watch could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchRefused {
    /// Events from that index are no longer kept; `floor` is the oldest one can resume at.
    Compacted { floor: u64 },
    /// As many listeners as allowed are registered.
    TooMany { limit: usize },
}

/// A registered listener.
pub struct Subscription {
    pub id: u64,
    /// Events after `replay_upto`, live; dropped (disconnected) if the listener falls
    /// [`LISTENER_QUEUE`] events behind.
    pub rx: Receiver<Arc<Event>>,
    /// For a resumed watch: replay the history from `from` through `upto` first
    /// ([`Notifier::replay_page`]), then read `rx`.
    pub replay: Option<(u64, u64)>,
}

struct Listener {
    id: u64,
    key: String,
    prefix: bool,
    tx: SyncSender<Arc<Event>>,
}

fn wants(key: &str, prefix: bool, event_key: &str) -> bool {
    if prefix {
        event_key.starts_with(key)
    } else {
        event_key == key
    }
}

struct Inner {
    listeners: Vec<Listener>,
    next_id: u64,
    history: VecDeque<(Arc<Event>, usize)>,
    history_bytes: usize,
    /// The history holds every event with an index at or above this.
    floor: u64,
    /// Every event up to this applied index has been handed to the listeners.
    notified: u64,
    max_listeners: usize,
}

/// Listeners and the event history, under one lock so that a watcher's replay and its live
/// subscription meet with no gap and no duplicate.
pub struct Notifier {
    inner: Mutex<Inner>,
}

impl Notifier {
    /// A notifier whose history starts at `floor` (events before it were folded into the
    /// loaded state, not recorded).
    pub fn new(floor: u64) -> Notifier {
        Notifier {
            inner: Mutex::new(Inner {
                listeners: Vec::new(),
                next_id: 1,
                history: VecDeque::new(),
                history_bytes: 0,
                floor,
                notified: 0,
                max_listeners: DEFAULT_MAX_LISTENERS,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("notifier lock")
    }

    pub fn set_max_listeners(&self, n: usize) {
        self.lock().max_listeners = n.max(1);
    }

    /// Registers a listener on `key` (or every key under it, with `prefix`), resuming from
    /// `from_index` if given.
    pub fn subscribe(
        &self,
        key: &str,
        prefix: bool,
        from_index: Option<u64>,
    ) -> Result<Subscription, WatchRefused> {
        let mut n = self.lock();
        if n.listeners.len() >= n.max_listeners {
            return Err(WatchRefused::TooMany {
                limit: n.max_listeners,
            });
        }
        let replay = match from_index {
            None => None,
            Some(from) if from < n.floor => return Err(WatchRefused::Compacted { floor: n.floor }),
            // Everything up to the newest recorded event is in the history; later ones
            // arrive on the channel, registered under this same lock.
            Some(from) => Some((from, n.history.back().map_or(0, |(e, _)| e.index))),
        };
        let (tx, rx) = mpsc::sync_channel(LISTENER_QUEUE);
        let id = n.next_id;
        n.next_id += 1;
        n.listeners.push(Listener {
            id,
            key: key.to_string(),
            prefix,
            tx,
        });
        Ok(Subscription { id, rx, replay })
    }

    /// Up to `max` retained events for `key`/`prefix` with an index in `from..=upto`, and
    /// the index to ask from next (past the last event looked at, matching or not). `Err`
    /// when the history no longer reaches back to `from` (a slow replay fell behind).
    pub fn replay_page(
        &self,
        key: &str,
        prefix: bool,
        from: u64,
        upto: u64,
        max: usize,
    ) -> Result<(Vec<Arc<Event>>, u64), WatchRefused> {
        let n = self.lock();
        if from < n.floor {
            return Err(WatchRefused::Compacted { floor: n.floor });
        }
        let start = n.history.partition_point(|(e, _)| e.index < from);
        let mut next = upto.saturating_add(1);
        let mut page = Vec::new();
        // Look at a bounded stretch per call, so a sparse key does not hold the lock long.
        for (e, _) in n.history.range(start..).take(max.saturating_mul(16).max(1)) {
            if e.index > upto || page.len() >= max {
                next = e.index.min(next);
                break;
            }
            next = e.index + 1;
            if wants(key, prefix, &e.key) {
                page.push(e.clone());
            }
        }
        Ok((page, next))
    }

    pub fn unsubscribe(&self, id: u64) {
        self.lock().listeners.retain(|l| l.id != id);
    }

    /// Keys of registered listeners (Nacos `/raft/listeners`).
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .listeners
            .iter()
            .map(|l| l.key.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The applied index up to which every event has been handed to the listeners.
    pub fn notified(&self) -> u64 {
        self.lock().notified
    }

    /// At start-up: everything up to `index` was applied before the restart.
    pub fn notified_at_least(&self, index: u64) {
        let mut n = self.lock();
        n.notified = n.notified.max(index);
    }

    /// After a snapshot install: every listener is dropped (its stream has a gap; a
    /// watcher resuming gets `Compacted`), and history starts again at `floor`.
    pub fn reset(&self, floor: u64, notified: u64) {
        let mut n = self.lock();
        n.listeners.clear();
        n.history.clear();
        n.history_bytes = 0;
        n.floor = floor;
        n.notified = notified;
    }

    /// Hands the events of entries applied up to `upto` to the listeners and the history.
    pub fn notify(&self, events: Vec<Event>, upto: u64) {
        let mut n = self.lock();
        n.notified = n.notified.max(upto);
        if events.is_empty() {
            return;
        }
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        // A listener whose receiver is gone, or that is a whole queue behind, is dropped
        // here: one stuck watcher must not hold memory for every write after it.
        n.listeners.retain(|l| {
            events
                .iter()
                .filter(|ev| wants(&l.key, l.prefix, &ev.key))
                .all(|ev| match l.tx.try_send(ev.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
                })
        });
        for ev in events {
            let bytes = ev.bytes();
            n.history_bytes += bytes;
            n.history.push_back((ev, bytes));
        }
        while n.history.len() > HISTORY_EVENTS || n.history_bytes > HISTORY_BYTES {
            let Some((gone, bytes)) = n.history.pop_front() else {
                break;
            };
            n.history_bytes -= bytes;
            n.floor = n.floor.max(gone.index + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(index: u64, key: &str, value: serde_json::Value) -> Event {
        Event {
            event: EventKind::Change,
            key: key.into(),
            value: Some(value),
            timestamp: 1,
            index,
        }
    }

    fn replay_all(n: &Notifier, key: &str, prefix: bool, sub: &Subscription) -> Vec<u64> {
        let (mut from, upto) = sub.replay.expect("a resumed watch");
        let mut out = Vec::new();
        while from <= upto {
            let (page, next) = n.replay_page(key, prefix, from, upto, 2).unwrap();
            out.extend(page.iter().map(|e| e.index));
            assert!(next > from, "no progress");
            from = next;
        }
        out
    }

    #[test]
    fn a_replay_is_paged_from_the_history_and_meets_the_live_events() {
        let n = Notifier::new(1);
        n.notify(
            (1..=9)
                .map(|i| ev(i, if i % 2 == 0 { "a" } else { "b" }, i.into()))
                .collect(),
            9,
        );
        let sub = n.subscribe("a", false, Some(3)).unwrap();
        n.notify(vec![ev(10, "a", 10.into()), ev(11, "b", 11.into())], 11);
        assert_eq!(replay_all(&n, "a", false, &sub), vec![4, 6, 8]);
        let live: Vec<u64> = sub.rx.try_iter().map(|e| e.index).collect();
        assert_eq!(live, vec![10]);
    }

    #[test]
    fn history_is_bounded_by_bytes_and_a_resume_past_it_is_compacted() {
        let n = Notifier::new(1);
        let big = serde_json::Value::String("x".repeat(HISTORY_BYTES / 4));
        n.notify((1..=8).map(|i| ev(i, "k", big.clone())).collect(), 8);
        let sub = n.subscribe("k", false, Some(8)).unwrap();
        assert_eq!(sub.replay, Some((8, 8)));
        match n.subscribe("k", false, Some(1)) {
            Err(WatchRefused::Compacted { floor }) => assert!(floor > 4, "floor {floor}"),
            other => panic!("{:?}", other.map(|s| s.replay)),
        }
    }

    #[test]
    fn a_listener_a_whole_queue_behind_is_dropped() {
        let n = Notifier::new(1);
        let sub = n.subscribe("", true, None).unwrap();
        let events = (1..=LISTENER_QUEUE as u64 + 1)
            .map(|i| ev(i, "k", serde_json::Value::Null))
            .collect();
        n.notify(events, LISTENER_QUEUE as u64 + 1);
        assert!(n.is_empty());
        // It still gets what was queued, then sees the end.
        assert_eq!(sub.rx.iter().count(), LISTENER_QUEUE);
    }

    #[test]
    fn listeners_are_limited() {
        let n = Notifier::new(1);
        n.set_max_listeners(2);
        let _a = n.subscribe("a", false, None).unwrap();
        let b = n.subscribe("b", false, None).unwrap();
        assert_eq!(
            n.subscribe("c", false, None).err(),
            Some(WatchRefused::TooMany { limit: 2 })
        );
        n.unsubscribe(b.id);
        assert!(n.subscribe("c", false, None).is_ok());
    }
}
