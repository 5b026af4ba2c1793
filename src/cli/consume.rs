//! `streamagg consume` and `streamagg schema`: a topic's records, and the records' Avro schemas.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use streamagg::codec::{decode, Format, TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_EVENT_SCHEMA};
use streamagg::config::cluster::KafkaOptions;
use streamagg::model::{TrafficAverage, TrafficEvent};
use streamagg::reader::{read_to_end, Isolation};

use super::secrets::kafka_settings;

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum RecordKind {
    /// TrafficEvent, the input record.
    Event,
    /// TrafficAverage, the output record.
    Average,
}

#[derive(Args)]
pub(super) struct ConsumeArgs {
    #[command(flatten)]
    kafka: KafkaOptions,
    /// Topic to read.
    #[arg(long)]
    topic: String,
    /// Which record the topic holds.
    #[arg(long, value_enum, default_value = "average")]
    record: RecordKind,
    /// Payload format.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    /// Also show records of open or aborted transactions.
    #[arg(long)]
    read_uncommitted: bool,
    /// Print each record as `{"partition":P,"offset":O,"record":{…}}`.
    #[arg(long)]
    positions: bool,
    /// Give up if the end of the topic is not reached within this long.
    #[arg(long, default_value = "60s", value_parser = streamagg::config::duration::parse)]
    deadline: Duration,
}

/// Prints a topic's records as JSON lines; counts the undecodable ones on stderr.
pub(super) fn consume(args: &ConsumeArgs) -> Result<()> {
    let settings = kafka_settings(&args.kafka)?;
    let isolation = if args.read_uncommitted {
        Isolation::ReadUncommitted
    } else {
        Isolation::ReadCommitted
    };
    let records = read_to_end(&settings, &args.topic, isolation, args.deadline)?;
    let mut undecodable = 0_u64;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for record in &records {
        let payload = record.payload.as_deref().unwrap_or_default();
        let line = match args.record {
            RecordKind::Event => {
                decode::<TrafficEvent>(payload, args.format).map(|r| serde_json::to_string(&r))
            }
            RecordKind::Average => {
                decode::<TrafficAverage>(payload, args.format).map(|r| serde_json::to_string(&r))
            }
        };
        let written = match line {
            Ok(Ok(line)) if args.positions => writeln!(
                out,
                r#"{{"partition":{},"offset":{},"record":{line}}}"#,
                record.partition, record.offset
            ),
            Ok(Ok(line)) => writeln!(out, "{line}"),
            _ => {
                undecodable += 1;
                Ok(())
            }
        };
        // A reader that stopped early (`| head`) is not an error: stop writing, quietly.
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other.context("writing to stdout")?,
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        other => other.context("writing to stdout")?,
    }
    if undecodable > 0 {
        eprintln!(
            "streamagg: {undecodable} of {} records did not decode as {:?}",
            records.len(),
            args.format
        );
    }
    Ok(())
}

/// Prints an embedded Avro schema.
pub(super) fn schema(record: RecordKind) -> Result<()> {
    print!(
        "{}",
        match record {
            RecordKind::Event => TRAFFIC_EVENT_SCHEMA,
            RecordKind::Average => TRAFFIC_AVERAGE_SCHEMA,
        }
    );
    Ok(())
}
