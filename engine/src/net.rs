//! Small helpers shared by the network sources and sinks.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use crate::error::{EngineError, Result};

/// Writes `addr` (`IP:PORT`) to `path` atomically (temporary file, then rename), so a process
/// waiting for the file never reads a partial address. Used with port 0 (a free port).
pub fn write_address_file(path: &Path, addr: SocketAddr) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::File::create(&tmp)?.write_all(addr.to_string().as_bytes())?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| EngineError::Output {
        path: path.to_path_buf(),
        message: format!("cannot write the listening address: {e}"),
    })
}
