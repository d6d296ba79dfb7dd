//! The `array` source: `.npy` and `.safetensors` activations (f32, f16, bf16; 2-D and 3-D) read
//! through a pipeline into Parquet and compared with numpy; damaged or ambiguous files are clear errors.

mod common;

use common::{python, run_err, run_ok, run_python};

fn pipeline(source_keys: &str) -> String {
    format!(
        "[sources.acts]\nkind = \"array\"\n{source_keys}\nbatch_rows = 64\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"acts\"\npath = \"out.parquet\"\n"
    )
}

#[test]
fn arrays_read_exactly_in_every_dtype_and_shape() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let at = |n: &str| d.join(n).to_string_lossy().to_string();
    run_python(&py, "arrays.py", &["write", &at("")]);
    let cases: [(&str, &[&str]); 3] = [
        ("path = \"a.npy\"\nseq_len = 100", &["a.npy", "-", "100"]),
        ("path = \"b.npy\"", &["b.npy"]),
        ("path = \"c.safetensors\"\ntensor = \"resid\"", &["c.safetensors", "resid"]),
    ];
    for (keys, check) in cases {
        for workers in ["1", "2"] {
            std::fs::write(d.join("p.toml"), pipeline(keys)).unwrap();
            run_ok(d, &["run", "p.toml", "-w", workers, "--quiet"]);
            let mut args = vec!["check".to_string(), at("out.parquet"), at(check[0])];
            args.extend(check[1..].iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_python(&py, "arrays.py", &args);
        }
    }
    let errors = [
        (
            "path = \"c.safetensors\"",
            "holds several tensors (other, resid): choose one with `tensor`",
        ),
        (
            "path = \"c.safetensors\"\ntensor = \"x\"",
            "no tensor `x` (tensors: other, resid)",
        ),
        ("path = \"trunc.npy\"", "truncated: shape [300, 24] of F32 needs"),
        (
            "path = \"b.npy\"\nseq_len = 7",
            "already has sequences of 40 tokens; `seq_len` = 7 disagrees",
        ),
        (
            "path = \"c.safetensors\"\ntensor = \"other\"\nseq_len = 0",
            "`seq_len` must be at least 1",
        ),
        ("path = \"missing.npy\"", "missing.npy"),
    ];
    for (keys, expected) in errors {
        std::fs::write(d.join("p.toml"), pipeline(keys)).unwrap();
        let err = run_err(d, &["validate", "p.toml"]);
        assert!(err.contains(expected), "{keys}: {err}");
    }
}
