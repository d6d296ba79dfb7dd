//! Comparing clusterings: adjusted Rand index, adjusted mutual information (scikit-learn's
//! definitions, arithmetic normalization) and the Shannon entropy of a labelling.

use std::collections::HashMap;

/// Contingency counts of two labellings: (label index maps, table `a × b`, row sums, column sums).
struct Contingency {
    table: HashMap<(usize, usize), u64>,
    a: Vec<u64>,
    b: Vec<u64>,
    n: u64,
}

fn contingency(x: &[u32], y: &[u32]) -> Contingency {
    assert_eq!(x.len(), y.len(), "labellings of different lengths");
    let mut ix: HashMap<u32, usize> = HashMap::new();
    let mut iy: HashMap<u32, usize> = HashMap::new();
    let mut table = HashMap::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (&u, &v) in x.iter().zip(y) {
        let i = *ix.entry(u).or_insert_with(|| {
            a.push(0);
            a.len() - 1
        });
        let j = *iy.entry(v).or_insert_with(|| {
            b.push(0);
            b.len() - 1
        });
        a[i] += 1;
        b[j] += 1;
        *table.entry((i, j)).or_insert(0) += 1;
    }
    Contingency {
        table,
        a,
        b,
        n: x.len() as u64,
    }
}

fn comb2(n: u64) -> f64 {
    n as f64 * (n as f64 - 1.0) / 2.0
}

/// Adjusted Rand index of two labellings of the same items (1: identical partitions, ~0: chance).
pub fn adjusted_rand_index(x: &[u32], y: &[u32]) -> f64 {
    let c = contingency(x, y);
    let sum_comb: f64 = c.table.values().map(|&v| comb2(v)).sum();
    let sum_a: f64 = c.a.iter().map(|&v| comb2(v)).sum();
    let sum_b: f64 = c.b.iter().map(|&v| comb2(v)).sum();
    let total = comb2(c.n);
    if total == 0.0 {
        return 1.0;
    }
    let expected = sum_a * sum_b / total;
    let max = (sum_a + sum_b) / 2.0;
    if max == expected {
        return 1.0;
    }
    (sum_comb - expected) / (max - expected)
}

/// Shannon entropy (nats) of a labelling's cluster sizes.
pub fn entropy(labels: &[u32]) -> f64 {
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for &l in labels {
        *counts.entry(l).or_insert(0) += 1;
    }
    entropy_of_counts(counts.values().copied(), labels.len() as u64)
}

fn entropy_of_counts(counts: impl Iterator<Item = u64>, n: u64) -> f64 {
    let n = n as f64;
    -counts
        .filter(|&c| c > 0)
        .map(|c| {
            let p = c as f64 / n;
            p * p.ln()
        })
        .sum::<f64>()
}

/// Adjusted mutual information of two labellings, normalized by the arithmetic mean of their
/// entropies (scikit-learn's `adjusted_mutual_info_score` default): 1 for identical partitions,
/// about 0 for independent ones.
pub fn adjusted_mutual_info(x: &[u32], y: &[u32]) -> f64 {
    let c = contingency(x, y);
    if (c.a.len() == 1 && c.b.len() == 1) || (c.a.is_empty() && c.b.is_empty()) {
        return 1.0;
    }
    let n = c.n as f64;
    let mi: f64 = c
        .table
        .iter()
        .map(|(&(i, j), &v)| {
            let v = v as f64;
            (v / n) * (n * v / (c.a[i] as f64 * c.b[j] as f64)).ln()
        })
        .sum();
    let emi = expected_mutual_info(&c.a, &c.b, c.n);
    let (ha, hb) = (
        entropy_of_counts(c.a.iter().copied(), c.n),
        entropy_of_counts(c.b.iter().copied(), c.n),
    );
    let normalizer = (ha + hb) / 2.0;
    let mut denominator = normalizer - emi;
    if denominator < 0.0 {
        denominator = denominator.min(-f64::EPSILON);
    } else {
        denominator = denominator.max(f64::EPSILON);
    }
    (mi - emi) / denominator
}

/// Expected mutual information of two random labellings with the given cluster sizes
/// (Vinh, Epps & Bailey 2010), with log-factorials from a table.
fn expected_mutual_info(a: &[u64], b: &[u64], n: u64) -> f64 {
    let mut lf = vec![0f64; n as usize + 1];
    for i in 1..=n as usize {
        lf[i] = lf[i - 1] + (i as f64).ln();
    }
    let nf = n as f64;
    let mut emi = 0.0;
    for &ai in a {
        for &bj in b {
            let start = (ai + bj).saturating_sub(n).max(1);
            let end = ai.min(bj);
            for nij in start..=end {
                let v = nij as f64;
                let term1 = v / nf * (nf * v / (ai as f64 * bj as f64)).ln();
                let lg = lf[ai as usize] + lf[bj as usize] + lf[(n - ai) as usize] + lf[(n - bj) as usize]
                    - lf[n as usize]
                    - lf[nij as usize]
                    - lf[(ai - nij) as usize]
                    - lf[(bj - nij) as usize]
                    - lf[(n + nij - ai - bj) as usize];
                emi += term1 * lg.exp();
            }
        }
    }
    emi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_partitions_score_one_under_relabelling() {
        let x = [0, 0, 1, 1, 2, 2];
        let y = [5, 5, 3, 3, 9, 9];
        assert!((adjusted_rand_index(&x, &y) - 1.0).abs() < 1e-12);
        assert!((adjusted_mutual_info(&x, &y) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn known_values_from_scikit_learn() {
        // sklearn.metrics.adjusted_rand_score([0,0,1,1],[0,0,1,2]) = 0.5714285714285715 (AMI is
        // checked against scikit-learn in tests/python/check_cluster.py).
        let (x, y) = ([0, 0, 1, 1], [0, 0, 1, 2]);
        assert!((adjusted_rand_index(&x, &y) - 0.5714285714285715).abs() < 1e-12);
        // Entropy of [0,0,1,1] in nats is ln 2.
        assert!((entropy(&x) - std::f64::consts::LN_2).abs() < 1e-12);
    }
}
