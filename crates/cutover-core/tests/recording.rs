//! The recording reader's fuzz corpus (`fuzz/corpus/read_recording`), replayed: every seed
//! and every fixed crash is read without a panic, and what is accepted keeps the reader's
//! promises.

use cutover_core::recording::{self, Side};

#[test]
fn the_recording_corpus_is_read_without_panicking() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/read_recording"
    );
    let mut read = 0;
    for entry in std::fs::read_dir(dir).expect("the corpus is committed") {
        let path = entry.expect("entry").path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Ok(recording) = recording::parse(&text) {
            read += 1;
            for row in &recording.seconds {
                assert!(row.evidence.errors <= row.evidence.requests, "{path:?}");
            }
            if let (Some(first), Some(last)) = (recording.seconds.first(), recording.seconds.last())
            {
                let all = recording::window(
                    &recording.seconds,
                    Side::Candidate,
                    first.time - 1.0,
                    last.time,
                );
                let _ = all.latency.quantile(0.99);
            }
        }
    }
    assert!(read >= 3, "the seeds include valid recordings");
}
