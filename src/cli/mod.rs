//! The command line: parses flags (each with its `STREAMAGG_*` environment variable) into validated
//! settings, runs the command, and turns any error into one line on stderr and exit code 1. One
//! file per command; [`process`] holds what the long-running commands share.

mod admin;
mod consume;
mod dlq;
mod ingest;
mod process;
mod produce;
mod query;
mod reset;
mod run;
mod secrets;

use std::process::ExitCode;

use anyhow::Result;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use streamagg::config::cluster::KafkaOptions;

use secrets::kafka_settings;

#[derive(Parser)]
#[command(
    name = "streamagg",
    version,
    about = "Per-minute event-time traffic averages from Apache Kafka"
)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for log collectors.
    #[arg(
        long,
        global = true,
        env = "STREAMAGG_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the processor: consume traffic, aggregate per source and event-time window, emit averages.
    Run(Box<run::RunArgs>),
    /// Write synthetic TrafficEvents to a topic, keyed by source (creates the topic if missing).
    Produce(produce::ProduceArgs),
    /// Run the ingest gateway: TrafficEvents from NDJSON over TCP and `POST /v1/events` over HTTP
    /// to a topic, keyed by source; an HTTP 200 means Kafka acknowledged every accepted event.
    Ingest(Box<streamagg::ingest::settings::IngestOptions>),
    /// Print the records of a topic as JSON lines: from the beginning (or the end, or a time) to its
    /// current end, or following new ones.
    Consume(consume::ConsumeArgs),
    /// Work with a dead-letter queue (or late topic).
    Dlq {
        #[command(subcommand)]
        action: dlq::DlqAction,
    },
    /// Show how far a consumer group is behind on topics (exit code 0 whether or not it lags).
    Lag {
        #[command(flatten)]
        kafka: KafkaOptions,
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Topics, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        topic: Vec<String>,
        /// Print only the total lag, as one number.
        #[arg(long)]
        total: bool,
    },
    /// Process a stopped group's input again from a chosen position: reset its offsets on a topic
    /// and make every instance's local state for it obsolete (refused while the group has members).
    Reset(reset::ResetArgs),
    /// Create, ensure (topics as code) or delete topics.
    Topics {
        #[command(subcommand)]
        action: admin::TopicsAction,
    },
    /// Ask a running processor's endpoint whether it is healthy or ready: exit 0 if so, 1 if not
    /// (the container's health check).
    Probe {
        /// Which probe.
        #[arg(value_enum, default_value = "healthz")]
        probe: admin::ProbeKind,
        /// The processor's metrics address (`0.0.0.0` means this host).
        #[arg(long, env = "STREAMAGG_METRICS_ADDR", default_value = "127.0.0.1:9464")]
        metrics_addr: std::net::SocketAddr,
    },
    /// Ask a running processor for a source's open windows (`GET /v1/windows/{source}`), following
    /// the answer to the instance that owns the source (one hop). Prints the answer as JSON.
    Query(query::QueryArgs),
    /// Print an embedded Avro schema.
    Schema {
        #[arg(value_enum)]
        record: consume::SchemaKind,
    },
    /// Print a shell completion script, generated from these flags (e.g. `streamagg completions
    /// bash > /etc/bash_completion.d/streamagg`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these flags (e.g. `streamagg man | man -l -`).
    Man,
}

/// Parses the command line, sets up logging and runs the command: exit 0, or one line and 1.
pub fn main() -> ExitCode {
    process::limit_malloc_arenas();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        // Colour only on a terminal: logs collected from files and containers stay plain text.
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    match dispatch(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("streamagg: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command; `matches` tell which settings flags and environment gave.
fn dispatch(cli: Cli, matches: &ArgMatches) -> Result<()> {
    match cli.command {
        Command::Run(args) => {
            let given = matches.subcommand_matches("run").unwrap_or(matches);
            run::run(args.settings(given)?)
        }
        Command::Produce(args) => produce::produce(args.settings()?),
        Command::Ingest(options) => ingest::ingest(ingest::settings(*options)?),
        Command::Consume(args) => consume::consume(&args),
        Command::Reset(args) => reset::reset(&args),
        Command::Topics { action } => admin::topics(action),
        Command::Dlq { action } => dlq::dlq(action),
        Command::Lag {
            kafka,
            group,
            topic,
            total,
        } => admin::lag(&kafka_settings(&kafka)?, &group, &topic, total),
        Command::Probe {
            probe,
            metrics_addr,
        } => admin::probe(probe, metrics_addr),
        Command::Query(args) => query::query(&args),
        Command::Schema { record } => consume::schema(record),
        Command::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "streamagg", &mut out);
            Ok(())
        }
        Command::Man => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            Ok(())
        }
    }
}
