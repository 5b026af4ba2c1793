//! The state store's byte layout — pure encoding, no I/O: the keys that make RocksDB's byte order the
//! windows' numeric order, and the values of aggregates and checkpoints. Every decoder
//! takes bytes that may come from another version or a damaged disk and answers `None` rather than
//! panicking (fuzzed in `fuzz/`).

use crate::checkpoint::{Generation, PartitionCheckpoint, TopicPartition};
use crate::window::sketch::Sketch;
use crate::window::Aggregate;

/// Checkpoints of version 1 (18 bytes) had no generation: they are of the first.
const CHECKPOINT_V1: u8 = 1;
const CHECKPOINT_VERSION: u8 = 2;

/// `topic length (u16 BE) ‖ topic ‖ partition (u32 BE)`.
pub fn partition_key(partition: &TopicPartition) -> Vec<u8> {
    let topic = partition.topic.as_bytes();
    let mut key = Vec::with_capacity(2 + topic.len() + 4);
    // Kafka topic names are at most 249 bytes, so the length always fits.
    key.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    key.extend_from_slice(topic);
    key.extend_from_slice(&(partition.partition as u32).to_be_bytes());
    key
}

/// `partition key ‖ window_start with the sign bit flipped (u64 BE) ‖ source`.
pub fn window_key(partition_key: &[u8], window_start: i64, source: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(partition_key.len() + 8 + source.len());
    key.extend_from_slice(partition_key);
    key.extend_from_slice(&((window_start as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(source.as_bytes());
    key
}

/// A larger window size's window (rollups): `partition key ‖ size (u64 BE) ‖ window_start with the
/// sign bit flipped (u64 BE) ‖ source`, so each size's windows are a range of their own.
pub fn rollup_key(partition_key: &[u8], size_ms: i64, window_start: i64, source: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(partition_key.len() + 8);
    prefix.extend_from_slice(partition_key);
    prefix.extend_from_slice(&(size_ms as u64).to_be_bytes());
    window_key(&prefix, window_start, source)
}

/// Reads what follows the partition key in a [`rollup_key`]: size, start and source.
pub fn decode_rollup_suffix(suffix: &[u8]) -> Option<(i64, i64, String)> {
    let (size, rest) = suffix.split_first_chunk::<8>()?;
    let (start, source) = decode_window_suffix(rest)?;
    Some((u64::from_be_bytes(*size) as i64, start, source))
}

pub fn decode_window_suffix(suffix: &[u8]) -> Option<(i64, String)> {
    let (start, source) = suffix.split_first_chunk::<8>()?;
    let start = (u64::from_be_bytes(*start) ^ (1 << 63)) as i64;
    Some((start, String::from_utf8(source.to_vec()).ok()?))
}

/// An aggregate's count, sum, min, max and first offset: the 40 bytes every version writes and
/// reads. With percentiles off this is a window's whole value.
pub fn encode_aggregate(a: &Aggregate) -> [u8; 40] {
    let mut out = [0_u8; 40];
    out[0..8].copy_from_slice(&a.count.to_le_bytes());
    out[8..16].copy_from_slice(&a.sum.to_le_bytes());
    out[16..24].copy_from_slice(&a.min.to_le_bytes());
    out[24..32].copy_from_slice(&a.max.to_le_bytes());
    out[32..40].copy_from_slice(&a.first_offset.to_le_bytes());
    out
}

/// With percentiles on, a window's value: the 40 bytes of [`encode_aggregate`] followed by the
/// window's sketch ([`Sketch::encode`]).
pub fn encode_aggregate_with(a: &Aggregate, sketch: &Sketch) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.extend_from_slice(&encode_aggregate(a));
    sketch.encode(&mut out);
    out
}

/// Reads [`encode_aggregate`]'s 40 bytes, or [`encode_aggregate_with`]'s form.
pub fn decode_aggregate(bytes: &[u8]) -> Option<Aggregate> {
    let field = |i: usize| -> Option<[u8; 8]> { bytes.get(i * 8..i * 8 + 8)?.try_into().ok() };
    let sketch = match bytes.get(40..)? {
        [] => None,
        encoded => Some(Box::new(Sketch::decode(encoded)?)),
    };
    Some(Aggregate {
        count: u64::from_le_bytes(field(0)?),
        sum: f64::from_le_bytes(field(1)?),
        min: f64::from_le_bytes(field(2)?),
        max: f64::from_le_bytes(field(3)?),
        first_offset: i64::from_le_bytes(field(4)?),
        sketch,
    })
}

/// `version ‖ has stream time ‖ next_offset (i64 LE) ‖ stream time (i64 LE) ‖ generation (u64 LE)`.
/// A checkpoint's value: version 1 (18 bytes, what every earlier version reads) for generation 0,
/// version 2 (26 bytes, with the generation) only after a reset began another generation, so a
/// rollback to a version without generations keeps working on stores that never saw a reset.
pub fn encode_checkpoint(c: &PartitionCheckpoint) -> Vec<u8> {
    let mut out = Vec::with_capacity(26);
    let version = if c.generation == Generation::default() {
        CHECKPOINT_V1
    } else {
        CHECKPOINT_VERSION
    };
    out.push(version);
    out.push(u8::from(c.stream_time.is_some()));
    out.extend_from_slice(&c.next_offset.to_le_bytes());
    out.extend_from_slice(&c.stream_time.unwrap_or(0).to_le_bytes());
    if version == CHECKPOINT_VERSION {
        out.extend_from_slice(&c.generation.0.to_le_bytes());
    }
    out
}

pub fn decode_checkpoint(bytes: &[u8]) -> Option<PartitionCheckpoint> {
    let generation = match (bytes.first()?, bytes.len()) {
        (&CHECKPOINT_V1, 18) => Generation::default(),
        (&CHECKPOINT_VERSION, 26) => Generation(u64::from_le_bytes(bytes[18..26].try_into().ok()?)),
        _ => return None,
    };
    let next_offset = i64::from_le_bytes(bytes[2..10].try_into().ok()?);
    let stream_time = i64::from_le_bytes(bytes[10..18].try_into().ok()?);
    Some(PartitionCheckpoint {
        next_offset,
        stream_time: (bytes[1] == 1).then_some(stream_time),
        generation,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Test fixtures, shared with `store`'s tests.
    pub(crate) fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_owned(),
            partition,
        }
    }

    pub(crate) fn agg(count: u64, first_offset: i64) -> Aggregate {
        Aggregate {
            count,
            sum: count as f64 * 1.5,
            min: -1.0,
            max: 9.0,
            first_offset,
            sketch: None,
        }
    }

    #[test]
    fn window_keys_sort_by_partition_then_start_then_source() {
        let p0 = partition_key(&tp("traffic", 0));
        let p1 = partition_key(&tp("traffic", 1));
        let other = partition_key(&tp("traffic2", 0));
        let ordered = [
            window_key(&p0, i64::MIN, ""),
            window_key(&p0, -60_000, "z"),
            window_key(&p0, 0, "a"),
            window_key(&p0, 0, "b"),
            window_key(&p0, 60_000, ""),
            window_key(&p0, 60_000, "a"),
            window_key(&p0, i64::MAX, "a"),
            window_key(&p1, i64::MIN, "a"),
            window_key(&other, 0, "a"),
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
        // A topic that is a prefix of another cannot alias it: the length comes first.
        assert!(!window_key(&other, 0, "a").starts_with(&p0));
    }

    #[test]
    fn window_suffix_and_records_round_trip() {
        let p = partition_key(&tp("t", 3));
        for (start, source) in [
            (0_i64, "a"),
            (-60_000, "ü/eth0"),
            (i64::MAX, ""),
            (i64::MIN, "x"),
        ] {
            let key = window_key(&p, start, source);
            assert_eq!(
                decode_window_suffix(&key[p.len()..]),
                Some((start, source.to_owned()))
            );
        }
        let a = agg(7, 42);
        assert_eq!(decode_aggregate(&encode_aggregate(&a)), Some(a.clone()));
        // With percentiles: the same 40 bytes, then the sketch.
        let spec = crate::window::sketch::SketchSpec::new(0.01, 2048).expect("valid");
        let mut sketch = Sketch::default();
        for v in [1.5, -2.0, 0.0, 1e9] {
            sketch.add(&spec, v);
        }
        let with = encode_aggregate_with(&a, &sketch);
        assert_eq!(with[..40], encode_aggregate(&a));
        let decoded = decode_aggregate(&with).expect("decodes");
        assert_eq!(decoded.sketch.as_deref(), Some(&sketch));
        assert_eq!(encode_aggregate(&decoded), encode_aggregate(&a));
        assert_eq!(decode_aggregate(&with[..with.len() - 1]), None);
        assert_eq!(decode_aggregate(&with[..41]), None);
        for checkpoint in [
            PartitionCheckpoint {
                next_offset: 0,
                stream_time: None,
                generation: Generation(0),
            },
            PartitionCheckpoint {
                next_offset: 12_345,
                stream_time: Some(-5),
                generation: Generation(u64::MAX),
            },
        ] {
            assert_eq!(
                decode_checkpoint(&encode_checkpoint(&checkpoint)),
                Some(checkpoint)
            );
        }
        // Generation 0 is written as version 1, byte for byte what streamagg wrote before
        // generations, so an earlier version reads it; a later generation needs version 2.
        let first = PartitionCheckpoint {
            next_offset: 77,
            stream_time: Some(-3),
            generation: Generation(0),
        };
        assert_eq!(encode_checkpoint(&first).len(), 18);
        assert_eq!(encode_checkpoint(&first)[0], 1);
        assert_eq!(
            encode_checkpoint(&PartitionCheckpoint {
                generation: Generation(7),
                ..first
            })
            .len(),
            26
        );
        // What streamagg wrote before generations is read as of the first.
        let mut v1 = [0_u8; 18];
        v1[0] = 1;
        v1[1] = 1;
        v1[2..10].copy_from_slice(&77_i64.to_le_bytes());
        v1[10..18].copy_from_slice(&(-3_i64).to_le_bytes());
        assert_eq!(
            decode_checkpoint(&v1),
            Some(PartitionCheckpoint {
                next_offset: 77,
                stream_time: Some(-3),
                generation: Generation(0),
            })
        );
        assert_eq!(decode_checkpoint(&v1[..17]), None);
        let mut v1_long = v1.to_vec();
        v1_long.extend_from_slice(&[0; 8]);
        assert_eq!(decode_checkpoint(&v1_long), None);
        assert_eq!(decode_checkpoint(&[9; 18]), None);
        assert_eq!(decode_checkpoint(&[2; 18]), None);
        assert_eq!(decode_checkpoint(&[]), None);
        assert_eq!(decode_aggregate(&[0; 39]), None);
    }
}
