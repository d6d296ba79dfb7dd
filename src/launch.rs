//! `neurostream run PIPELINE --processes N`: a cluster run of N local processes from one
//! command. The launcher picks N free loopback ports, writes them to a hostfile, starts this
//! binary once per process (`--hostfile`, `--process i`), and waits: when one process fails,
//! the others are stopped and the launcher exits with that process's reason.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Arguments every process gets besides its hostfile and index.
pub struct Launch<'a> {
    /// The pipeline file.
    pub file: &'a Path,
    /// Number of processes.
    pub processes: usize,
    /// Other arguments of `run` to pass to every process (`-w 2`, `--device cpu`, ...).
    pub shared: Vec<String>,
    /// Arguments only process 0 gets (`--metrics ADDR`: one endpoint).
    pub first_only: Vec<String>,
}

/// Free TCP ports on 127.0.0.1, one per process (bound, then released for the processes).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("finding free loopback ports for the processes")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<_>>()
        .context("reading the ports")
}

/// Copies `from` to this process's stdout or stderr line by line, each line prefixed with the
/// process it came from, so the processes' reports stay readable side by side.
fn forward(from: impl std::io::Read + Send + 'static, prefix: String, to_stderr: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{prefix}{line}");
            }
        }
    })
}

fn stop(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter_mut() {
        // SIGTERM first, so each removes its temporary files; SIGKILL after a grace period.
        let _ = Command::new("kill").arg(c.id().to_string()).status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for (_, c) in children.iter_mut() {
        while Instant::now() < deadline {
            if matches!(c.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs the cluster; returns when every process has ended.
pub fn run(launch: Launch) -> anyhow::Result<()> {
    if launch.processes < 2 {
        bail!(
            "--processes {} without --hostfile: a local cluster needs at least 2",
            launch.processes
        );
    }
    let ports = free_ports(launch.processes)?;
    let dir = tempfile::tempdir().context("creating a directory for the hostfile")?;
    let hostfile = dir.path().join("hosts.txt");
    let lines: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    std::fs::write(&hostfile, lines.join("\n") + "\n").context("writing the hostfile")?;
    let exe = std::env::current_exe().context("locating this binary")?;
    tracing::info!(
        "starting {} processes on {} (hostfile {})",
        launch.processes,
        lines.join(", "),
        hostfile.display()
    );
    let mut children: Vec<(usize, Child)> = Vec::new();
    let mut forwarders = Vec::new();
    for i in 0..launch.processes {
        let mut cmd = Command::new(&exe);
        cmd.arg("run")
            .arg(launch.file)
            .args(&launch.shared)
            .arg("--hostfile")
            .arg(&hostfile)
            .arg("--process")
            .arg(i.to_string())
            .arg("--processes")
            .arg(launch.processes.to_string());
        if i == 0 {
            cmd.args(&launch.first_only);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        match cmd.spawn() {
            Ok(mut c) => {
                let prefix = format!("[process {i}] ");
                if let Some(out) = c.stdout.take() {
                    forwarders.push(forward(out, prefix.clone(), false));
                }
                if let Some(err) = c.stderr.take() {
                    forwarders.push(forward(err, prefix, true));
                }
                children.push((i, c));
            }
            Err(e) => {
                stop(&mut children);
                bail!("could not start process {i}: {e}");
            }
        }
    }
    // Wait for all; the first failure stops the others.
    let mut failure: Option<String> = None;
    while !children.is_empty() {
        let mut ended = None;
        for (k, (i, c)) in children.iter_mut().enumerate() {
            if let Some(status) = c.try_wait().context("waiting for a process")? {
                ended = Some((k, *i, status));
                break;
            }
        }
        match ended {
            None => std::thread::sleep(Duration::from_millis(50)),
            Some((k, i, status)) => {
                children.remove(k);
                if !status.success() && failure.is_none() {
                    failure = Some(format!("process {i} of {} failed ({status})", launch.processes));
                    if !children.is_empty() {
                        tracing::error!("process {i} failed ({status}); stopping the others");
                        stop(&mut children);
                    }
                }
            }
        }
    }
    for f in forwarders {
        let _ = f.join();
    }
    match failure {
        Some(f) => bail!("{f}; the other processes were stopped"),
        None => Ok(()),
    }
}
