//! `streamagg run`: the processor. Its settings are [`RunOptions`], defined once for flags,
//! environment and the TOML file.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use clap::{ArgMatches, Args, FromArgMatches};
use streamagg::config::{RunOptions, RunSettings};
use streamagg::live::discovery::Discovery;
use streamagg::live::queries;
use streamagg::live::service::LiveService;
use streamagg::pipeline::LiveRun;
use streamagg::telemetry::{Endpoint, Health};

use super::process::{serve_telemetry, until_signalled};
use super::query::query_token;
use super::secrets::{warn_insecure_tls, with_registry_secret, with_secrets};

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
        options.registry = with_registry_secret(options.registry)?;
        options.query_token = query_token(options.query_token_file.as_deref())?;
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
    let (service, inbox) = match &settings.query {
        Some(query) => {
            let (asker, inbox) = queries::channel();
            let discovery = Discovery::new(
                &settings.kafka,
                &settings.group,
                &settings.input_topics,
                settings.input_partitioner,
            )?;
            let service = LiveService::new(query.token.clone(), asker, discovery);
            let service: Arc<dyn Endpoint> = Arc::new(service);
            (Some(service), Some(inbox))
        }
        None => (None, None),
    };
    let bound = match settings.metrics_addr {
        Some(addr) => Some(serve_telemetry(addr, &health, service)?),
        None => None,
    };
    let live = inbox.map(|inbox| LiveRun {
        inbox,
        advertised_address: advertised_address(&settings, bound),
    });
    until_signalled("processor", |stop| {
        streamagg::pipeline::run(settings, stop, health, live)
    })??;
    Ok(())
}

/// Where the other instances point clients to this one: the setting, else the bound metrics
/// address unless it is unspecified (`0.0.0.0` names no host another machine can reach).
fn advertised_address(settings: &RunSettings, bound: Option<SocketAddr>) -> Option<String> {
    let configured = settings
        .query
        .as_ref()
        .and_then(|q| q.advertised_address.clone());
    let address = configured.or_else(|| {
        bound
            .filter(|addr| !addr.ip().is_unspecified())
            .map(|addr| addr.to_string())
    });
    if address.is_none() {
        tracing::warn!("the live-state endpoint listens on an unspecified address and no --advertised-address is set: other instances cannot point clients here");
    }
    address
}
