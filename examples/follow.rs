//! The benchmark's output follower: reads a topic from the beginning as records arrive (read_committed,
//! so a transactional writer's records count when their transaction commits, as for any downstream
//! reader) and prints one line of numbers for `bench/`.
//!
//!   follow --brokers B --topic T --until N [--timeout 600s]
//!       stop once N records have arrived; report when the last one did (epoch ms). Exit 1 if the
//!       timeout passes first.
//!   follow --brokers B --topic T --for 150s --format json|avro --grace-ms G
//!       follow for a fixed time, decode every TrafficAverage and report the emission latency:
//!       arrival time − (window_end + grace), the earliest moment the window could be final.
//!       With --warmup-ms W it also reports the latency of windows ending at least W after the
//!       first window end seen (`steady_*`) and the worst before (`warmup_max_ms`): where a
//!       start-up transient stops and the steady state begins.
//!       With --input I (an input topic with `message.timestamp.type=LogAppendTime`) it also splits
//!       each steady-state sample at the moment the broker appended the record that closed its
//!       window: for each window end and input partition, the first record whose event time
//!       reaches window_end + grace (found through the append-time index, then read forward).
//!       `own_*` is arrival − that append (what the processor and the output path added, the
//!       results of input partition p being keyed to output partition p), `upstream_max_ms` the
//!       worst append − (window_end + grace) (what the generator and the broker added before).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use streamagg::codec::{decode, Format};
use streamagg::config::cluster::KafkaSettings;
use streamagg::kafka;
use streamagg::kafka::context::StreamaggContext;
use streamagg::model::{TrafficAverage, TrafficEvent};
use streamagg::producer::now_ms;

struct Args {
    brokers: String,
    topic: String,
    until: Option<u64>,
    timeout: Duration,
    follow_for: Option<Duration>,
    format: Format,
    grace_ms: Option<i64>,
    warmup_ms: i64,
    input: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        brokers: "127.0.0.1:9092".to_owned(),
        topic: String::new(),
        until: None,
        timeout: Duration::from_secs(600),
        follow_for: None,
        format: Format::Json,
        grace_ms: None,
        warmup_ms: 0,
        input: None,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--brokers" => parsed.brokers = value,
            "--topic" => parsed.topic = value,
            "--until" => parsed.until = Some(value.parse().context("--until")?),
            "--timeout" => parsed.timeout = humantime::parse_duration(&value)?,
            "--for" => parsed.follow_for = Some(humantime::parse_duration(&value)?),
            "--grace-ms" => parsed.grace_ms = Some(value.parse().context("--grace-ms")?),
            "--warmup-ms" => parsed.warmup_ms = value.parse().context("--warmup-ms")?,
            "--input" => parsed.input = Some(value),
            "--format" => {
                parsed.format = match value.as_str() {
                    "json" => Format::Json,
                    "avro" => Format::Avro,
                    other => bail!("--format json|avro, not {other}"),
                }
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if parsed.topic.is_empty() {
        bail!("--topic is required");
    }
    if parsed.until.is_none() == parsed.follow_for.is_none() {
        bail!("give exactly one of --until N and --for DURATION");
    }
    Ok(parsed)
}

/// The value at quantile `q` of sorted `values` (nearest rank).
fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let settings = KafkaSettings {
        brokers: args.brokers.clone(),
        timeout: Duration::from_secs(10),
        security: Default::default(),
    };
    let consumer: BaseConsumer<StreamaggContext> = settings
        .client_config("streamagg-bench-follow")
        .set("group.id", "streamagg-bench-follow")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(StreamaggContext::default())?;
    // A topic created just before may not be in the broker's metadata yet (KRaft brokers learn
    // it from the controller a moment later): look again for up to the timeout.
    let looking = Instant::now();
    let partitions = loop {
        match kafka::admin::partition_count(&consumer, &settings, &args.topic)? {
            Some(partitions) => break partitions,
            None if looking.elapsed() < settings.timeout => {
                std::thread::sleep(Duration::from_millis(200))
            }
            None => bail!("topic {} does not exist", args.topic),
        }
    };
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(&args.topic, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;

    let started = Instant::now();
    let limit = args.follow_for.unwrap_or(args.timeout);
    let (mut records, mut first_ms, mut last_ms) = (0_u64, None, 0_i64);
    let mut latencies = Vec::new();
    // (window end, output partition) → (min, max, count) of latency: where a tail comes from.
    let mut bursts = std::collections::BTreeMap::new();
    let mut undecodable = 0_u64;
    // (window end, output partition, latency) of every sample, split at the end into warm-up and
    // steady state.
    let mut by_window_end = Vec::new();
    while started.elapsed() < limit && args.until.is_none_or(|until| records < until) {
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let message = message?;
        let arrived = now_ms();
        records += 1;
        first_ms.get_or_insert(arrived);
        last_ms = arrived;
        if let Some(grace_ms) = args.grace_ms {
            match decode::<TrafficAverage>(message.payload().unwrap_or_default(), args.format) {
                Ok(average) => {
                    let latency = arrived - (average.window_end + grace_ms);
                    latencies.push(latency);
                    by_window_end.push((average.window_end, message.partition(), latency));
                    let burst = bursts
                        .entry((average.window_end, message.partition()))
                        .or_insert((i64::MAX, i64::MIN, 0_u64));
                    *burst = (burst.0.min(latency), burst.1.max(latency), burst.2 + 1);
                }
                Err(_) => undecodable += 1,
            }
        }
    }
    if let Some(until) = args.until {
        if records < until {
            bail!(
                "only {records} of {until} records arrived on {} within {}",
                args.topic,
                humantime::format_duration(args.timeout)
            );
        }
    }
    for ((window_end, partition), (min, max, count)) in &bursts {
        eprintln!("burst window_end={window_end} partition={partition} records={count} latency_min_ms={min} latency_max_ms={max}");
    }
    let steady_from = by_window_end
        .iter()
        .map(|&(end, ..)| end)
        .min()
        .unwrap_or(0)
        + args.warmup_ms;
    let (steady_samples, warmup): (Vec<_>, Vec<_>) = by_window_end
        .iter()
        .partition(|&&(end, ..)| end >= steady_from);
    let mut steady: Vec<i64> = steady_samples
        .iter()
        .map(|&&(.., latency)| latency)
        .collect();
    steady.sort_unstable();
    let warmup_max = warmup
        .iter()
        .map(|&&(.., latency)| latency)
        .max()
        .unwrap_or(0);
    let split = match (&args.input, args.grace_ms) {
        (Some(input), Some(grace_ms)) => {
            let closing = closing_appends(
                &consumer,
                &settings,
                input,
                args.format,
                &steady_samples,
                grace_ms,
            )?;
            let mut own = Vec::new();
            let mut upstream_max = None;
            for &&(window_end, partition, latency) in &steady_samples {
                let close = window_end + grace_ms;
                let appended = closing.get(&(window_end, partition)).with_context(|| {
                    format!(
                        "no record closing window end {window_end} on input partition {partition}"
                    )
                })?;
                // latency = arrival − close, so arrival − appended = latency − (appended − close).
                own.push(latency - (appended - close));
                upstream_max = upstream_max.max(Some(appended - close));
            }
            own.sort_unstable();
            format!(
                " own_p50_ms={} own_p99_ms={} own_max_ms={} upstream_max_ms={}",
                quantile(&own, 0.5),
                quantile(&own, 0.99),
                own.last().copied().unwrap_or(0),
                upstream_max.unwrap_or(0)
            )
        }
        _ => String::new(),
    };
    latencies.sort_unstable();
    let closes = bursts
        .keys()
        .map(|(window_end, _)| window_end)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    println!(
        "records={records} first_arrival_ms={} last_arrival_ms={last_ms} undecodable={undecodable} \
         closes={closes} latency_samples={} latency_p50_ms={} latency_p99_ms={} latency_p999_ms={} latency_max_ms={} \
         steady_samples={} steady_p50_ms={} steady_p99_ms={} steady_max_ms={} warmup_max_ms={warmup_max}{split}",
        first_ms.unwrap_or(0),
        latencies.len(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        quantile(&latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
        steady.len(),
        quantile(&steady, 0.5),
        quantile(&steady, 0.99),
        steady.last().copied().unwrap_or(0),
    );
    Ok(())
}

/// For each (window end, partition) of `samples`: when the broker appended the first record of
/// `input`'s partition whose event time reaches window_end + `grace_ms` (the record that closed
/// the window there). The append-time index gives the first record appended at or after that
/// moment (no record closing the window can be appended before it: its event time is its
/// producer's clock); reading forward finds the first whose event time reaches it.
fn closing_appends(
    consumer: &BaseConsumer<StreamaggContext>,
    settings: &KafkaSettings,
    input: &str,
    format: Format,
    samples: &[&(i64, i32, i64)],
    grace_ms: i64,
) -> Result<std::collections::BTreeMap<(i64, i32), i64>> {
    const MAX_READ: u64 = 5_000_000;
    let wanted: std::collections::BTreeSet<(i64, i32)> = samples
        .iter()
        .map(|&&(end, partition, _)| (end, partition))
        .collect();
    let mut found = std::collections::BTreeMap::new();
    for &(window_end, partition) in &wanted {
        let close = window_end + grace_ms;
        let mut query = TopicPartitionList::new();
        query.add_partition_offset(input, partition, Offset::Offset(close))?;
        let located = consumer.offsets_for_times(query, settings.timeout)?;
        let from = located
            .find_partition(input, partition)
            .map(|e| e.offset())
            .context("offsets_for_times answered without the partition")?;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(input, partition, from)?;
        consumer.assign(&assignment)?;
        let mut read = 0_u64;
        let reading = Instant::now();
        loop {
            if read >= MAX_READ || reading.elapsed() > Duration::from_secs(60) {
                bail!("no record of {input}/{partition} closes window end {window_end} within {read} records");
            }
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let message = message?;
            read += 1;
            let Ok(event) = decode::<TrafficEvent>(message.payload().unwrap_or_default(), format)
            else {
                continue;
            };
            if event.timestamp >= close {
                let rdkafka::Timestamp::LogAppendTime(appended) = message.timestamp() else {
                    bail!("{input} does not stamp records with their append time (message.timestamp.type=LogAppendTime)");
                };
                found.insert((window_end, partition), appended);
                break;
            }
        }
    }
    Ok(found)
}
