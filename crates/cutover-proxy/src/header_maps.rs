//! Header maps used again. The proxy's own HTTP/1 reader and the upstream codec build a
//! map for every request and every answer, and allocating and freeing each map's two
//! blocks cost about 550 instructions per request in glibc's allocator, and still about
//! 400 in mimalloc, which the binary now uses. A map whose message is done goes back to
//! its thread emptied ([`give_back`]), for the next message to [`take`].
//!
//! What a thread keeps is bounded whatever clients and upstreams send: at most [`KEPT`]
//! maps, none with room for more than [`MAX_CAPACITY`] names. Emptying a map keeps the
//! room its repeated values took (the map does not say how much), so only maps whose
//! reader bounded their values come back: those of the HTTP/1 readers (hyper's and the
//! proxy's own, at most 100 fields) and of the upstream codec (at most 100), not an
//! HTTP/2 request's (`upstream::Target::keep_headers`). A kept map is then at most about
//! 10 KiB. Emptying a map drops its values, so a kept map holds no view into a read
//! buffer.

use std::cell::RefCell;

use http::HeaderMap;

/// The most maps a thread keeps: about as many as its requests in flight at once need.
const KEPT: usize = 32;

/// A map with room for more fields than this is freed, not kept.
const MAX_CAPACITY: usize = 24;

thread_local! {
    static KEPT_MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for at least `fields` fields: one this thread kept, if any.
pub(crate) fn take(fields: usize) -> HeaderMap {
    match KEPT_MAPS.try_with(|maps| maps.borrow_mut().pop()) {
        Ok(Some(mut map)) => {
            map.reserve(fields);
            map
        }
        _ => HeaderMap::with_capacity(fields),
    }
}

/// Empties `map` and keeps it for [`take`], unless it has room for many names or this
/// thread keeps enough maps already. The caller vouches that a reader bounded the map's
/// values (see the module's documentation).
pub(crate) fn give_back(mut map: HeaderMap) {
    let capacity = map.capacity();
    if capacity == 0 || capacity > MAX_CAPACITY {
        return;
    }
    map.clear();
    // During a thread's teardown the map is simply dropped.
    let _ = KEPT_MAPS.try_with(|maps| {
        let mut maps = maps.borrow_mut();
        if maps.len() < KEPT {
            maps.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    /// A map comes back empty, with its room, and holds nothing of the message it
    /// carried; a large one is not kept, nor more than [`KEPT`].
    #[test]
    fn maps_come_back_empty_and_the_store_stays_bounded() {
        // A view into a read buffer, as the readers make them.
        let read = bytes::Bytes::from(b"Host: shop.example".to_vec());
        let mut map = take(4);
        let value = HeaderValue::from_maybe_shared(read.slice(6..)).expect("value");
        map.insert(http::header::HOST, value);
        let room = map.capacity();
        give_back(map);
        assert!(read.is_unique(), "the kept map holds no view into the read");
        let again = take(1);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room, "the kept map came back");

        let mut large = HeaderMap::with_capacity(MAX_CAPACITY * 2);
        large.insert(http::header::HOST, HeaderValue::from_static("x"));
        give_back(large);
        assert!(
            take(0).capacity() < MAX_CAPACITY * 2,
            "a large map is not kept"
        );

        for _ in 0..KEPT * 2 {
            give_back(HeaderMap::with_capacity(4));
        }
        assert_eq!(KEPT_MAPS.with(|maps| maps.borrow().len()), KEPT);
    }
}
