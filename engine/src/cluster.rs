//! Connecting the processes of a multi-process run before timely starts.
//!
//! Timely's own start-up waits forever for a peer that never comes and panics on peers started
//! with other settings. Instead, every pair of processes connects here (the higher index dials
//! the lower, as timely does), within a time-out, and both sides exchange a [`Hello`]: the
//! binary version, the pipeline's fingerprint, the worker count and the process count. Any
//! difference refuses the run on both sides with a message naming the peer and what differs.
//! The connected sockets are then handed to timely.
//!
//! Processes that listen beyond loopback need a shared cluster token (`--cluster-token`):
//! before any hello, the dialling side and the accepting side each prove they know it without
//! sending it (HMAC-SHA256 over a fresh nonce of each side), so a stranger can neither join
//! nor learn the token; the local launcher gives its processes a random one.
//!
//! Once running, a peer that dies makes timely's network threads panic; [`watch_peers`]
//! installs a panic hook that turns this into a clear error naming the lost process, removes
//! this process's temporary output files, and exits with status 1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// What a process tells each peer about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The binary's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Fingerprint of the pipeline (name, nodes and their configuration).
    pub pipeline: String,
    /// Worker threads per process.
    pub workers: usize,
    /// Processes in the run.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// With checkpoints: the checkpoint this process resumes from (0: from the start); every
    /// process must resume from the same one.
    #[serde(default)]
    pub resumes_from: Option<u64>,
    /// Whether this process has a live view that gathers every process's picture (only
    /// process 0's counts: its followers then send theirs to it).
    #[serde(default)]
    pub watched: bool,
}

impl Hello {
    /// Why `peer` cannot run with this process; `None` when it can.
    pub fn mismatch(&self, peer: &Hello) -> Option<String> {
        if peer.version != self.version {
            return Some(format!("it runs neurostream {}, this process {}", peer.version, self.version));
        }
        if peer.processes != self.processes {
            return Some(format!(
                "its hostfile lists {} processes, this one {}",
                peer.processes, self.processes
            ));
        }
        if peer.workers != self.workers {
            return Some(format!(
                "it runs {} workers per process, this process {} (give every process the same -w)",
                peer.workers, self.workers
            ));
        }
        if peer.pipeline != self.pipeline {
            return Some("it runs a different pipeline (or the same file with other settings)".into());
        }
        if peer.resumes_from != self.resumes_from {
            let says = |r: Option<u64>| match r {
                None => "runs without checkpoints".to_string(),
                Some(0) => "starts its checkpoints from the beginning".to_string(),
                Some(n) => format!("resumes from checkpoint {n}"),
            };
            return Some(format!(
                "it {}, this process {}: every process must use the same checkpoint directory (shared across machines)",
                says(peer.resumes_from),
                says(self.resumes_from)
            ));
        }
        None
    }
}

const MAGIC: &[u8; 8] = b"NSCLUST1";
/// The greeting of a dialler that proves it knows the cluster token.
const MAGIC_TOKEN: &[u8; 8] = b"NSCLUSTA";

/// The environment variable a process reads its cluster token from when `--cluster-token` is
/// not given (it stays out of the process list).
pub const TOKEN_ENV: &str = "NEUROSTREAM_CLUSTER_TOKEN";

/// A fresh random token (64 hex digits), for a local cluster's processes.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 under `token` of `role` and the two nonces.
fn token_mac(token: &str, role: u8, first: &[u8; 32], second: &[u8; 32]) -> hmac::Hmac<sha2::Sha256> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(&[role]);
    mac.update(first);
    mac.update(second);
    mac
}

/// The dialling side's proof of the token (nothing to do without one).
fn prove_token_dialling(stream: &mut TcpStream, token: Option<&str>) -> std::result::Result<(), String> {
    use hmac::Mac;
    let Some(token) = token else { return Ok(()) };
    let mine: [u8; 32] = rand::random();
    stream.write_all(MAGIC_TOKEN).map_err(|e| e.to_string())?;
    stream.write_all(&mine).map_err(|e| e.to_string())?;
    let mut theirs = [0u8; 32];
    let mut proof = [0u8; 32];
    stream.read_exact(&mut theirs).map_err(|e| e.to_string())?;
    stream.read_exact(&mut proof).map_err(|e| e.to_string())?;
    token_mac(token, b'a', &mine, &theirs)
        .verify_slice(&proof)
        .map_err(|_| "it does not know the cluster token (start every process with the same --cluster-token)".to_string())?;
    let answer = token_mac(token, b'd', &theirs, &mine).finalize().into_bytes();
    stream.write_all(&answer).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())
}

/// The accepting side's check of a dialler's proof, and its own (nothing to do without a token).
fn check_token_accepting(stream: &mut TcpStream, token: Option<&str>) -> std::result::Result<(), String> {
    use hmac::Mac;
    let Some(token) = token else { return Ok(()) };
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).map_err(|e| e.to_string())?;
    if &magic != MAGIC_TOKEN {
        return Err("it sent no cluster token (start every process with the same --cluster-token)".into());
    }
    let mut theirs = [0u8; 32];
    stream.read_exact(&mut theirs).map_err(|e| e.to_string())?;
    let mine: [u8; 32] = rand::random();
    let proof = token_mac(token, b'a', &theirs, &mine).finalize().into_bytes();
    stream.write_all(&mine).map_err(|e| e.to_string())?;
    stream.write_all(&proof).map_err(|e| e.to_string())?;
    stream.flush().map_err(|e| e.to_string())?;
    let mut answer = [0u8; 32];
    stream.read_exact(&mut answer).map_err(|e| e.to_string())?;
    token_mac(token, b'd', &mine, &theirs)
        .verify_slice(&answer)
        .map_err(|_| "it does not know the cluster token".to_string())
}
/// Largest hello accepted from a peer, bytes.
const MAX_HELLO: u32 = 4096;

fn write_hello(stream: &mut TcpStream, hello: &Hello) -> std::io::Result<()> {
    let body = serde_json::to_vec(hello).expect("hellos serialize");
    stream.write_all(MAGIC)?;
    stream.write_all(&(body.len() as u32).to_le_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

/// Reads exactly one hello (no read-ahead: timely's bytes may follow on the same socket).
fn read_hello(stream: &mut TcpStream) -> std::result::Result<Hello, String> {
    let mut magic = [0u8; 8];
    stream.read_exact(&mut magic).map_err(|e| e.to_string())?;
    if &magic != MAGIC {
        return Err("it is not a neurostream process of this protocol (wrong greeting)".into());
    }
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).map_err(|e| e.to_string())?;
    let len = u32::from_le_bytes(len);
    if len > MAX_HELLO {
        return Err(format!("its greeting of {len} bytes exceeds {MAX_HELLO}"));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| format!("its greeting does not parse: {e}"))
}

/// Longest an accepted connection may take to send its hello: a stranger that connects and
/// stays silent holds the start-up back this long at most.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Which side of a fresh connection this process is, with the cluster token if any.
#[derive(Clone, Copy)]
enum Side<'a> {
    Dialling(Option<&'a str>),
    Accepting(Option<&'a str>),
}

/// Proves the token (when the cluster has one) and exchanges hellos on a fresh connection,
/// within `deadline`. An error here means the other end does not know the token, does not
/// speak the protocol, or went away: it is not a usable peer.
fn exchange_hellos(stream: &mut TcpStream, me: &Hello, side: Side, deadline: Instant) -> std::result::Result<Hello, String> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
    stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
    match side {
        Side::Dialling(token) => prove_token_dialling(stream, token)?,
        Side::Accepting(token) => check_token_accepting(stream, token)?,
    }
    write_hello(stream, me).map_err(|e| e.to_string())?;
    let peer = read_hello(stream)?;
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    stream.set_write_timeout(None).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(peer)
}

/// Checks a peer's hello; `expected` is its index when known (we dialled it). An error here is
/// a neurostream process that cannot run with this one: the run is refused.
fn check_peer(me: &Hello, peer: &Hello, expected: Option<usize>) -> std::result::Result<(), String> {
    if let Some(i) = expected.filter(|&i| i != peer.process) {
        return Err(format!("process {} answered at the address of process {i}", peer.process));
    }
    if peer.process >= me.processes || peer.process == me.process {
        return Err(format!("it claims process index {}", peer.process));
    }
    if let Some(why) = me.mismatch(peer) {
        return Err(format!("process {}: {why}", peer.process));
    }
    Ok(())
}

/// The connections of one process to its peers.
#[derive(Debug)]
pub struct Connected {
    /// One socket per process (`None` for this one), in process order, as timely's networking
    /// expects.
    pub sockets: Vec<Option<TcpStream>>,
    /// What each peer said about itself (`None` for this one), in process order.
    pub peers: Vec<Option<Hello>>,
}

/// Connects this process (`me.process`) to every other process of `addresses` within
/// `timeout`, checking each peer's [`Hello`] and, with `token`, that it knows the token.
pub fn connect(addresses: &[String], me: &Hello, token: Option<&str>, timeout: Duration) -> Result<Connected> {
    let deadline = Instant::now() + timeout;
    let fail = |m: String| EngineError::Runtime(format!("cluster: process {}: {m}", me.process));
    let mut sockets: Vec<Option<TcpStream>> = (0..addresses.len()).map(|_| None).collect();
    let mut peers: Vec<Option<Hello>> = vec![None; addresses.len()];
    // Listen first, so lower processes never wait on us while we dial.
    let listener = match me.process + 1 < addresses.len() {
        true => {
            let l = TcpListener::bind(&addresses[me.process])
                .map_err(|e| fail(format!("cannot listen on {}: {e}", addresses[me.process])))?;
            l.set_nonblocking(true).map_err(|e| fail(e.to_string()))?;
            Some(l)
        }
        false => None,
    };
    for (i, address) in addresses.iter().enumerate().take(me.process) {
        let stream = loop {
            let last_error = match dial(address) {
                Ok(s) => break s,
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "process {i} at {address} did not answer within {} s ({last_error})",
                    timeout.as_secs_f64()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut stream = stream;
        let peer = exchange_hellos(&mut stream, me, Side::Dialling(token), deadline)
            .and_then(|peer| check_peer(me, &peer, Some(i)).map(|()| peer))
            .map_err(|m| fail(format!("refusing process {i} at {address}: {m}")))?;
        sockets[i] = Some(stream);
        peers[i] = Some(peer);
    }
    if let Some(listener) = listener {
        while sockets.iter().enumerate().skip(me.process + 1).any(|(_, s)| s.is_none()) {
            match listener.accept() {
                Ok((mut stream, from)) => {
                    stream.set_nonblocking(false).map_err(|e| fail(e.to_string()))?;
                    // Someone who does not speak the protocol (a port scanner, a peer killed
                    // half-way through its hello) is dropped, and the wait goes on.
                    let hello_deadline = deadline.min(Instant::now() + HELLO_TIMEOUT);
                    let peer = match exchange_hellos(&mut stream, me, Side::Accepting(token), hello_deadline) {
                        Ok(peer) => peer,
                        Err(m) => {
                            tracing::warn!(
                                "cluster: process {}: dropped a connection from {from} that is not a peer: {m}",
                                me.process
                            );
                            continue;
                        }
                    };
                    check_peer(me, &peer, None).map_err(|m| fail(format!("refusing the peer at {from}: {m}")))?;
                    if peer.process < me.process || sockets[peer.process].is_some() {
                        return Err(fail(format!(
                            "a second connection claims process {} (from {from})",
                            peer.process
                        )));
                    }
                    let i = peer.process;
                    sockets[i] = Some(stream);
                    peers[i] = Some(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<String> = sockets
                            .iter()
                            .enumerate()
                            .skip(me.process + 1)
                            .filter(|(_, s)| s.is_none())
                            .map(|(i, _)| format!("process {i} ({})", addresses[i]))
                            .collect();
                        return Err(fail(format!(
                            "{} never connected within {} s (--peer-timeout)",
                            missing.join(", "),
                            timeout.as_secs_f64()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(fail(format!("accept failed: {e}"))),
            }
        }
    }
    Ok(Connected { sockets, peers })
}

fn dial(address: &str) -> std::result::Result<TcpStream, String> {
    let addrs: Vec<_> = address.to_socket_addrs().map_err(|e| e.to_string())?.collect();
    let mut last = String::from("no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// What the panic hook needs to report a lost peer and clean up.
struct Watch {
    addresses: Vec<String>,
    cleanup: Box<dyn Fn() + Send + Sync>,
}

static WATCH: Mutex<Option<Watch>> = Mutex::new(None);

/// Makes a lost peer fail this process cleanly while a multi-process run is under way:
/// when a timely network thread panics (its connection to a peer broke), the error names the
/// peer, `cleanup` removes this process's temporary files, and the process exits with status 1.
/// Returns a guard; the watch ends when it is dropped.
pub fn watch_peers(addresses: Vec<String>, cleanup: Box<dyn Fn() + Send + Sync>) -> PeerWatch {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let peer = thread
                .name()
                .and_then(|n| n.strip_prefix("timely:send-").or_else(|| n.strip_prefix("timely:recv-")))
                .and_then(|i| i.parse::<usize>().ok());
            let watch = WATCH.lock().unwrap_or_else(|p| p.into_inner());
            if let (Some(peer), Some(w)) = (peer, watch.as_ref()) {
                let address = w.addresses.get(peer).map(String::as_str).unwrap_or("?");
                let cause = crate::error::panic_message(info.payload());
                eprintln!(
                    "error: cluster: lost the connection to process {peer} at {address} ({cause}); it died or the network failed. \
                     This run fails: nothing of it is marked complete; rerun every process"
                );
                (w.cleanup)();
                std::process::exit(1);
            }
            drop(watch);
            previous(info);
        }));
    });
    *WATCH.lock().unwrap_or_else(|p| p.into_inner()) = Some(Watch { addresses, cleanup });
    PeerWatch
}

/// Ends the watch of [`watch_peers`] when dropped.
pub struct PeerWatch;

impl Drop for PeerWatch {
    fn drop(&mut self) {
        *WATCH.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(process: usize, workers: usize, pipeline: &str) -> Hello {
        Hello {
            version: "1".into(),
            pipeline: pipeline.into(),
            workers,
            processes: 2,
            process,
            resumes_from: None,
            watched: process == 0,
        }
    }

    fn free_port() -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[test]
    fn peers_with_the_same_settings_connect() {
        let addrs = vec![free_port(), free_port()];
        let a2 = addrs.clone();
        let p1 = std::thread::spawn(move || connect(&a2, &hello(1, 2, "p"), None, Duration::from_secs(10)));
        let c0 = connect(&addrs, &hello(0, 2, "p"), None, Duration::from_secs(10)).unwrap();
        assert!(c0.sockets[0].is_none() && c0.sockets[1].is_some());
        let c1 = p1.join().unwrap().unwrap();
        assert_eq!(c1.sockets.len(), 2);
        // Each side knows what the other said: here, whether process 0 watches the run.
        assert_eq!(c1.peers[0].as_ref().map(|h| h.watched), Some(true));
        assert_eq!(c0.peers[1].as_ref().map(|h| (h.process, h.watched)), Some((1, false)));
        assert!(c0.peers[0].is_none());
    }

    #[test]
    fn other_worker_counts_or_pipelines_are_refused_on_both_sides() {
        for (workers, pipeline, why) in [(3, "p", "workers per process"), (2, "q", "different pipeline")] {
            let addrs = vec![free_port(), free_port()];
            let a2 = addrs.clone();
            let p1 = std::thread::spawn(move || connect(&a2, &hello(1, workers, pipeline), None, Duration::from_secs(10)));
            let e0 = connect(&addrs, &hello(0, 2, "p"), None, Duration::from_secs(10))
                .unwrap_err()
                .to_string();
            let e1 = p1.join().unwrap().unwrap_err().to_string();
            assert!(e0.contains(why) && e0.contains("process 1"), "{e0}");
            assert!(e1.contains(why) && e1.contains("process 0"), "{e1}");
        }
    }

    /// A process that would resume from another checkpoint than its peers (a checkpoint
    /// directory that is not shared) is refused on both sides before any data moves.
    #[test]
    fn peers_resuming_from_different_checkpoints_are_refused_on_both_sides() {
        let addrs = vec![free_port(), free_port()];
        let a2 = addrs.clone();
        let p1 = std::thread::spawn(move || {
            let h = Hello {
                resumes_from: Some(0),
                ..hello(1, 2, "p")
            };
            connect(&a2, &h, None, Duration::from_secs(10))
        });
        let h0 = Hello {
            resumes_from: Some(7),
            ..hello(0, 2, "p")
        };
        let e0 = connect(&addrs, &h0, None, Duration::from_secs(10)).unwrap_err().to_string();
        let e1 = p1.join().unwrap().unwrap_err().to_string();
        assert!(
            e0.contains("starts its checkpoints from the beginning") && e0.contains("resumes from checkpoint 7"),
            "{e0}"
        );
        assert!(e0.contains("same checkpoint directory"), "{e0}");
        assert!(e1.contains("resumes from checkpoint 7") && e1.contains("process 0"), "{e1}");
    }

    /// Strangers on the listening port (one that sends garbage, one that hangs up at once, one
    /// that sends half a hello and dies) are dropped; the real peer still connects.
    #[test]
    fn strangers_on_the_port_are_dropped_and_the_peer_still_connects() {
        let addrs = vec![free_port(), free_port()];
        let a0 = addrs.clone();
        let p0 = std::thread::spawn(move || connect(&a0, &hello(0, 2, "p"), None, Duration::from_secs(20)));
        let dial_when_up = |address: &str| loop {
            if let Ok(s) = TcpStream::connect(address) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut garbage = dial_when_up(&addrs[0]);
        garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        drop(dial_when_up(&addrs[0]));
        let mut half = dial_when_up(&addrs[0]);
        half.write_all(MAGIC).unwrap();
        half.write_all(&100u32.to_le_bytes()).unwrap();
        drop(half);
        let c1 = connect(&addrs, &hello(1, 2, "p"), None, Duration::from_secs(20)).unwrap();
        assert!(c1.sockets[0].is_some());
        let c0 = p0.join().unwrap().unwrap();
        assert_eq!(c0.peers[1].as_ref().map(|h| h.process), Some(1));
        drop(garbage);
    }

    /// With a cluster token: peers that know it connect; a peer with another token is refused
    /// with a clear error (and never learns the token); a stranger that speaks the plain
    /// protocol is dropped before process 0 says anything about itself.
    #[test]
    fn a_cluster_token_keeps_strangers_and_other_tokens_out() {
        let addrs = vec![free_port(), free_port()];
        let a2 = addrs.clone();
        let p1 = std::thread::spawn(move || connect(&a2, &hello(1, 2, "p"), Some("s3cret"), Duration::from_secs(10)));
        let c0 = connect(&addrs, &hello(0, 2, "p"), Some("s3cret"), Duration::from_secs(10)).unwrap();
        assert_eq!(c0.peers[1].as_ref().map(|h| h.process), Some(1));
        assert!(p1.join().unwrap().unwrap().sockets[0].is_some());

        let addrs = vec![free_port(), free_port()];
        let a0 = addrs.clone();
        let p0 = std::thread::spawn(move || connect(&a0, &hello(0, 2, "p"), Some("right"), Duration::from_secs(3)));
        // A stranger speaking the plain protocol: dropped, and it reads nothing back.
        let mut stranger = loop {
            if let Ok(s) = TcpStream::connect(&addrs[0]) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        write_hello(&mut stranger, &hello(1, 2, "p")).unwrap();
        stranger.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        let _ = stranger.read_to_end(&mut got);
        assert!(got.is_empty(), "a stranger was told {} bytes", got.len());
        // A process with another token fails at once, naming the token.
        let e1 = connect(&addrs, &hello(1, 2, "p"), Some("wrong"), Duration::from_secs(3))
            .unwrap_err()
            .to_string();
        assert!(e1.contains("cluster token") && e1.contains("process 0"), "{e1}");
        let e0 = p0.join().unwrap().unwrap_err().to_string();
        assert!(e0.contains("never connected"), "{e0}");
    }

    #[test]
    fn addresses_beyond_loopback_need_a_token() {
        let config = |addresses: &[&str], token: Option<&str>| crate::runtime::ClusterConfig {
            process: 0,
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            peer_timeout: Duration::from_secs(1),
            token: token.map(str::to_string),
        };
        assert!(config(&["127.0.0.1:7000", "localhost:7001", "[::1]:7002"], None)
            .check_token()
            .is_ok());
        let e = config(&["127.0.0.1:7000", "10.0.0.2:7001"], None)
            .check_token()
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0.2:7001") && e.contains("--cluster-token"), "{e}");
        assert!(config(&["10.0.0.1:7000", "node2:7001"], Some("")).check_token().is_err());
        assert!(config(&["10.0.0.1:7000", "node2:7001"], Some("k")).check_token().is_ok());
    }

    #[test]
    fn a_peer_that_never_comes_fails_after_the_timeout_naming_it() {
        let addrs = vec![free_port(), free_port()];
        let started = Instant::now();
        let e = connect(&addrs, &hello(0, 2, "p"), None, Duration::from_millis(500))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("process 1") && e.contains(&addrs[1]) && e.contains("never connected"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = connect(&addrs, &hello(1, 2, "p"), None, Duration::from_millis(500))
            .unwrap_err()
            .to_string();
        assert!(e.contains("process 0") && e.contains("did not answer"), "{e}");
    }
}
