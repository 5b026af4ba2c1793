//! The benchmark's raw-consume ceiling: drains a topic with a plain `rdkafka` `BaseConsumer` (no
//! group, no commits, no processing), optionally decoding every record, and prints one line of
//! numbers for `bench/`. What no processor on this broker and machine can beat.
//!
//!   ceiling --brokers 127.0.0.1:9092 --topic traffic [--decode json|avro]

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use streamagg::codec::{decode, Format};
use streamagg::consume::{drain, Isolation};
use streamagg::kafka::KafkaSettings;
use streamagg::model::TrafficEvent;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut brokers, mut topic, mut format) = ("127.0.0.1:9092".to_owned(), None, None);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--brokers" => brokers = value,
            "--topic" => topic = Some(value),
            "--decode" => {
                format = Some(match value.as_str() {
                    "json" => Format::Json,
                    "avro" => Format::Avro,
                    other => bail!("--decode json|avro, not {other}"),
                })
            }
            other => bail!("unknown flag {other}"),
        }
    }
    let topic = topic.context("--topic is required")?;
    let settings = KafkaSettings {
        brokers,
        timeout: Duration::from_secs(10),
        security: Default::default(),
    };
    let started = Instant::now();
    let mut undecodable = 0_u64;
    let mut first_record_ms = None;
    let records = drain(
        &settings,
        &topic,
        Isolation::ReadCommitted,
        Duration::from_secs(3600),
        |message| {
            first_record_ms.get_or_insert_with(streamagg::produce::now_ms);
            if let Some(format) = format {
                let payload = rdkafka::Message::payload(message).unwrap_or_default();
                if decode::<TrafficEvent>(payload, format).is_err() {
                    undecodable += 1;
                }
            }
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "records={records} seconds={seconds:.3} records_per_second={:.0} undecodable={undecodable} \
         first_record_ms={} last_record_ms={}",
        records as f64 / seconds,
        first_record_ms.unwrap_or(0),
        streamagg::produce::now_ms(),
    );
    Ok(())
}
