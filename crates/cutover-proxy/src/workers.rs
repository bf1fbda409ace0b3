//! Worker threads: with `workers: N` the proxy runs N OS threads, each a single-threaded
//! Tokio runtime with a listener socket of its own on every client address
//! (`SO_REUSEPORT`: the kernel spreads new connections over the sockets), as nginx and
//! pingora do. A connection, its requests and its upstream connections then live on one
//! thread from accept to close: no work stealing, no wake-ups across threads, and the
//! request path's counters and pools are the thread's own shard (see [`shard`]).
//!
//! Shared state (route table, registry, events) is shared through `Arc` as before; the
//! admin listener, the guardrails and the idle reaper stay on the runtime that called
//! [`crate::Proxy::start_workers`].

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::listen::{self, Bound};
use crate::{Shared, StartError};

/// How many shards per-thread state has (pools, counters). Worker `n` uses shard
/// `n % SHARDS`; every thread that is not a worker (a caller's multi-thread runtime) uses
/// shard 0. Past 15 workers, shards are shared by two workers: still correct, only
/// contended.
pub(crate) const SHARDS: usize = 16;

thread_local! {
    /// The worker this thread is: 1..=N on a worker thread, 0 elsewhere.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is: 1..=N on a worker thread, 0 elsewhere.
pub(crate) fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// The shard of per-thread state that this thread uses.
pub(crate) fn shard() -> usize {
    worker() % SHARDS
}

/// Runs `f` as worker `index` would (its shard of per-thread state), on this thread; the
/// thread is itself again afterwards, even if `f` panics.
#[cfg(test)]
pub(crate) fn as_worker<R>(index: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            WORKER.with(|w| w.set(self.0));
        }
    }
    let _restore = Restore(WORKER.with(|w| w.replace(index)));
    f()
}

/// One `T` per shard of per-thread state ([`shard`]), each in a cache line of its own.
///
/// For what every request of every worker writes: a counter or lock shared by two workers
/// moves its cache line between their cores on each write (about 60 ns a move measured on
/// this project's 2-core benchmark machine, against under 5 ns for a line a core keeps),
/// and a request wrote several. 64-byte slots, not 128 as the version counters' shards:
/// these sit in every endpoint and route, so they trade the memory of a second line for
/// the risk that the adjacent-line prefetcher pairs two workers' lines now and then.
pub(crate) struct PerWorker<T> {
    slots: [Slot<T>; SHARDS],
}

/// One cache line's worth of room for a [`PerWorker`] value.
#[repr(align(64))]
struct Slot<T>(T);

impl<T: Default> Default for PerWorker<T> {
    fn default() -> PerWorker<T> {
        PerWorker::from_fn(|_| T::default())
    }
}

impl<T> PerWorker<T> {
    /// Each shard's value made by `make(shard)`.
    pub(crate) fn from_fn(mut make: impl FnMut(usize) -> T) -> PerWorker<T> {
        PerWorker {
            slots: std::array::from_fn(|shard| Slot(make(shard))),
        }
    }

    /// This thread's value.
    pub(crate) fn mine(&self) -> &T {
        &self.slots[shard()].0
    }

    /// Every shard's value, for sums and sweeps off the request path.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().map(|slot| &slot.0)
    }
}

/// Binds a client listener socket at `address` with `SO_REUSEPORT`, so that one socket per
/// worker can share the address. Returns it detached from the calling runtime, for a worker
/// to adopt.
pub(crate) fn bind_shared(address: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let fail = |source| StartError::Bind { address, source };
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.set_reuseport(true).map_err(fail)?;
    socket.bind(address).map_err(fail)?;
    let listener = socket.listen(1024).map_err(fail)?;
    listener.into_std().map_err(fail)
}

/// How far ahead a worker's timer driver is kept from its next wake-up; see
/// [`hold_the_next_wake_near`].
const NEXT_WAKE_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a timer due within [`NEXT_WAKE_WITHIN`] on the worker's runtime (all but the
/// moment each tick fires and is set again).
///
/// Tokio's timer driver notes, when its thread goes to sleep or looks for events, when its
/// earliest timer is due; a timer registered afterwards with an earlier deadline makes it
/// write to its eventfd, so that a thread asleep elsewhere would wake for it. On a worker
/// that write is always to itself: a system call, and at most one more wake-up. Each
/// request registers its upstream deadline (`timeouts.request`, 30 s by default), and a
/// worker whose requests had all ended when it last looked had only the connections' idle
/// timers (`keepAliveIdle`, 60 s) left, so every request it started before it next looked
/// wrote. Measured at two workers before this: 0.38 eventfd writes per request (0.04 at one
/// worker, which more often looks with requests in flight). With a timer due within a
/// second, a deadline of a second or more is not the earliest; shorter timers still write
/// (a configured timeout under a second, the 50 ms watchdog of connections hyper serves,
/// the close grace), as does this one's own tick. An idle worker wakes two or three times
/// a second for it.
async fn hold_the_next_wake_near() {
    let mut tick = tokio::time::interval(NEXT_WAKE_WITHIN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// One client listener as a worker receives it.
pub(crate) struct WorkerListener {
    pub(crate) socket: std::net::TcpListener,
    pub(crate) local_addr: SocketAddr,
    pub(crate) tls: Option<TlsAcceptor>,
}

/// A running worker thread.
pub(crate) struct Worker {
    /// Fires when every listener of the worker stopped accepting and its connections
    /// drained (after shutdown was signalled).
    drained: oneshot::Receiver<()>,
    /// Dropped or sent: the worker drops its runtime, closing whatever is still open.
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Worker {
    /// Starts worker number `index` (1-based) serving `listeners` until `shutdown`.
    pub(crate) fn spawn(
        index: usize,
        shared: Arc<Shared>,
        listeners: Vec<WorkerListener>,
        permits: Arc<Semaphore>,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (drained_tx, drained) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("cutover-worker-{index}"))
            .spawn(move || {
                WORKER.with(|w| w.set(index));
                runtime.block_on(async move {
                    // Dropped with the runtime; not one of the tasks a drain waits for.
                    tokio::spawn(hold_the_next_wake_near());
                    let serving = async move {
                        let mut serving = JoinSet::new();
                        for listener in listeners {
                            let local_addr = listener.local_addr;
                            match TcpListener::from_std(listener.socket) {
                                Ok(socket) => {
                                    serving.spawn(listen::serve(
                                        shared.clone(),
                                        Bound::new(socket, local_addr, listener.tls),
                                        permits.clone(),
                                        shutdown.clone(),
                                    ));
                                }
                                Err(e) => {
                                    tracing::error!(worker = index, address = %local_addr, error = %e, "a worker cannot listen");
                                }
                            }
                        }
                        while serving.join_next().await.is_some() {}
                        let _ = drained_tx.send(());
                        // Tunnels of this worker may outlive its connections: the
                        // runtime stays until the proxy says stop.
                        std::future::pending::<()>().await;
                    };
                    tokio::select! {
                        () = serving => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime here cancels what is left on it.
                drop(runtime);
            })?;
        Ok(Worker {
            drained,
            stop,
            thread,
        })
    }

    /// Waits until the worker drained after shutdown was signalled.
    pub(crate) async fn drained(&mut self) {
        let _ = (&mut self.drained).await;
    }

    /// Stops the worker and waits for its thread to end, off the async threads.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn each_workers_value_has_a_cache_line_of_its_own() {
        let values = PerWorker::<AtomicU64>::default();
        let addresses: Vec<usize> = values
            .iter()
            .map(|v| std::ptr::from_ref(v) as usize)
            .collect();
        assert_eq!(addresses.len(), SHARDS);
        for pair in addresses.windows(2) {
            assert_eq!(pair[1] - pair[0], 64);
        }
        assert_eq!(addresses[0] % 64, 0, "slots start on a line");
    }

    #[test]
    fn a_thread_reaches_its_workers_value_only() {
        let values = PerWorker::from_fn(|shard| shard);
        assert_eq!(*values.mine(), 0, "a thread that is no worker uses shard 0");
        assert_eq!(as_worker(3, || *values.mine()), 3);
        assert_eq!(
            as_worker(SHARDS + 2, || *values.mine()),
            2,
            "shared past SHARDS"
        );
        assert_eq!(worker(), 0, "the thread is itself again");
    }
}
