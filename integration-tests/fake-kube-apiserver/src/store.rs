//! The object store: objects as JSON by (resource, namespace, name), one global
//! resourceVersion counter, and the history of changes watches are served from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

use crate::resources::{self, ResourceType};
use crate::util::Rng;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event type name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history.
#[derive(Debug)]
pub(crate) struct Event {
    /// The resourceVersion the change was written at.
    pub rv: u64,
    pub rt: &'static ResourceType,
    pub namespace: String,
    pub kind: EventType,
    /// The object after the change (for a deletion: the last state, at the deletion's rv).
    pub object: Value,
    /// The object before the change, for modifications and deletions.
    pub old: Option<Value>,
}

type Key = (&'static str, String, String);

/// The second octets of pod IPs (`127.X.*.*`) taken by servers of this process, so that
/// servers running side by side in one test binary never hand out the same address.
static PREFIXES_IN_USE: std::sync::Mutex<std::collections::BTreeSet<u8>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A free second octet in 10..=250, chosen at random (other test processes choose too).
fn claim_prefix(rng: &mut Rng) -> u8 {
    let mut in_use = PREFIXES_IN_USE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let start = rng.range(10, 251) as u8;
    let prefix = (0..241u16)
        .map(|i| (10 + (u16::from(start) - 10 + i) % 241) as u8)
        .find(|p| !in_use.contains(p))
        .unwrap_or(start);
    in_use.insert(prefix);
    prefix
}

/// The objects and their history. Every method is synchronous; callers hold the lock only
/// briefly and never across an await.
#[derive(Debug)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// The oldest resourceVersion a watch may resume from: every change after it is in
    /// `history`.
    floor: u64,
    changes: watch::Sender<u64>,
    /// For generated names, uids and addresses.
    pub rng: Rng,
    pod_ip_prefix: u8,
    next_pod_ip: u32,
    next_cluster_ip: u32,
}

impl Store {
    /// An empty store keeping `history_limit` events, announcing every write on `changes`.
    pub(crate) fn new(history_limit: usize, changes: watch::Sender<u64>) -> Store {
        let mut rng = Rng::from_entropy();
        let pod_ip_prefix = claim_prefix(&mut rng);
        Store {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            floor: 1,
            changes,
            rng,
            pod_ip_prefix,
            next_pod_ip: 2,
            next_cluster_ip: 10,
        }
    }

    /// The current (latest) resourceVersion.
    pub(crate) fn rv(&self) -> u64 {
        self.rv
    }

    /// One object.
    pub(crate) fn get(&self, rt: &ResourceType, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&(rt.plural, namespace.to_string(), name.to_string()))
    }

    /// The objects of a type, in one namespace or (with `None`) in all, ordered by
    /// namespace and name.
    pub(crate) fn list(&self, rt: &ResourceType, namespace: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((plural, ns, _), _)| {
                *plural == rt.plural && namespace.is_none_or(|wanted| wanted == ns)
            })
            .map(|(_, v)| v)
            .collect()
    }

    /// Every namespace some object lives in.
    pub(crate) fn namespaces_in_use(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .objects
            .keys()
            .map(|(_, ns, _)| ns.clone())
            .filter(|ns| !ns.is_empty())
            .collect();
        out.dedup();
        out.sort();
        out.dedup();
        out
    }

    /// Stores `object` at a new resourceVersion (written into its metadata), records the
    /// change and wakes watchers. Returns the stored object.
    pub(crate) fn put(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        set_rv(&mut object, self.rv);
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.objects.insert(
            (rt.plural, namespace.to_string(), name.to_string()),
            object.clone(),
        );
        self.record(rt, namespace, kind, object.clone(), old);
        object
    }

    /// Removes an object, recording the deletion at a new resourceVersion.
    pub(crate) fn remove(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let old = self
            .objects
            .remove(&(rt.plural, namespace.to_string(), name.to_string()))?;
        self.rv += 1;
        let mut object = old.clone();
        set_rv(&mut object, self.rv);
        self.record(rt, namespace, EventType::Deleted, object.clone(), Some(old));
        Some(object)
    }

    fn record(
        &mut self,
        rt: &'static ResourceType,
        namespace: &str,
        kind: EventType,
        object: Value,
        old: Option<Value>,
    ) {
        self.history.push_back(Arc::new(Event {
            rv: self.rv,
            rt,
            namespace: namespace.to_string(),
            kind,
            object,
            old,
        }));
        while self.history.len() > self.history_limit {
            if let Some(evicted) = self.history.pop_front() {
                self.floor = evicted.rv;
            }
        }
        self.changes.send_replace(self.rv);
    }

    /// The changes after `rv`, or `Err(floor)` when some of them are no longer kept.
    pub(crate) fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>, u64> {
        if rv < self.floor {
            return Err(self.floor);
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Ok(self.history.range(start..).cloned().collect())
    }

    /// Forgets the history: a watch may resume only from the current resourceVersion.
    pub(crate) fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    /// The oldest resourceVersion a watch may resume from.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// The next pod IP: `127.X.Y.Z` with X fixed per server and Y.Z counting up.
    pub(crate) fn allocate_pod_ip(&mut self) -> String {
        loop {
            let n = self.next_pod_ip;
            self.next_pod_ip = self.next_pod_ip.wrapping_add(1) % 65_536;
            let (y, z) = (n / 256, n % 256);
            if z != 0 && z != 255 {
                return format!("127.{}.{y}.{z}", self.pod_ip_prefix);
            }
        }
    }

    /// The next Service cluster IP, `10.96.Y.Z`.
    pub(crate) fn allocate_cluster_ip(&mut self) -> String {
        let n = self.next_cluster_ip;
        self.next_cluster_ip += 1;
        format!("10.96.{}.{}", (n / 254) % 256, n % 254 + 1)
    }

    /// Every stored object, with its type (for garbage collection).
    pub(crate) fn all(&self) -> impl Iterator<Item = (&'static ResourceType, &str, &Value)> {
        self.objects.iter().filter_map(|((plural, ns, _), v)| {
            resources::by_plural(plural).map(|rt| (rt, ns.as_str(), v))
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        PREFIXES_IN_USE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.pod_ip_prefix);
    }
}

fn set_rv(object: &mut Value, rv: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}
