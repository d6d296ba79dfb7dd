//! Fuzz target: see `neurostream::fuzz_support::csv`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| neurostream::fuzz_support::csv(data));
