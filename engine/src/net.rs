//! Small helpers shared by the network sources and sinks.

use std::net::SocketAddr;
use std::path::Path;

use crate::error::{EngineError, Result};

/// Writes `addr` (`IP:PORT`) to `path` atomically (temporary file, then rename), so a process
/// waiting for the file never reads a partial address. Used with port 0 (a free port).
pub fn write_address_file(path: &Path, addr: SocketAddr) -> Result<()> {
    crate::files::write_atomic(path, addr.to_string().as_bytes()).map_err(|e| EngineError::Output {
        path: path.to_path_buf(),
        message: format!("cannot write the listening address: {e}"),
    })
}

/// Checks a server's bind address: anything but loopback needs a token.
pub fn check_bind(listen: &SocketAddr, token: Option<&str>) -> std::result::Result<(), String> {
    if !listen.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(format!(
            "`listen` {listen} is not a loopback address: set `token` (a shared secret clients present) to serve other machines"
        ));
    }
    Ok(())
}

/// Whether `presented` matches the server's token (always true when the server has none);
/// compares in constant time.
pub fn token_ok(expected: Option<&str>, presented: Option<&str>) -> bool {
    let Some(expected) = expected else { return true };
    let presented = presented.unwrap_or("");
    if presented.len() != expected.len() {
        return false;
    }
    presented.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
