//! Writes the bundled example SAE (`examples/data/sample_sae/`, SAELens format): a TopK SAE
//! (k = 8) whose decoder rows are the 256 directions planted in the bundled sample activations
//! and whose encoder is their transpose: the "ideal" dictionary of that data, for the
//! monitoring example until a trained SAE ships.
//!
//! `cargo run --example make_sample_sae` (reads `examples/make_sample_data.toml` for the seed
//! and shapes, so the directions are exactly those of the sample).

use std::collections::HashMap;

use neurostream::sources::{SyntheticActivations, SyntheticActivationsConfig};

fn main() -> anyhow::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let spec: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("make_sample_data.toml"))?)?;
    let mut table = spec["sources"]["acts"].as_table().cloned().expect("[sources.acts]");
    table.remove("kind");
    let cfg: SyntheticActivationsConfig = table.try_into()?;
    let (d, n, k) = (cfg.d_model, cfg.features, cfg.active);
    let gen = SyntheticActivations::new("acts", cfg).map_err(anyhow::Error::msg)?;
    let w_dec: Vec<f32> = gen.directions().to_vec(); // n × d, unit rows
    let mut w_enc = vec![0f32; d * n]; // d × n
    for j in 0..n {
        for i in 0..d {
            w_enc[i * n + j] = w_dec[j * d + i];
        }
    }
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let tensors: Vec<(&str, Vec<usize>, Vec<u8>)> = vec![
        ("W_enc", vec![d, n], bytes(&w_enc)),
        ("W_dec", vec![n, d], bytes(&w_dec)),
        ("b_enc", vec![n], bytes(&vec![0.0; n])),
        ("b_dec", vec![d], bytes(&vec![0.0; d])),
    ];
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            Ok((
                *name,
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)?,
            ))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let out = dir.join("data/sample_sae");
    std::fs::create_dir_all(&out)?;
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &out.join("sae_weights.safetensors"))?;
    let cfg = serde_json::json!({
        "architecture": "topk", "k": k, "d_in": d, "d_sae": n, "dtype": "float32",
        "apply_b_dec_to_input": true, "normalize_activations": "none", "rescale_acts_by_decoder_norm": false,
        "model_name": "synthetic-planted-64", "hook_name": "resid",
        "neurostream_note": "decoder = the planted directions of examples/data/sample_activations.parquet; made by examples/make_sample_sae.rs"
    });
    std::fs::write(out.join("cfg.json"), serde_json::to_string_pretty(&cfg)?)?;
    println!("wrote {} ({n} latents, d_in {d}, k {k})", out.display());
    Ok(())
}
