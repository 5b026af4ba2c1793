//! Which input partition a source's records are in: the key is the source (UTF-8), hashed as Java's
//! default partitioner and librdkafka's `murmur2_random` do (`streamagg produce`, the gateway and
//! Java clients): `(murmur2(key) & 0x7fffffff) % partitions`. Pure.

/// Kafka's `Utils.murmur2` (MurmurHash2, seed `0x9747b28c`), as a signed 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = 0x9747_b28c ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a topic with `partitions` partitions that a record keyed by `key` goes to, or
/// `None` for an empty key (librdkafka places those at random) or a topic without partitions.
pub fn partition_of(key: &[u8], partitions: usize) -> Option<i32> {
    if key.is_empty() || partitions == 0 {
        return None;
    }
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    i32::try_from(positive as usize % partitions).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_equals_kafkas_utils_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2
        for (key, expected) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partitions_follow_the_positive_hash_modulo_the_count() {
        // "21": -973932308 & 0x7fffffff = 1173551340; "abc": 479470107.
        for (key, partitions, expected) in [
            (&b"21"[..], 4, Some(1_173_551_340 % 4)),
            (b"21", 7, Some(1_173_551_340 % 7)),
            (b"abc", 3, Some(479_470_107 % 3)),
            (b"abc", 1, Some(0)),
            (b"", 4, None),
            (b"abc", 0, None),
        ] {
            assert_eq!(partition_of(key, partitions), expected);
        }
    }
}
