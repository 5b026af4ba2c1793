//! `streamagg query`: asks one instance's live-state endpoint for a source's open windows and,
//! when that instance names another as the owner, asks the owner (one hop). Prints the answer.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use streamagg::live::answer::{encode_source, WindowsAnswer, PATH_PREFIX};
use streamagg::telemetry;

use super::secrets::read_secret_file;

#[derive(Args)]
pub(super) struct QueryArgs {
    /// The source to look up.
    #[arg(long)]
    source: String,
    /// Any instance's live-state endpoint (its metrics address): http://host:port.
    #[arg(
        long,
        env = "STREAMAGG_QUERY_ENDPOINT",
        default_value = "http://127.0.0.1:9464"
    )]
    endpoint: String,
    /// File holding the bearer token (`STREAMAGG_QUERY_TOKEN` in the environment wins).
    #[arg(long, env = "STREAMAGG_QUERY_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// How long each request may take.
    #[arg(long, default_value = "10s", value_parser = streamagg::config::duration::parse)]
    timeout: Duration,
}

/// The query token: `STREAMAGG_QUERY_TOKEN` if set and not empty, else the file's.
pub(super) fn query_token(file: Option<&std::path::Path>) -> Result<Option<String>> {
    if let Some(token) = std::env::var("STREAMAGG_QUERY_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        return Ok(Some(token));
    }
    file.map(|path| read_secret_file(path, "query_token_file"))
        .transpose()
}

/// The socket address of `http://host:port` (or `host:port`).
fn endpoint_addr(endpoint: &str) -> Result<SocketAddr> {
    if endpoint.starts_with("https://") {
        bail!("endpoint {endpoint}: https is not supported; the endpoint speaks plain HTTP (put a TLS proxy in front of it)");
    }
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    authority
        .to_socket_addrs()
        .with_context(|| format!("endpoint {endpoint} is not a reachable host:port"))?
        .next()
        .ok_or_else(|| anyhow!("endpoint {endpoint} resolves to no address"))
}

/// One `GET` of the source at `endpoint`, as a parsed answer.
fn ask(endpoint: &str, path: &str, token: &str, timeout: Duration) -> Result<WindowsAnswer> {
    let addr = endpoint_addr(endpoint)?;
    let (status, body) = telemetry::http_get_with(addr, path, Some(token), timeout)
        .with_context(|| format!("cannot reach {endpoint}"))?;
    if status != 200 {
        bail!("{endpoint} answered {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{endpoint} answered no live-state JSON"))
}

pub(super) fn query(args: &QueryArgs) -> Result<()> {
    let token = query_token(args.token_file.as_deref())?
        .ok_or_else(|| anyhow!("no query token: set STREAMAGG_QUERY_TOKEN or --token-file"))?;
    let path = format!("{PATH_PREFIX}{}", encode_source(&args.source));
    let mut answer = ask(&args.endpoint, &path, &token, args.timeout)?;
    if let Some(owner) = answer.redirect().map(str::to_owned) {
        tracing::info!(owner = %owner, "following to the instance that owns the source");
        answer = ask(&owner, &path, &token, args.timeout)?;
        if !answer.owned {
            tracing::warn!(owner = %owner, "the named owner does not own the source either (a rebalance may be under way): try again");
        }
    } else if !answer.owned {
        tracing::warn!(
            "no instance that owns the source publishes its address (see --advertised-address)"
        );
    }
    println!("{}", serde_json::to_string(&answer)?);
    Ok(())
}
