//! The Python package (python/): its pytest suite, run against the package `./scripts/test.sh`
//! builds into the test interpreter, with this build's CLI for the parity checks.

mod common;

use std::process::Command;

#[test]
fn python_package_pytest_suite() {
    let Some(python) = common::python() else { return };
    let probe = Command::new(&python)
        .args(["-c", "import neurostream._native, pytest"])
        .output()
        .expect("spawn python");
    assert!(
        probe.status.success(),
        "the Python package is not installed in {}: ./scripts/test.sh builds it (or `pip install ./python pytest`):\n{}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "python/tests"])
        .current_dir(repo)
        .env("NEUROSTREAM_BIN", env!("CARGO_BIN_EXE_neurostream"))
        .output()
        .expect("spawn pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "the Python package's tests failed:\n{text}");
}
