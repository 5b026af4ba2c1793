//! `streamagg consume` and `streamagg schema`: a topic's records — from the beginning, the end or a
//! point in time, to the current end or following new ones — and the records' Avro schemas.

use std::io::Write;
use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use rdkafka::message::Message;
use streamagg::codec::input::InputDecoder;
use streamagg::codec::{Format, TRAFFIC_AVERAGE_SCHEMA, TRAFFIC_EVENT_SCHEMA};
use streamagg::config::cluster::KafkaOptions;
use streamagg::config::registry::RegistryOptions;
use streamagg::inspect::{event_json, render, render_decoded, Encoding, RecordKind, Show, Shown};
use streamagg::reader::{header_list, Isolation, Scan, StartAt, Until};
use streamagg::registry::RegistryClient;

use super::process::until_signalled;
use super::secrets::{kafka_settings, with_registry_secret};

/// The records whose schema `streamagg schema` prints.
#[derive(Clone, Copy, ValueEnum)]
pub(super) enum SchemaKind {
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
    /// Which record the topic holds; `raw` does not decode.
    #[arg(long, value_enum, default_value = "average")]
    record: RecordKind,
    /// Payload format. With `avro-confluent` and `--record event`, a `--schema-registry-url` reads
    /// each record with the writer schema its id names (schema resolution); without one, records
    /// are read with streamagg's own schema.
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
    #[command(flatten)]
    registry: RegistryOptions,
    /// Where to start on every partition: `beginning`, `end`, epoch milliseconds or an RFC 3339 time
    /// (`2026-12-04T12:00:00Z`; the first record at or after it, by Kafka record timestamp).
    #[arg(long, default_value = "beginning", value_parser = parse_start)]
    from: StartAt,
    /// Keep printing new records until SIGINT/SIGTERM (or `--max-records`/`--timeout`), instead of
    /// stopping at the end the topic has when consume starts.
    #[arg(long)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long)]
    max_records: Option<u64>,
    /// With `--follow`: stop after this long (exit 0).
    #[arg(long, value_parser = streamagg::config::duration::parse, requires = "follow")]
    timeout: Option<Duration>,
    /// Also show records of open or aborted transactions.
    #[arg(long)]
    read_uncommitted: bool,
    /// Show `partition`, `offset` and `timestamp` (the record's Kafka timestamp, epoch ms), with the
    /// decoded record under `record`.
    #[arg(long)]
    positions: bool,
    /// Show the record key as `key` (a string, or `{"base64":…}` if not UTF-8).
    #[arg(long)]
    keys: bool,
    /// Show the headers as `headers`: `[[name, value], …]` in order (the DLQ's `streamagg.error`,
    /// `streamagg.topic`, `streamagg.partition`, `streamagg.offset`, …).
    #[arg(long)]
    headers: bool,
    /// Show every value's bytes as `value_base64` (or `value_hex` with `--raw hex`). Records that
    /// do not decode always carry them, with `error`.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "base64")]
    raw: Option<Encoding>,
    /// Give up if the end of the topic is not reached within this long (without `--follow`).
    #[arg(long, default_value = "60s", value_parser = streamagg::config::duration::parse)]
    deadline: Duration,
}

fn parse_start(text: &str) -> Result<StartAt, String> {
    text.parse()
}

/// Prints a topic's records as JSON lines; counts the undecodable ones on stderr.
pub(super) fn consume(args: &ConsumeArgs) -> Result<()> {
    let settings = kafka_settings(&args.kafka)?;
    let scan = Scan {
        isolation: if args.read_uncommitted {
            Isolation::ReadUncommitted
        } else {
            Isolation::ReadCommitted
        },
        start: args.from,
        until: if args.follow {
            Until::Follow {
                for_at_most: args.timeout,
            }
        } else {
            Until::End {
                deadline: args.deadline,
            }
        },
        max_records: args.max_records,
    };
    let show = Show {
        record: args.record,
        format: args.format,
        positions: args.positions,
        keys: args.keys,
        headers: args.headers,
        raw: args.raw,
    };
    // Events of registry-framed topics, read with their writer schemas when a registry is named.
    let registry = match (args.format, args.record, &args.registry.schema_registry_url) {
        (Format::AvroConfluent, RecordKind::Event, Some(_)) => {
            let options = with_registry_secret(args.registry.clone())?;
            let settings = options.validate(true)?.context("registry settings")?;
            Some((
                RegistryClient::new(&settings)?,
                InputDecoder::new(Format::AvroConfluent, None),
            ))
        }
        _ => None,
    };
    let (records, undecodable) = until_signalled("consume", |stop| {
        let mut registry = registry;
        let mut undecodable = 0_u64;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut failure = None;
        let records = scan.run(&settings, &args.topic, &[], stop, |message| {
            let headers = if args.headers {
                header_list(message)
            } else {
                Vec::new()
            };
            let shown = Shown {
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp().to_millis(),
                key: message.key(),
                headers: &headers,
                value: message.payload(),
            };
            let (line, decoded) = match &mut registry {
                None => render(&shown, &show),
                Some((client, decoder)) => {
                    let payload = message.payload().unwrap_or_default();
                    if let Some(id) = decoder.missing_schema(payload) {
                        match client.schema_by_id(id) {
                            Ok(fetched) => {
                                // An unresolvable schema is shown with each record's `error`.
                                let _ = streamagg::registry::learn_fetched(decoder, id, fetched);
                            }
                            Err(error) => {
                                failure = Some(anyhow::Error::new(error));
                                return ControlFlow::Break(());
                            }
                        }
                    }
                    render_decoded(&shown, &show, Some(event_json(decoder.decode(payload))))
                }
            };
            undecodable += u64::from(!decoded);
            let mut written = writeln!(out, "{line}");
            // Followed records are shown as they come, not when a buffer fills.
            if written.is_ok() && args.follow {
                written = out.flush();
            }
            match written {
                Ok(()) => ControlFlow::Continue(()),
                // A reader that stopped early (`| head`) is not an error: stop writing, quietly.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ControlFlow::Break(()),
                Err(e) => {
                    failure = Some(anyhow::Error::new(e).context("writing to stdout"));
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(error) = failure {
            return Err(error);
        }
        match out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.context("writing to stdout")?,
        }
        Ok((records?, undecodable))
    })??;
    if undecodable > 0 {
        eprintln!(
            "streamagg: {undecodable} of {records} records did not decode as {:?} (shown with `error`)",
            args.format
        );
    }
    Ok(())
}

/// Prints an embedded Avro schema.
pub(super) fn schema(record: SchemaKind) -> Result<()> {
    print!(
        "{}",
        match record {
            SchemaKind::Event => TRAFFIC_EVENT_SCHEMA,
            SchemaKind::Average => TRAFFIC_AVERAGE_SCHEMA,
        }
    );
    Ok(())
}
