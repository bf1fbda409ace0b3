//! The recording reader of `cutover analyze` (`cutover_core::recording::parse`), on text a
//! user may have been handed by anyone: an evidence recording or summary samples. Besides
//! not crashing, what it accepts must be usable: rows in time order, counts that add up,
//! histograms within the row's budget, and windows over them that never panic.
#![no_main]

use cutover_core::recording::{self, MAX_BOUNDS, Side};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(read) = recording::parse(text) else {
        return;
    };
    assert!(read.seconds.windows(2).all(|w| w[0].time <= w[1].time));
    assert!(read.summaries.windows(2).all(|w| w[0].time <= w[1].time));
    for row in &read.seconds {
        let e = &row.evidence;
        assert!(e.requests >= 0.0 && e.errors >= 0.0 && e.errors <= e.requests);
        assert!(e.latency.bins().len() <= 2 * MAX_BOUNDS);
        assert!(e.latency.total().is_finite());
    }
    if let (Some(first), Some(last)) = (read.seconds.first(), read.seconds.last()) {
        let all = recording::window(&read.seconds, Side::Candidate, first.time - 1.0, last.time);
        let _ = all.latency.quantile(0.99);
        let _ = all.error_rate();
    }
});
