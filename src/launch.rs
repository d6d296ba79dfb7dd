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
    let token = neurostream_engine::cluster::random_token();
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
        // The processes prove to each other they were started here (see `cluster`).
        cmd.env(neurostream_engine::cluster::TOKEN_ENV, &token);
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
    let mut failures: Vec<(usize, std::process::ExitStatus)> = Vec::new();
    while !children.is_empty() {
        let Some((i, status)) = next_ended(&mut children)? else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if status.success() || !failures.is_empty() {
            continue;
        }
        failures.push((i, status));
        // A peer's death makes the survivors fail too, often first: give them a moment to
        // end on their own, so the report can name the process that died rather than the
        // one that noticed.
        let grace = Instant::now() + FAILURE_GRACE;
        while !children.is_empty() && Instant::now() < grace {
            match next_ended(&mut children)? {
                Some((j, s)) if !s.success() => failures.push((j, s)),
                Some(_) => {}
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if !children.is_empty() {
            tracing::error!("{}; stopping the others", describe(&failures, launch.processes));
            stop(&mut children);
        }
    }
    for f in forwarders {
        let _ = f.join();
    }
    match failures.is_empty() {
        true => Ok(()),
        false => bail!("{}; the other processes were stopped", describe(&failures, launch.processes)),
    }
}

/// How long the launcher waits, after a process fails, for the others to end on their own.
const FAILURE_GRACE: Duration = Duration::from_millis(1500);

/// Removes and returns a child that has ended, if any.
fn next_ended(children: &mut Vec<(usize, Child)>) -> anyhow::Result<Option<(usize, std::process::ExitStatus)>> {
    for k in 0..children.len() {
        if let Some(status) = children[k].1.try_wait().context("waiting for a process")? {
            let (i, _) = children.remove(k);
            return Ok(Some((i, status)));
        }
    }
    Ok(None)
}

/// The failed processes, a process killed by a signal first (the others most likely failed
/// because it died): `process 1 of 2 failed (signal: 9 (SIGKILL)), then process 0 (exit status: 1)`.
fn describe(failures: &[(usize, std::process::ExitStatus)], processes: usize) -> String {
    use std::os::unix::process::ExitStatusExt;
    let mut ordered = failures.to_vec();
    ordered.sort_by_key(|(_, s)| s.signal().is_none());
    let mut text = format!("process {} of {processes} failed ({})", ordered[0].0, ordered[0].1);
    for (i, s) in &ordered[1..] {
        text.push_str(&format!(", then process {i} ({s})"));
    }
    text
}
