//! Maps whose keys are fixed once built (the SQL keyword table, the upstream's Redis command
//! table) and only looked up with what clients send: nothing a client sends is ever inserted,
//! so a flooding attack on the hash cannot lengthen a bucket, and an unkeyed FNV-1a hash is
//! safe here and several times cheaper than SipHash on short keys.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a over the bytes written.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A map built once and then only read (see the module doc for why FNV is safe for it).
pub type FixedMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

#[cfg(test)]
mod tests {
    use super::FixedMap;

    #[test]
    fn looks_up_like_a_map() {
        let mut m: FixedMap<Vec<u8>, u32> = FixedMap::default();
        for (i, k) in ["get", "set", "hgetall", "client"].iter().enumerate() {
            m.insert(k.as_bytes().to_vec(), i as u32);
        }
        assert_eq!(m.get(b"hgetall".as_slice()), Some(&2));
        assert_eq!(m.get(b"del".as_slice()), None);
    }
}
