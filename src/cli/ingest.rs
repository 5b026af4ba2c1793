//! `streamagg ingest`: the capture gateway in front of the input topic. Its settings are
//! [`IngestOptions`], defined in the library with their flags.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use streamagg::ingest::settings::{IngestOptions, IngestSettings};
use streamagg::telemetry::Health;

use super::process::{serve_telemetry, signalled};
use super::secrets::{read_secret_file, warn_insecure_tls, with_secrets};

/// The options with their secrets read (the bearer token from its file), validated.
pub(super) fn settings(mut options: IngestOptions) -> Result<IngestSettings> {
    options.http_token = options
        .http_token_file
        .as_deref()
        .map(|path| read_secret_file(path, "http_token_file"))
        .transpose()?;
    options.kafka.security = with_secrets(options.kafka.security)?;
    Ok(IngestSettings::try_from(options)?)
}

/// Runs the gateway until SIGINT/SIGTERM (then drains) or a fatal error.
pub(super) fn ingest(settings: IngestSettings) -> Result<()> {
    warn_insecure_tls(&settings.producer_properties);
    // Liveness: the gateway's monitor task ticks every second; 30 s without a tick is a wedged runtime.
    let health = Arc::new(Health::new(Duration::from_secs(30)));
    if let Some(addr) = settings.metrics_addr {
        serve_telemetry(addr, &health, None)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ingest")
        .build()?;
    runtime.block_on(streamagg::ingest::run(settings, health, signalled()))?;
    Ok(())
}
