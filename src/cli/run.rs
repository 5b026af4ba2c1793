//! `streamagg run`: the processor. Its settings are [`RunOptions`], defined once for flags,
//! environment and the TOML file.

use std::sync::Arc;

use anyhow::Result;
use clap::{ArgMatches, Args, FromArgMatches};
use streamagg::config::{RunOptions, RunSettings};
use streamagg::telemetry::Health;

use super::process::{serve_telemetry, until_signalled};
use super::secrets::{warn_insecure_tls, with_secrets};

/// `streamagg run` flags: a config file and [`RunOptions`].
#[derive(Args)]
pub(super) struct RunArgs {
    /// TOML config file; unknown keys are errors.
    #[arg(long, env = "STREAMAGG_CONFIG")]
    config: Option<String>,
    #[command(flatten)]
    options: RunOptions,
}

impl RunArgs {
    /// The file's options, overridden by what `matches` (flags and environment) hold, with the
    /// secrets read once the file could have named their files, validated.
    pub(super) fn settings(self, matches: &ArgMatches) -> Result<RunSettings> {
        let mut options = match &self.config {
            Some(path) => RunOptions::from_file(path)?,
            None => RunOptions::default(),
        };
        options.update_from_arg_matches(matches)?;
        options.cluster.security = with_secrets(options.cluster.security)?;
        Ok(RunSettings::try_from(options)?)
    }
}

/// Runs the processor until SIGINT/SIGTERM or a fatal error.
pub(super) fn run(settings: RunSettings) -> Result<()> {
    warn_insecure_tls(
        settings
            .consumer_properties
            .iter()
            .chain(&settings.producer_properties),
    );
    let health = Arc::new(Health::new(settings.stall_timeout));
    if let Some(addr) = settings.metrics_addr {
        serve_telemetry(addr, &health)?;
    }
    until_signalled("processor", |stop| {
        streamagg::pipeline::run(settings, stop, health)
    })??;
    Ok(())
}
