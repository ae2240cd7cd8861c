//! The services as the naming API reads them: a listener on every naming key of the
//! notifier (Nacos `ServiceManager` and each `Service` listening on its keys), folded into
//! one map.
//!
//! Loads the whole naming prefix when it (re)subscribes, as Nacos's `listen` replays every
//! current datum, and again whenever its subscription is gone: a snapshot install drops
//! every listener, and so does falling a whole queue behind. Events are applied per key only
//! when newer than what the map holds, so the load and the events that overlap it agree.
//! Readers drain the queue themselves under the lock, so after a linearizable barrier the
//! view holds every change up to it (the notifier queues events before the applied index
//! moves).

use std::collections::BTreeMap;
use std::sync::mpsc::TryRecvError;
use std::sync::Mutex;

use crate::node::datum_set::DatumSet;
use crate::node::notifier::{EventKind, Subscription};

use super::{Instances, KeyKind, Service, ServiceId, NAMING_PREFIX};

/// One service as the view holds it. A service exists while it has a meta or an instance
/// list: Nacos 1.x lost instance lists whose meta was missing after a restart (its #3588);
/// here they are served.
#[derive(Clone, Debug, Default)]
pub struct ServiceEntry {
    /// The meta and the index of the datum it came from.
    pub meta: Option<(Service, u64)>,
    pub instances: Option<(Instances, u64)>,
}

impl ServiceEntry {
    pub fn instance_count(&self) -> usize {
        self.instances
            .as_ref()
            .map_or(0, |(i, _)| i.instance_list.len())
    }
}

#[derive(Default)]
struct Inner {
    sub: Option<Subscription>,
    services: BTreeMap<ServiceId, ServiceEntry>,
}

/// The listener and its map.
#[derive(Default)]
pub struct NamingView {
    inner: Mutex<Inner>,
}

impl NamingView {
    pub fn new() -> NamingView {
        NamingView::default()
    }

    /// Runs `f` on the services, brought up to every event the notifier has queued.
    pub fn read<R>(
        &self,
        datums: &DatumSet,
        f: impl FnOnce(&BTreeMap<ServiceId, ServiceEntry>) -> R,
    ) -> R {
        let mut inner = self.inner.lock().expect("naming view lock");
        sync(&mut inner, datums);
        f(&inner.services)
    }

    /// Applies what is queued (the background drain calls it, so the queue never fills in
    /// a quiet spell without readers).
    pub fn drain(&self, datums: &DatumSet) {
        let mut inner = self.inner.lock().expect("naming view lock");
        sync(&mut inner, datums);
    }
}

fn sync(inner: &mut Inner, datums: &DatumSet) {
    loop {
        let Some(sub) = &inner.sub else {
            load(inner, datums);
            if inner.sub.is_none() {
                return;
            }
            continue;
        };
        match sub.rx.try_recv() {
            Ok(ev) => {
                let value = match ev.event {
                    EventKind::Change => ev.value.clone(),
                    EventKind::Delete => None,
                };
                apply(inner, &ev.key, value, ev.index);
            }
            Err(TryRecvError::Empty) => return,
            // Dropped by the notifier: a snapshot was installed, or the view fell behind.
            Err(TryRecvError::Disconnected) => inner.sub = None,
        }
    }
}

/// Subscribes first, then reads every naming datum: what changes in between arrives as an
/// event too, and is applied only if newer.
fn load(inner: &mut Inner, datums: &DatumSet) {
    inner.services.clear();
    inner.sub = match datums.notifier().subscribe(NAMING_PREFIX, true, None) {
        Ok(sub) => Some(sub),
        Err(refused) => {
            // Every listener slot is taken by watchers; the view still answers, from the
            // datums as they are now, and tries to subscribe on the next read.
            crate::node::log_event(&format!(
                "warning: the naming view cannot listen ({refused:?}); it reloads on every read until a listener slot frees"
            ));
            None
        }
    };
    for d in datums.list(NAMING_PREFIX) {
        apply(inner, &d.key, Some(d.value), d.index);
    }
}

fn apply(inner: &mut Inner, key: &str, value: Option<serde_json::Value>, index: u64) {
    let Some((id, kind)) = ServiceId::of_key(key) else {
        return;
    };
    let entry = inner.services.entry(id.clone()).or_default();
    let held = match kind {
        KeyKind::Meta => entry.meta.as_ref().map(|(_, i)| *i),
        KeyKind::Instances => entry.instances.as_ref().map(|(_, i)| *i),
    };
    if held.is_some_and(|held| held >= index) {
        return;
    }
    match (kind, value) {
        (KeyKind::Meta, Some(v)) => match serde_json::from_value::<Service>(v) {
            Ok(s) => entry.meta = Some((s, index)),
            // Not a Nacos `Service`: skipped (writes through the API refuse to touch it).
            Err(_) => entry.meta = None,
        },
        (KeyKind::Instances, Some(v)) => match serde_json::from_value::<Instances>(v) {
            Ok(l) => entry.instances = Some((l, index)),
            Err(_) => entry.instances = None,
        },
        (KeyKind::Meta, None) => entry.meta = None,
        (KeyKind::Instances, None) => entry.instances = None,
    }
    if entry.meta.is_none() && entry.instances.is_none() {
        inner.services.remove(&id);
    }
}
