//! Guardrail trips, from the embedded proxy's event channel or reported by a pulling
//! proxy, handed to the drivers of their releases.

use std::sync::Arc;

use cutover_proxy::Proxy;

use crate::Inner;
use crate::driver::Input;

/// Forwards the proxy's guardrail trips to the drivers of their releases.
pub(crate) async fn watch_events(inner: Arc<Inner>, proxy: Arc<Proxy>) {
    let mut ids = proxy.subscribe_events();
    let mut seen = *ids.borrow_and_update();
    while ids.changed().await.is_ok() {
        for event in proxy.events_since(seen) {
            seen = seen.max(event.id);
            if let Some(trip) = event.kind.into_guardrail_trip() {
                guardrail_tripped(
                    &inner,
                    &trip.release,
                    &trip.version,
                    trip.guardrail,
                    trip.detail,
                );
            }
        }
    }
}

/// A proxy cut `release`'s candidate `version` off: keeps the cut in every table
/// published from now on, until the driver has decided what the trip means, and tells the
/// driver.
pub(crate) fn guardrail_tripped(
    inner: &Inner,
    release: &str,
    version: &str,
    name: String,
    detail: String,
) {
    inner.routes.cut_candidate(release, version);
    let drivers = inner
        .drivers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = drivers.get(release) {
        let _ = handle.inputs.send(Input::Guardrail {
            version: version.to_string(),
            name,
            detail,
        });
    }
}
