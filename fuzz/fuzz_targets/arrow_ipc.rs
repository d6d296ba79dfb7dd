//! Fuzz target: see `neurostream::fuzz_support::arrow_ipc`.
//!
//! The ingest catches panics of arrow-rs's IPC reader on malformed messages and turns them into
//! errors, so libfuzzer-sys's abort-on-any-panic hook is replaced by one that only prints: a
//! panic the ingest does not catch still reaches libfuzzer-sys's `catch_unwind` and aborts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| std::panic::set_hook(Box::new(|info| eprintln!("{info}"))));
    neurostream::fuzz_support::arrow_ipc(data)
});
