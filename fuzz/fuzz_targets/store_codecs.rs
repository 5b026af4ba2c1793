//! The state store's byte layout: arbitrary keys and values round-trip, key byte order equals
//! (partition, window start, source) order, and decoding arbitrary bytes never panics.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use streamagg::checkpoint::{Generation, PartitionCheckpoint, TopicPartition};
use streamagg::store::layout::{
    decode_aggregate, decode_checkpoint, decode_rollup_suffix, decode_window_suffix,
    encode_aggregate, encode_checkpoint, partition_key, rollup_key, window_key,
};
use streamagg::window::Aggregate;

#[derive(Debug, Arbitrary)]
struct Input {
    topic: String,
    partition: i32,
    windows: [(i64, String); 2],
    aggregate: (u64, f64, f64, f64, i64),
    checkpoint: (i64, Option<i64>, u64),
    raw: Vec<u8>,
}

fuzz_target!(|input: Input| {
    // Kafka topic names are at most 249 bytes; longer ones never reach the store.
    if input.topic.len() > 249 {
        return;
    }
    let partition = TopicPartition {
        topic: input.topic,
        partition: input.partition,
    };
    let prefix = partition_key(&partition);
    let keys: Vec<Vec<u8>> = input
        .windows
        .iter()
        .map(|(start, source)| window_key(&prefix, *start, source))
        .collect();
    for ((start, source), key) in input.windows.iter().zip(&keys) {
        let suffix = key.strip_prefix(prefix.as_slice()).expect("key starts with its partition");
        assert_eq!(decode_window_suffix(suffix), Some((*start, source.clone())));
        let rollup = rollup_key(&prefix, 300_000, *start, source);
        let suffix = &rollup[prefix.len()..];
        assert_eq!(decode_rollup_suffix(suffix), Some((300_000, *start, source.clone())));
    }
    let [(start_a, source_a), (start_b, source_b)] = &input.windows;
    let expected = (start_a, source_a.as_bytes()).cmp(&(start_b, source_b.as_bytes()));
    assert_eq!(keys[0].cmp(&keys[1]), expected, "key order is not window order");

    let (count, sum, min, max, first_offset) = input.aggregate;
    let aggregate = Aggregate { count, sum, min, max, first_offset, sketch: None };
    let decoded = decode_aggregate(&encode_aggregate(&aggregate)).expect("aggregate decodes");
    assert_eq!(encode_aggregate(&decoded), encode_aggregate(&aggregate));

    let checkpoint = PartitionCheckpoint {
        next_offset: input.checkpoint.0,
        stream_time: input.checkpoint.1,
        generation: Generation(input.checkpoint.2),
    };
    assert_eq!(decode_checkpoint(&encode_checkpoint(&checkpoint)), Some(checkpoint));

    // Whatever a damaged disk holds: an answer, never a panic.
    let _ = decode_window_suffix(&input.raw);
    let _ = decode_rollup_suffix(&input.raw);
    let _ = decode_aggregate(&input.raw);
    let _ = decode_checkpoint(&input.raw);
});
