//! Maps and sets keyed by integers the server generates itself (request ids, pids).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashing for the server's own keys (request ids, pids): integers it generated or
/// got from the kernel, never chosen by a client, so SipHash's flood resistance buys
/// nothing and costs about 3 % of a pool request's instructions (callgrind). A
/// multiply-rotate mix (FxHash's) spreads them over every bit hashbrown reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const MIX: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by the server's own integers (see `IdHasher`).
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A set of the server's own integers (see `IdHasher`).
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_the_bits_hashbrown_reads() {
        let build = BuildHasherDefault::<IdHasher>::default();
        // hashbrown takes its 7-bit tag from the top of the hash and the bucket from the
        // bottom: sequential ids must vary in both, or lookups degrade to scans.
        let hashes: Vec<u64> = (1..=1024u64).map(|id| build.hash_one(id)).collect();
        let tops: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        let lows: HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert!(tops.len() >= 100, "{} distinct tags", tops.len());
        assert!(lows.len() >= 600, "{} distinct buckets", lows.len());
        let mut map: IdMap<u64, u64> = IdMap::default();
        map.extend((1..=1024u64).map(|id| (id, id * 2)));
        assert!((1..=1024u64).all(|id| map[&id] == id * 2));
    }
}
