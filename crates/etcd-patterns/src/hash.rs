//! A stable hash: the same input gives the same number in every process,
//! on every machine and in every release (unlike std's `RandomState`).
//! Feature-flag buckets and the consistent-hash ring depend on that.

/// FNV-1a over the parts (with a separator byte between them), finished
/// with the SplitMix64 mixer so that close inputs spread over all bits.
pub(crate) fn stable_hash(parts: &[&[u8]]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0xff;
            h = h.wrapping_mul(PRIME);
        }
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    mix(h)
}

/// SplitMix64's finalizer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_never_change() {
        // Computed once; a change here moves every flag bucket and ring position.
        assert_eq!(stable_hash(&[b""]), mix(0xcbf2_9ce4_8422_2325));
        assert_ne!(stable_hash(&[b"a", b"b"]), stable_hash(&[b"ab"]));
    }
}
