//! `channel`: in-process subscribers for Rust programs that embed the engine.
//!
//! A program calls [`subscribe`]`("NAME", capacity, policy)` before running a pipeline whose
//! `channel` sink is called `NAME` (key `name`, default the sink's own name), then receives the
//! sink's batches from the returned [`Subscription`] (a bounded crossbeam channel) while the run
//! goes. Each subscriber has its own buffer of `capacity` batches and its own policy when that
//! buffer is full: [`SlowPolicy::DropOldest`] discards the oldest buffered batch (counted in
//! [`Subscription::dropped`]) or [`SlowPolicy::Disconnect`] cuts the subscriber off (its
//! receiver drains what it has, then reports disconnection). A slow subscriber never blocks the
//! pipeline or the others. When the run ends, the channel closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crossbeam_channel::Receiver;
use neurostream_engine::{Batch, NodeConfig, NodeContext, Placement, Result, Schema, Sink, SinkKind, SinkWriter, WorkerPos};
use serde::{Deserialize, Serialize};

use crate::live::Hub;
pub use crate::live::SlowPolicy;

/// Hubs of the `channel` sinks, by name: subscribers register before the run.
fn hubs() -> &'static Mutex<HashMap<String, Arc<Hub<Batch>>>> {
    static HUBS: OnceLock<Mutex<HashMap<String, Arc<Hub<Batch>>>>> = OnceLock::new();
    HUBS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// One subscriber's end: the batches of a `channel` sink, in order, minus any dropped.
pub struct Subscription {
    /// The batches; disconnected when the run ends (or the policy cut this subscriber off).
    pub receiver: Receiver<Batch>,
    dropped: Arc<AtomicU64>,
    disconnected: Arc<AtomicBool>,
    _presence: crate::live::Presence,
}

impl Subscription {
    /// Batches dropped for this subscriber because its buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// True when the policy disconnected this subscriber (it was too slow).
    pub fn was_disconnected(&self) -> bool {
        self.disconnected.load(Ordering::Relaxed)
    }
}

/// Subscribes to the `channel` sink called `name` with a buffer of `capacity` batches (at least
/// 1). Subscribe before the run starts; the subscription receives from its first batch on.
pub fn subscribe(name: &str, capacity: usize, policy: SlowPolicy) -> Subscription {
    let hub = hubs().lock().unwrap().entry(name.to_string()).or_default().clone();
    let n = hub.served.load(Ordering::Relaxed);
    let end = hub.add(&format!("#{n}"), name, policy, capacity);
    Subscription {
        receiver: end.rx,
        dropped: end.dropped,
        disconnected: end.cut_off,
        _presence: end.presence,
    }
}

/// Configuration of a `channel` sink.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelSinkConfig {
    /// The name subscribers use (default: the sink's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl NodeConfig for ChannelSinkConfig {
    const KIND: &'static str = "channel";
}

/// The `channel` sink kind.
pub struct ChannelSinkKind;

impl SinkKind for ChannelSinkKind {
    type Config = ChannelSinkConfig;

    fn describe(&self) -> &'static str {
        "in-process subscribers of an embedding Rust program (bounded channels, per-subscriber slow policy)"
    }
    fn build(&self, cfg: ChannelSinkConfig, ctx: &NodeContext, _input: &Arc<Schema>) -> Result<Arc<dyn Sink>> {
        Ok(Arc::new(ChannelSink {
            name: cfg.name.unwrap_or_else(|| ctx.name.to_string()),
        }))
    }
}

struct ChannelSink {
    name: String,
}

impl Sink for ChannelSink {
    fn placement(&self) -> Placement {
        Placement::Single
    }
    fn open(&self, _worker: WorkerPos) -> Result<Box<dyn SinkWriter>> {
        // The subscribers registered so far are this run's; later ones wait for the next run.
        let hub = hubs().lock().unwrap().remove(&self.name).unwrap_or_default();
        Ok(Box::new(ChannelWriter {
            name: self.name.clone(),
            hub,
            batches: 0,
        }))
    }
}

struct ChannelWriter {
    name: String,
    hub: Arc<Hub<Batch>>,
    batches: u64,
}

impl SinkWriter for ChannelWriter {
    fn write(&mut self, batch: &Batch) -> Result<()> {
        self.batches += 1;
        self.hub.publish(&self.name, batch.clone(), &self.name);
        Ok(())
    }

    fn finish(self: Box<Self>, _failure: Option<&str>) -> Result<Vec<String>> {
        let connected = self.hub.len();
        self.hub.close_all();
        Ok(vec![format!(
            "channel {}: {} batches to {connected} subscriber(s) still connected, {} dropped for slow ones",
            self.name,
            self.batches,
            self.hub.dropped.load(Ordering::Relaxed)
        )])
    }
}
