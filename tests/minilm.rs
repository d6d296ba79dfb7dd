//! all-MiniLM-L6-v2 (BERT) written with candle: every layer's hidden states and the sentence
//! embedding against a float64 numpy forward pass from the same safetensors, the tokenizer on
//! known ids, and known cosine relations between sentences. Needs `scripts/fetch_models.sh`.

mod common;

use neurostream::models::bert::Bert;

fn model() -> Option<Bert> {
    neurostream::models::test_weights("minilm/model.safetensors")?;
    Some(Bert::load(&neurostream::models::model_path("minilm")).unwrap())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() // embeddings are unit vectors
}

#[test]
fn minilm_matches_a_float64_numpy_forward_pass() {
    let Some(m) = model() else { return };
    assert_eq!(
        m.encode("hello world").unwrap(),
        vec![101, 7592, 2088, 102],
        "[CLS] hello world [SEP]"
    );
    let Some(py) = common::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ids = m
        .encode("Sparse autoencoders find interpretable features in language models.")
        .unwrap();
    let out = m.forward(&ids).unwrap();
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(
        dir.path().join("ids.u32"),
        ids.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    )
    .unwrap();
    std::fs::write(dir.path().join("layers.f32"), le(&out.layers.concat())).unwrap();
    std::fs::write(dir.path().join("embedding.f32"), le(&out.embedding)).unwrap();
    let model_dir = neurostream::models::model_path("minilm");
    let report = common::run_python(
        &py,
        "minilm_reference.py",
        &[model_dir.to_str().unwrap(), dir.path().to_str().unwrap()],
    );
    eprintln!("{report}");
}

#[test]
fn minilm_embeddings_keep_known_cosine_relations() {
    let Some(m) = model() else { return };
    let emb = |s: &str| m.forward(&m.encode(s).unwrap()).unwrap().embedding;
    let food = emb("A man is eating food.");
    let bread = emb("A man is eating a piece of bread.");
    let baby = emb("A woman is carrying a baby.");
    let eeg = emb("EEG band power decoding for brain-computer interfaces.");
    let bci = emb("Decoding motor imagery from electroencephalography signals.");
    assert!((cosine(&food, &food) - 1.0).abs() < 1e-5);
    assert!(cosine(&food, &bread) > 0.6, "{}", cosine(&food, &bread));
    assert!(cosine(&food, &bread) > cosine(&food, &baby) + 0.2);
    assert!(cosine(&eeg, &bci) > cosine(&eeg, &food) + 0.3);
}
