//! The data inlet's samples pulled on a thread of their own, so the worker never polls for them:
//! the thread blocks in liblsl until a sample arrives, takes what else has arrived with it (up
//! to `chunk` samples, without waiting), hands the chunk over and wakes the worker. A chunk then
//! goes on as it arrives, instead of at the worker's next poll (up to a millisecond later).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender};
use neurostream_engine::lsl::{Api, Handle};

use crate::waker::WakerSlot;

/// How long one blocking pull waits before the thread looks at its stop flag, in seconds.
const PULL_TIMEOUT_S: f64 = 0.05;
/// Chunks pulled but not yet taken by the worker; beyond it the thread waits and liblsl's own
/// buffer holds the samples (and drops the oldest when it overflows: counted as gaps).
const QUEUE_CHUNKS: usize = 64;
/// liblsl's error code for a stream whose outlet went away.
const LSL_LOST: i32 = -2;

/// What the pulling thread hands over.
pub(super) enum Pulled {
    /// `stamps.len()` samples (corrected LSL time stamps) of `channels` values each, in order.
    Chunk { data: Vec<f32>, stamps: Vec<f64> },
    /// The outlet went away; nothing follows.
    Lost,
}

/// The inlet handle, moved to the pulling thread, which alone uses it and destroys it.
struct Inlet(Handle);
// SAFETY: after the hand-over only the pulling thread touches the inlet.
unsafe impl Send for Inlet {}

/// The pulling thread of one data inlet, and its queue.
pub(super) struct Puller {
    /// Chunks in arrival order.
    pub(super) rx: Receiver<Pulled>,
    /// Where the thread finds the worker's waker.
    pub(super) waker: WakerSlot,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Puller {
    /// Starts pulling `inlet` (`channels` float32 values per sample) in chunks of at most
    /// `chunk` samples. The thread owns the inlet from now on and destroys it when it ends.
    pub(super) fn start(api: Arc<Api>, inlet: Handle, channels: usize, chunk: usize, name: &str) -> std::io::Result<Puller> {
        let (tx, rx) = bounded(QUEUE_CHUNKS);
        let stop = Arc::new(AtomicBool::new(false));
        let waker = WakerSlot::default();
        let inlet = Inlet(inlet);
        let thread = {
            let (stop, waker) = (stop.clone(), waker.clone());
            std::thread::Builder::new().name(format!("lsl-{name}")).spawn(move || {
                let inlet = inlet;
                pull_until_stopped(&api, inlet.0, channels, chunk.max(1), &tx, &stop, &waker);
                // SAFETY: the inlet is destroyed once, by its only user.
                unsafe { (api.lsl_destroy_inlet)(inlet.0) };
            })?
        };
        Ok(Puller {
            rx,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread (within one pull time-out) and waits for it; the inlet is destroyed.
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pull_until_stopped(
    api: &Api,
    inlet: Handle,
    channels: usize,
    chunk: usize,
    tx: &Sender<Pulled>,
    stop: &AtomicBool,
    waker: &WakerSlot,
) {
    let mut first = vec![0f32; channels];
    while !stop.load(Ordering::SeqCst) {
        let mut ec = 0;
        // SAFETY: `first` holds one sample of `channels` values.
        let t = unsafe { (api.lsl_pull_sample_f)(inlet, first.as_mut_ptr(), channels as i32, PULL_TIMEOUT_S, &mut ec) };
        if ec == LSL_LOST {
            hand_over(Pulled::Lost, tx, stop, waker);
            return;
        }
        if t == 0.0 {
            continue; // nothing within the time-out
        }
        let mut data = vec![0f32; chunk * channels];
        let mut stamps = vec![0f64; chunk];
        data[..channels].copy_from_slice(&first);
        stamps[0] = t;
        let mut rows = 1;
        if chunk > 1 {
            // SAFETY: the buffers past the first sample hold chunk − 1 samples and stamps.
            let got = unsafe {
                (api.lsl_pull_chunk_f)(
                    inlet,
                    data[channels..].as_mut_ptr(),
                    stamps[1..].as_mut_ptr(),
                    ((chunk - 1) * channels) as u64,
                    (chunk - 1) as u64,
                    0.0,
                    &mut ec,
                )
            } as usize;
            rows += got / channels.max(1);
        }
        data.truncate(rows * channels);
        stamps.truncate(rows);
        if !hand_over(Pulled::Chunk { data, stamps }, tx, stop, waker) {
            return;
        }
        if ec == LSL_LOST {
            hand_over(Pulled::Lost, tx, stop, waker);
            return;
        }
    }
}

/// Queues `item` (waiting while the queue is full, unless told to stop) and wakes the worker;
/// false when the reader is gone or stopping.
fn hand_over(mut item: Pulled, tx: &Sender<Pulled>, stop: &AtomicBool, waker: &WakerSlot) -> bool {
    loop {
        match tx.send_timeout(item, Duration::from_secs_f64(PULL_TIMEOUT_S)) {
            Ok(()) => {
                waker.wake();
                return true;
            }
            Err(SendTimeoutError::Timeout(back)) if !stop.load(Ordering::SeqCst) => item = back,
            Err(_) => return false,
        }
    }
}
