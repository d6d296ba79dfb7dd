//! An epoch's pending pair updates ("units"), sorted with a radix sort before they become a run
//! (see `runs.rs`).
//!
//! A unit is `key << 1`, or `key << 1 | 1` for a retraction, so sorting plain integers groups
//! each pair's additions and retractions. The sort reads and writes every unit once per pass,
//! so units are `u32` where they fit (pair keys of up to 31 bits: up to 32768 features) and
//! `u64` otherwise.

/// An unsigned integer a unit is stored in.
pub trait Unit: Copy + Default + Into<u64> {
    /// The unit `u`, which must fit.
    fn from_u64(u: u64) -> Self;
}

impl Unit for u32 {
    fn from_u64(u: u64) -> u32 {
        debug_assert!(u <= u32::MAX as u64);
        u as u32
    }
}

impl Unit for u64 {
    fn from_u64(u: u64) -> u64 {
        u
    }
}

/// Units of one width and the radix sort's scratch space.
#[derive(Default)]
pub struct UnitBuf<T> {
    /// The epoch's units, in the order added until [`UnitBuf::sort`].
    pub units: Vec<T>,
    scratch: Vec<T>,
}

impl<T: Unit> UnitBuf<T> {
    /// Adds `times` copies of `unit`.
    pub fn push(&mut self, unit: u64, times: usize) {
        let u = T::from_u64(unit);
        for _ in 0..times {
            self.units.push(u);
        }
    }

    /// Sorts the units, all below `2^bits`: an LSD radix sort, 11 bits per pass; one read
    /// counts every pass's digits, then each pass scatters.
    pub fn sort(&mut self, bits: u32) {
        const BITS: u32 = 11;
        const MASK: u64 = (1 << BITS) - 1;
        let (v, scratch) = (&mut self.units, &mut self.scratch);
        let passes = bits.div_ceil(BITS) as usize;
        let mut starts = vec![[0usize; 1 << BITS]; passes];
        for &u in v.iter() {
            let u: u64 = u.into();
            for (pass, start) in starts.iter_mut().enumerate() {
                start[((u >> (BITS * pass as u32)) & MASK) as usize] += 1;
            }
        }
        for start in &mut starts {
            let mut at = 0;
            for s in start.iter_mut() {
                (*s, at) = (at, at + *s);
            }
        }
        // Each pass overwrites every slot, so old contents may stay: zero only what is new.
        if scratch.len() < v.len() {
            scratch.resize(v.len(), T::default());
        }
        scratch.truncate(v.len());
        for (pass, start) in starts.iter_mut().enumerate() {
            let shift = BITS * pass as u32;
            for &u in v.iter() {
                let digit = ((u.into() >> shift) & MASK) as usize;
                scratch[start[digit]] = u;
                start[digit] += 1;
            }
            std::mem::swap(v, scratch);
        }
    }
}

/// Pending units, 4 bytes each where they fit.
pub enum Units {
    /// Units of up to 32 bits.
    Narrow(UnitBuf<u32>),
    /// Wider units.
    Wide(UnitBuf<u64>),
}

impl Units {
    /// Room for units of `bits` bits.
    pub fn new(bits: u32) -> Units {
        if bits <= 32 {
            Units::Narrow(UnitBuf::default())
        } else {
            Units::Wide(UnitBuf::default())
        }
    }

    /// Adds `times` copies of `unit`.
    pub fn push(&mut self, unit: u64, times: usize) {
        match self {
            Units::Narrow(b) => b.push(unit, times),
            Units::Wide(b) => b.push(unit, times),
        }
    }

    /// Units pending.
    pub fn len(&self) -> usize {
        match self {
            Units::Narrow(b) => b.units.len(),
            Units::Wide(b) => b.units.len(),
        }
    }

    /// Drops the pending units, keeping the allocations.
    pub fn clear(&mut self) {
        match self {
            Units::Narrow(b) => b.units.clear(),
            Units::Wide(b) => b.units.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both widths sort like `sort_unstable`, over 1, 2 and 3 passes.
    #[test]
    fn radix_sort_equals_a_comparison_sort() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for bits in [5u32, 20, 29, 40] {
            let values: Vec<u64> = (0..5000)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s & ((1 << bits) - 1)
                })
                .collect();
            let mut want = values.clone();
            want.sort_unstable();
            let mut wide = UnitBuf::<u64>::default();
            values.iter().for_each(|&v| wide.push(v, 1));
            wide.sort(bits);
            assert_eq!(wide.units, want, "{bits} bits, u64");
            if bits <= 32 {
                let mut narrow = UnitBuf::<u32>::default();
                values.iter().for_each(|&v| narrow.push(v, 1));
                // A second epoch reuses the scratch left by the first.
                narrow.sort(bits);
                narrow.units.clear();
                values.iter().for_each(|&v| narrow.push(v, 1));
                narrow.sort(bits);
                let got: Vec<u64> = narrow.units.iter().map(|&u| u as u64).collect();
                assert_eq!(got, want, "{bits} bits, u32");
            }
        }
        assert!(matches!(Units::new(32), Units::Narrow(_)));
        assert!(matches!(Units::new(33), Units::Wide(_)));
    }
}
