//! Which input partition a producer put a source's records in: the key is the source (UTF-8),
//! hashed by the producer's partitioner. `murmur2` is Java's default partitioner (and Kafka Streams',
//! librdkafka's `murmur2_random`: `streamagg produce`, the gateway):
//! `(murmur2(key) & 0x7fffffff) % partitions`; `crc32` is librdkafka's default `consistent_random`
//! (confluent-kafka-python and -go, kcat): `crc32(key) % partitions`. Pure.
//!
//! The processor holds every emitted window's source to it: a source whose records are not where
//! its producer's partitioner puts them under the topic's *current* partition count was moved by
//! partitions being added (or its producers key otherwise), so its window may be split between two
//! partitions ([`Partitioner::home_of`]).

/// How upstream producers chose the partition of a source's records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Partitioner {
    /// Java's default partitioner and librdkafka's `murmur2_random` (Java clients, Kafka Streams,
    /// `streamagg produce` and `ingest`).
    #[default]
    Murmur2,
    /// librdkafka's default `consistent_random` (confluent-kafka-python and -go, kcat).
    Crc32,
    /// Not known: windows are not checked for having been split.
    Unknown,
}

impl Partitioner {
    /// Its `--input-partitioner` value.
    pub fn name(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2",
            Partitioner::Crc32 => "crc32",
            Partitioner::Unknown => "unknown",
        }
    }

    /// The partition of a topic with `partitions` partitions that a record keyed by `key` goes to;
    /// `None` for an empty key (producers place those at random), a topic without partitions or an
    /// unknown partitioner.
    pub fn partition_of(self, key: &[u8], partitions: usize) -> Option<i32> {
        if key.is_empty() || partitions == 0 {
            return None;
        }
        let hash = match self {
            Partitioner::Murmur2 => (murmur2(key) & 0x7fff_ffff) as u32,
            Partitioner::Crc32 => crc32(key),
            Partitioner::Unknown => return None,
        };
        i32::try_from(hash as usize % partitions).ok()
    }

    /// Where `key`'s records belong in a topic of `partitions` partitions, if that is not
    /// `partition` (and the partitioner is known): the record was written before partitions were
    /// added, or by a producer that keys otherwise.
    pub fn home_of(self, key: &[u8], partition: i32, partitions: usize) -> Option<i32> {
        self.partition_of(key, partitions)
            .filter(|&home| home != partition)
    }
}

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

/// Java's default partitioner: the partition of a topic with `partitions` partitions that a record
/// keyed by `key` goes to ([`Partitioner::partition_of`]).
pub fn partition_of(key: &[u8], partitions: usize) -> Option<i32> {
    Partitioner::Murmur2.partition_of(key, partitions)
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's and librdkafka's `rd_crc32`), bit by bit: it runs once
/// per emitted window, not per record.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
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

    #[test]
    fn crc32_equals_the_standard_check_values() {
        // The CRC-32 catalogue's check value, and zlib's `crc32` of short strings.
        for (data, expected) in [
            (&b"123456789"[..], 0xCBF4_3926),
            (b"", 0),
            (b"a", 0xE8B7_BE43),
            (b"The quick brown fox jumps over the lazy dog", 0x414F_A339),
        ] {
            assert_eq!(crc32(data), expected, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn a_home_elsewhere_is_reported_only_for_a_known_partitioner() {
        // "abc": murmur2 479470107 → 3 of 4; crc32 0x352441C2 = 891568578 → 2 of 4.
        for (partitioner, partition, partitions, expected) in [
            (Partitioner::Murmur2, 3, 4, None),
            (Partitioner::Murmur2, 1, 4, Some(3)),
            (Partitioner::Murmur2, 0, 1, None),
            (Partitioner::Crc32, 2, 4, None),
            (Partitioner::Crc32, 3, 4, Some(2)),
            (Partitioner::Unknown, 1, 4, None),
        ] {
            assert_eq!(
                partitioner.home_of(b"abc", partition, partitions),
                expected,
                "{partitioner:?} {partition}/{partitions}"
            );
        }
        assert_eq!(Partitioner::Murmur2.home_of(b"", 1, 4), None);
    }
}
