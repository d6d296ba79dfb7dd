//! Stateless pseudo-random numbers: a value is a pure function of its coordinates, so any
//! worker can generate any chunk and the data do not depend on how many workers run.

/// SplitMix64 finalizer.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of several coordinates.
pub fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x1234_5678_9ABC_DEF0u64, |h, &p| mix(h ^ p))
}

/// `hash(&[prefix parts.., last])` from `hash(prefix parts)`: a generator that varies only the
/// last coordinate hashes the others once.
pub fn hash_next(prefix: u64, last: u64) -> u64 {
    mix(prefix ^ last)
}

/// Uniform in [-1, 1) from a hash.
pub fn signed_unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Uniform in [0, 1) from a hash.
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}
