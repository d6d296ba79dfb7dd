//! In-process subscribers (`channel` sink): a fast subscriber receives every batch in order, a
//! slow drop-oldest subscriber receives the newest ones and counts the rest as dropped
//! (received + dropped = sent), a slow disconnect subscriber is cut off, and none of them slows
//! the pipeline.

use std::time::Duration;

use neurostream::sinks::{subscribe, SlowPolicy};
use neurostream::{registry, Batch, PipelineSpec, RunOptions};

#[test]
fn slow_subscribers_drop_or_disconnect_without_slowing_the_pipeline() {
    let text = r#"
[sources.eeg]
kind = "synthetic_eeg"
channels = 4
sample_rate = 1000.0
seconds = 2.0
chunk = 10

[sinks.live]
kind = "channel"
input = "eeg"
"#;
    let fast = subscribe("live", 1000, SlowPolicy::DropOldest);
    let slow = subscribe("live", 5, SlowPolicy::DropOldest);
    let cut = subscribe("live", 5, SlowPolicy::Disconnect);
    let pipeline = PipelineSpec::from_toml_str(text, ".").unwrap().compile(&registry()).unwrap();
    let run = std::thread::spawn(move || neurostream::run(pipeline, RunOptions::default()));
    let fast_reader = std::thread::spawn(move || {
        let mut samples = Vec::new();
        for b in fast.receiver.iter() {
            if let Batch::Dense(f) = b {
                if let neurostream::RowIndex::Samples(s) = &f.index {
                    samples.extend_from_slice(s);
                }
            }
        }
        (samples, fast.dropped())
    });
    // The slow subscribers read nothing until the run is over.
    let report = run.join().unwrap().unwrap();
    let (samples, fast_dropped) = fast_reader.join().unwrap();
    assert_eq!(fast_dropped, 0);
    assert_eq!(samples, (0..2000).collect::<Vec<i64>>(), "every row, in order");
    let kept: Vec<Batch> = slow.receiver.iter().collect();
    assert_eq!(kept.len(), 5);
    assert_eq!(kept.len() as u64 + slow.dropped(), 200, "received + dropped = sent");
    // Drop-oldest keeps the newest batches.
    let Batch::Dense(last) = kept.last().unwrap() else { panic!() };
    assert_eq!(last.index, neurostream::RowIndex::Samples((1990..2000).collect()));
    assert!(cut.was_disconnected());
    assert_eq!(cut.receiver.iter().count(), 5, "a cut-off subscriber keeps what it had");
    assert!(
        report.sink_lines.iter().any(|l| l.contains("200 batches")),
        "{:?}",
        report.sink_lines
    );
    assert!(cut.receiver.recv_timeout(Duration::from_millis(10)).is_err());
}
