//! The benchmark's raw-consume ceiling: drains a topic with a plain `rdkafka` `BaseConsumer` (no
//! group, no commits, no processing), optionally decoding every record, and prints one line of
//! numbers for `bench/`. What no processor on this broker and machine can beat.
//!
//!   ceiling --brokers 127.0.0.1:9092 --topic traffic [--decode json|avro] [--property key=value]…
//!
//! `--property` sets a librdkafka consumer property (the benchmark passes the processor's
//! `[kafka.consumer]` pass-through, so the two compare like for like). It reports its own peak RSS
//! (`VmHWM`): a parent's `ru_maxrss` for a forked child can be the parent's own high-water mark.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use streamagg::codec::{decode, Format};
use streamagg::config::cluster::KafkaSettings;
use streamagg::model::TrafficEvent;
use streamagg::reader::{drain, Isolation};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut brokers, mut topic, mut format) = ("127.0.0.1:9092".to_owned(), None, None);
    let mut properties = Vec::new();
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
            "--property" => {
                let (key, value) = value
                    .split_once('=')
                    .context("--property needs key=value")?;
                properties.push((key.to_owned(), value.to_owned()));
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
        &properties,
        |message| {
            first_record_ms.get_or_insert_with(streamagg::producer::now_ms);
            if let Some(format) = format {
                let payload = rdkafka::Message::payload(message).unwrap_or_default();
                if decode::<TrafficEvent>(payload, format).is_err() {
                    undecodable += 1;
                }
            }
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let last_record_ms = streamagg::producer::now_ms();
    let peak_rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .unwrap_or(0);
    println!(
        "records={records} seconds={seconds:.3} records_per_second={:.0} undecodable={undecodable} \
         first_record_ms={} last_record_ms={last_record_ms} peak_rss_kib={peak_rss_kib}",
        records as f64 / seconds,
        first_record_ms.unwrap_or(0),
    );
    Ok(())
}
