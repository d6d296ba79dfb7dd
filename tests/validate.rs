//! `validate` rejects each kind of bad pipeline, every problem at once, each with its location.

mod common;

use neurostream::{registry, PipelineBuilder, PipelineSpec};

fn problems(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), toml).unwrap();
    let spec = match PipelineSpec::from_file(&dir.path().join("p.toml")) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    match spec.compile(&registry()) {
        Ok(_) => panic!("pipeline should be invalid:\n{toml}"),
        Err(e) => e.to_string().replace(&dir.path().display().to_string(), "DIR"),
    }
}

const SOURCE: &str = "[sources.eeg]\nkind = \"synthetic_eeg\"\nchannels = 32\n";

#[test]
fn unknown_operator_kind() {
    let p = problems(&format!(
        "{SOURCE}[operators.f]\nkind = \"bandpass_magic\"\ninput = \"eeg\"\n[sinks.o]\nkind = \"console\"\ninput = \"eeg\"\n"
    ));
    assert!(
        p.contains("DIR/p.toml:5:1: [operators.f] unknown operator kind `bandpass_magic` (known: "),
        "{p}"
    );
    assert!(p.contains("normalize") && p.contains("sae_encode"), "{p}");
}

#[test]
fn unknown_key_names_its_line() {
    let p = problems("[sources.eeg]\nkind = \"synthetic_eeg\"\nchanels = 32\n[sinks.o]\nkind = \"console\"\ninput = \"eeg\"\n");
    assert!(p.contains("DIR/p.toml:3:1: [sources.eeg] unknown field `chanels`"), "{p}");
}

#[test]
fn unknown_top_level_and_pipeline_keys() {
    let p = problems(&format!(
        "[pipeline]\nworkrs = 2\n[operator.x]\nkind = \"normalize\"\n{SOURCE}[sinks.o]\nkind = \"console\"\ninput = \"eeg\"\n"
    ));
    assert!(p.contains("unknown field `workrs`"), "{p}");
    assert!(p.contains("unknown top-level key `operator`"), "{p}");
}

#[test]
fn missing_and_dangling_inputs() {
    let p = problems(&format!(
        "{SOURCE}[operators.a]\nkind = \"normalize\"\nmethod = \"l2\"\n[operators.b]\nkind = \"normalize\"\nmethod = \"l2\"\ninput = \"nowhere\"\n[sinks.o]\nkind = \"console\"\ninput = \"eeg\"\n"
    ));
    assert!(p.contains("p.toml:4:1: [operators.a] missing key `input`"), "{p}");
    assert!(
        p.contains("p.toml:10:1: [operators.b] input `nowhere` is not a source or operator"),
        "{p}"
    );
}

#[test]
fn cycle() {
    let p = problems(&format!(
        "{SOURCE}[operators.a]\nkind = \"normalize\"\nmethod = \"l2\"\ninput = \"b\"\n[operators.b]\nkind = \"normalize\"\nmethod = \"l2\"\ninput = \"a\"\n[sinks.o]\nkind = \"console\"\ninput = \"b\"\n"
    ));
    assert!(p.contains("cycle among operators: [operators.a] -> [operators.b]"), "{p}");
}

#[test]
fn shape_mismatch_between_operator_and_input() {
    let p = problems(&format!(
        "{SOURCE}[operators.n]\nkind = \"normalize\"\nmethod = \"running_zscore\"\ninput = \"eeg\"\nchannels = 64\n[sinks.o]\nkind = \"console\"\ninput = \"n\"\n"
    ));
    assert!(
        p.contains("p.toml:8:1: [operators.n] shape mismatch: expects 64 channels (key `channels`) but its input has 32"),
        "{p}"
    );
}

#[test]
fn shape_mismatch_with_a_statistics_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stats.json"), r#"{"mean":[0,0,0],"std":[1,1,1]}"#).unwrap();
    let toml = format!(
        "{SOURCE}[operators.n]\nkind = \"normalize\"\nmethod = \"fixed\"\nstats = \"stats.json\"\ninput = \"eeg\"\n[sinks.o]\nkind = \"console\"\ninput = \"n\"\n"
    );
    std::fs::write(dir.path().join("p.toml"), toml).unwrap();
    let e = PipelineSpec::from_file(&dir.path().join("p.toml"))
        .unwrap()
        .compile(&registry())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("holds 3 channels but its input has 32"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let p = problems(
        "[sources.a]\nkind = \"synthetic_eeg\"\nbogus = 1\n[operators.x]\nkind = \"nope\"\ninput = \"a\"\n[sinks.s]\nkind = \"parquet\"\ninput = \"zzz\"\npath = \"o.parquet\"\n",
    );
    assert!(p.contains("unknown field `bogus`"), "{p}");
    assert!(p.contains("unknown operator kind `nope`"), "{p}");
    assert!(p.contains("input `zzz`"), "{p}");
}

#[test]
fn duplicate_names_no_sinks_and_syntax_errors() {
    let p =
        problems("[sources.a]\nkind = \"synthetic_eeg\"\n[operators.a]\nkind = \"normalize\"\nmethod = \"l2\"\ninput = \"a\"\n");
    assert!(p.contains("name `a` is already used by [sources.a]"), "{p}");
    assert!(p.contains("pipeline has no sinks"), "{p}");
    let p = problems("[sources.a]\nkind = \"synthetic_eeg\"\nchannels = = 3\n");
    assert!(p.contains("p.toml:3:12: "), "{p}");
}

#[test]
fn missing_parquet_input_is_reported_at_validation() {
    let p = problems(
        "[sources.a]\nkind = \"parquet\"\npath = \"nothing-here.parquet\"\n[sinks.o]\nkind = \"console\"\ninput = \"a\"\n",
    );
    assert!(
        p.contains("DIR/p.toml:3:1: [sources.a] `path` DIR/nothing-here.parquet does not exist"),
        "{p}"
    );
}

#[test]
fn cli_validate_exits_nonzero_with_the_problems() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[sources.a]\nkind = \"synthetic_eeg\"\nchannels = \"many\"\n",
    )
    .unwrap();
    let err = common::run_err(dir.path(), &["validate", "bad.toml"]);
    assert!(
        err.contains("bad.toml:3:1: [sources.a] key `channels`: invalid type: string \"many\", expected usize"),
        "{err}"
    );
    assert!(err.contains("pipeline has no sinks"), "{err}");
    let ok = common::run_ok(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")),
        &["validate", "examples/quickstart.toml"],
    );
    assert!(
        ok.contains("[operators.eeg_z] normalize <- eeg (signal, 8 channels at 256 Hz)"),
        "{ok}"
    );
}

#[test]
fn builder_makes_the_same_spec_as_a_file() {
    use neurostream::operators::normalize::NormalizeConfig;
    use neurostream::sinks::ParquetSinkConfig;
    use neurostream::sources::SyntheticEegConfig;
    let built = PipelineBuilder::new(".")
        .source(
            "eeg",
            &SyntheticEegConfig {
                channels: 4,
                ..Default::default()
            },
        )
        .unwrap()
        .operator("z", "eeg", &NormalizeConfig::running_zscore(128))
        .unwrap()
        .sink("out", "z", &ParquetSinkConfig::new("z.parquet"))
        .unwrap()
        .build();
    let compiled = built.compile(&registry()).unwrap();
    assert_eq!(
        compiled.describe(),
        vec![
            "[sources.eeg] synthetic_eeg (signal, 4 channels at 256 Hz)",
            "[operators.z] normalize <- eeg (signal, 4 channels at 256 Hz)",
            "[sinks.out] parquet <- z"
        ]
    );
}

#[test]
fn every_unknown_key_of_every_node_is_reported_at_its_line_with_suggestions() {
    let p = problems(
        "[source.psg]\nkind = \"synthetic_eeg\"\n\n[sources.eeg]\nkind = \"synthetic_eeg\"\nchanels = 4\nsecs = 2\n\n[operators.a]\nkind = \"normalize\"\ninput = \"eeg\"\nmethd = \"l2\"\n\n[operators.b]\nkind = \"normalise\"\ninput = \"eeg\"\n\n[operators.c]\nkind = \"butterworth\"\ninput = \"eeg\"\nordr = 4\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"a\"\npath = \"x.parquet\"\n",
    );
    for expected in [
        "DIR/p.toml:1:1: unknown top-level key `source`; did you mean `sources`?",
        "DIR/p.toml:6:1: [sources.eeg] unknown field `chanels`; did you mean `channels`?",
        "DIR/p.toml:7:1: [sources.eeg] unknown field `secs`",
        // Downstream of a source that failed: its keys are still checked.
        "DIR/p.toml:12:1: [operators.a] unknown field `methd`; did you mean `method`?",
        "DIR/p.toml:15:1: [operators.b] unknown operator kind `normalise`; did you mean `normalize`?",
        "DIR/p.toml:21:1: [operators.c] unknown field `ordr`; did you mean `order`?",
    ] {
        assert!(p.contains(expected), "missing `{expected}` in:\n{p}");
    }
    assert!(!p.contains("cycle"), "{p}");
    let pipeline = problems(
        "[pipeline]\nworkres = 2\n[sources.eeg]\nkind = \"synthetic_eeg\"\n[sinks.o]\nkind = \"console\"\ninput = \"eeg\"\n",
    );
    assert!(
        pipeline.contains("DIR/p.toml:2:1: [pipeline] unknown field `workres`") && pipeline.contains("did you mean `workers`?"),
        "{pipeline}"
    );
    let two = problems(
        "[pipeline]\nworkres = 2\n  devise = \"cpu\"\n[sources.eeg]\nkind = \"synthetic_eeg\"\n[sinks.o]\nkind = \"console\"\ninput = \"eeg\"\n",
    );
    assert!(two.contains("DIR/p.toml:2:1: [pipeline] unknown field `workres`"), "{two}");
    assert!(
        two.contains("DIR/p.toml:3:3: [pipeline] unknown field `devise`; did you mean `device`?"),
        "{two}"
    );
}

#[test]
fn a_single_cutoff_may_be_written_without_brackets() {
    let toml = format!(
        "{SOURCE}[operators.hp]\nkind = \"butterworth\"\nbtype = \"highpass\"\ncutoff = 0.5\ninput = \"eeg\"\n[sinks.o]\nkind = \"console\"\ninput = \"hp\"\n"
    );
    PipelineSpec::from_toml_str(&toml, ".")
        .unwrap()
        .compile(&registry())
        .unwrap_or_else(|e| panic!("cutoff = 0.5 must be accepted for a high-pass: {e}"));
    let p = problems(&toml.replace("cutoff = 0.5", "cutoff = \"half\""));
    assert!(p.contains("[operators.hp]") && p.contains("cutoff"), "{p}");
}

#[test]
fn normalized_signals_are_unitless() {
    let toml = format!(
        "{SOURCE}[operators.z]\nkind = \"normalize\"\nmethod = \"running_zscore\"\ninput = \"eeg\"\n[sinks.o]\nkind = \"console\"\ninput = \"z\"\n"
    );
    let compiled = PipelineSpec::from_toml_str(&toml, ".").unwrap().compile(&registry()).unwrap();
    let units = |name: &str| -> Vec<String> {
        let node = compiled.nodes.iter().find(|n| n.spec.name == name).unwrap();
        let schema = match &node.built {
            neurostream::spec::Built::Source(s) => s.schema(),
            neurostream::spec::Built::Operator(o) => o.output_schema(),
            _ => unreachable!(),
        };
        schema.channels.iter().map(|c| c.unit.clone()).collect()
    };
    assert!(units("eeg").iter().all(|u| u == "uV"), "{:?}", units("eeg"));
    assert!(
        units("z").iter().all(String::is_empty),
        "a z-score has no unit: {:?}",
        units("z")
    );
}

/// The case from the issue: a misspelt section, so the operator's input does not resolve,
/// two misspelt keys in that operator and one in the next: every problem at its key, no
/// false cycle.
#[test]
fn keys_of_operators_whose_input_does_not_resolve_are_still_checked_and_no_false_cycle() {
    let p = problems(
        "[source.psg]\nkind = \"synthetic_eeg\"\n\n[operators.f]\nkind = \"butterworth\"\ninput = \"psg\"\ncutof = 0.5\nordr = 4\n\n[operators.g]\nkind = \"reref\"\ninput = \"f\"\n  bogus = 1\n\n[sinks.out]\nkind = \"parquet\"\ninput = \"g\"\npath = \"o.parquet\"\n",
    );
    for expected in [
        "DIR/p.toml:1:1: unknown top-level key `source`; did you mean `sources`?",
        "DIR/p.toml:6:1: [operators.f] input `psg` is not a source or operator",
        "DIR/p.toml:7:1: [operators.f] unknown field `cutof`; did you mean `cutoff`?",
        "DIR/p.toml:8:1: [operators.f] unknown field `ordr`; did you mean `order`?",
        "DIR/p.toml:13:3: [operators.g] unknown field `bogus`",
    ] {
        assert!(p.contains(expected), "missing `{expected}` in:\n{p}");
    }
    assert!(!p.contains("cycle"), "{p}");
}

#[test]
fn a_cycle_is_named_once_with_its_members_and_what_hangs_off_it_is_not_a_cycle() {
    let p = problems(&format!(
        "{SOURCE}[operators.a]\nkind = \"normalize\"\nmethod = \"l2\"\ninput = \"c\"\n[operators.b]\nkind = \"normalize\"\nmethod = \"l2\"\ninput = \"a\"\n[operators.c]\nkind = \"normalize\"\nmethod = \"l2\"\ninput = \"b\"\n[operators.d]\nkind = \"normalize\"\nmethod = \"l2\"\ninput = \"c\"\n[sinks.o]\nkind = \"console\"\ninput = \"d\"\n"
    ));
    assert_eq!(p.matches("cycle among operators").count(), 1, "{p}");
    assert!(
        p.contains("p.toml:7:1: [operators.a] cycle among operators: [operators.a] -> [operators.c] -> [operators.b]"),
        "{p}"
    );
    assert!(!p.contains("[operators.d] ->") && !p.contains("-> [operators.d]"), "{p}");
}

#[test]
fn every_missing_channel_is_named_at_its_key_with_the_nearest_label() {
    let p = problems(&format!(
        "{SOURCE}[operators.p]\nkind = \"pick\"\ninput = \"eeg\"\n  channels = [\"fp1\", \"Fzz\", \"Nope\"]\n[sinks.o]\nkind = \"console\"\ninput = \"p\"\n"
    ));
    assert!(
        p.contains("p.toml:7:3: [operators.p] key `channels`: no channel `Fzz` in the input; did you mean `Fz`?"),
        "{p}"
    );
    assert!(
        p.contains("p.toml:7:3: [operators.p] key `channels`: no channel `Nope` in the input; it has: Fp1"),
        "{p}"
    );
    // Labels match case-sensitively, as in MNE.
    assert!(p.contains("no channel `fp1` in the input; did you mean `Fp1`?"), "{p}");
}

#[test]
fn filters_and_windows_refuse_one_row_per_window_inputs() {
    let p = problems(&format!(
        "{SOURCE}[operators.power]\nkind = \"bandpower\"\ninput = \"eeg\"\nwindow_s = 1.0\nbands = [[\"alpha\", 8.0, 12.0]]\n\
         [operators.smooth]\nkind = \"butterworth\"\ninput = \"power\"\nbtype = \"lowpass\"\ncutoff = 0.5\n\
         [operators.keep]\nkind = \"pick\"\ninput = \"power\"\n\
         [sinks.o]\nkind = \"console\"\ninput = \"smooth\"\n[sinks.k]\nkind = \"console\"\ninput = \"keep\"\n"
    ));
    assert!(
        p.contains("[operators.smooth] butterworth works across consecutive samples; the input has one row per window"),
        "{p}"
    );
    // Row-wise operators take them.
    assert!(!p.contains("[operators.keep]"), "{p}");
}

/// Every pipeline file under `examples/` is valid as shipped (the README runs them).
#[test]
fn every_bundled_example_validates() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for e in std::fs::read_dir(root.join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            common::run_ok(root, &["validate", &rel]);
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} examples found");
}

/// Sizes a configuration asks for are checked before anything is allocated: each of these once
/// aborted the process (allocation failure), panicked or hung instead of naming the key.
#[test]
fn absurd_sizes_are_refused_at_their_key_before_anything_is_allocated() {
    const HUGE: &str = "1000000000000000000";
    let eeg = "[sources.eeg]\nkind = \"synthetic_eeg\"\nchannels = 8\nsample_rate = 250\n";
    let acts = "[sources.acts]\nkind = \"synthetic_activations\"\nd_model = 16\nfeatures = 32\n";
    let op = |source: &str, input: &str, body: &str| {
        format!("{source}[operators.x]\ninput = \"{input}\"\n{body}\n[sinks.o]\nkind = \"console\"\ninput = \"x\"\n")
    };
    let cases = [
        (
            format!("[sources.acts]\nkind = \"synthetic_activations\"\nfeatures = {HUGE}\nactive = 1\n[sinks.o]\nkind = \"console\"\ninput = \"acts\"\n"),
            "`features` × `d_model`",
        ),
        (
            format!("[sources.acts]\nkind = \"synthetic_activations\"\nchunk = {HUGE}\n[sinks.o]\nkind = \"console\"\ninput = \"acts\"\n"),
            "`chunk` × `d_model`",
        ),
        (
            format!("[sources.eeg]\nkind = \"synthetic_eeg\"\nchannels = {HUGE}\n[sinks.o]\nkind = \"console\"\ninput = \"eeg\"\n"),
            "`channels` is 1000000000000000000; at most 65536",
        ),
        (
            op(eeg, "eeg", "kind = \"bandpower\"\nwindow_s = 1e300\nstep_s = 0.5"),
            "`window_s` (samples × channels)",
        ),
        (
            op(eeg, "eeg", "kind = \"bandpower\"\nepochs = [\"left\"]\ntmin = -1e12\ntmax = 1"),
            "`tmin`..`tmax` (samples × channels)",
        ),
        (
            op(eeg, "eeg", "kind = \"fir\"\nl_freq = 1e-300\nh_freq = 40"),
            "taps, more than 1048576; raise `l_freq` or lower `h_freq`",
        ),
        (op(eeg, "eeg", &format!("kind = \"resample\"\nup = {HUGE}\ndown = 1")), "needs factors between 1 and 65536"),
        (
            op(eeg, "eeg", "kind = \"resample\"\nup = 999999929\ndown = 999999937"),
            "resampling by 999999929/999999937 (reduced)",
        ),
        (op(eeg, "eeg", &format!("kind = \"hilbert\"\nblock = {HUGE}")), "`block` × channels"),
        (
            op(eeg, "eeg", &format!("kind = \"riemann_potato\"\nwindow_s = 1\nstep_s = 0.5\nreference_windows = {HUGE}")),
            "`reference_windows` × channels²",
        ),
        (op(acts, "acts", &format!("kind = \"kmeans\"\nk = {HUGE}")), "`k` centroids × channels"),
        (op(acts, "acts", &format!("kind = \"kmeans\"\nk = 4\nbatch_size = {HUGE}")), "`batch_size` × channels"),
        (op(acts, "acts", &format!("kind = \"kmeans\"\nk = 4\ninit_rows = {HUGE}")), "`init_rows` × channels"),
        (
            op(acts, "acts", &format!("kind = \"mahalanobis\"\nreference_rows = {HUGE}")),
            "`reference_rows` × channels",
        ),
    ];
    for (toml, expected) in cases {
        let p = problems(&toml);
        assert!(p.contains(expected), "expected `{expected}` in:\n{p}\nfor:\n{toml}");
    }
}

#[test]
fn a_device_key_on_a_node_without_device_kernels_names_its_line() {
    let sae = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/sample_sae");
    let p = problems(&format!(
        "[sources.acts]\nkind = \"synthetic_activations\"\nd_model = 64\n\
         [operators.rec]\nkind = \"sae_reconstruct\"\ninput = \"acts\"\nsae = \"{}\"\n\
         [operators.ts]\nkind = \"token_stats\"\ninput = \"rec\"\ndevice = \"gpu\"\n\
         [sinks.o]\nkind = \"console\"\ninput = \"ts\"\ndevice = \"cpu\"\n",
        sae.display()
    ));
    assert!(
        p.contains("DIR/p.toml:11:1: [operators.ts] `device` applies to operators with device kernels"),
        "{p}"
    );
    assert!(
        p.contains("DIR/p.toml:15:1: [sinks.o] `device` applies to operators and to sinks that compute"),
        "{p}"
    );
}
