//! `streamagg query`: asks one instance's live-state endpoint for a source's open windows and, for
//! each partition that instance does not own, asks its owner (one hop) — but only an owner whose
//! address the user trusts ([`Trusted`]: the endpoint's host or a `--peer`); the token is never
//! sent anywhere else. Prints one answer, completed from the owners' answers, and says on stderr
//! what is still missing and how to ask for it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use streamagg::live::answer::{encode_source, WindowsAnswer, PATH_PREFIX};
use streamagg::live::follow::{endpoint_authority, Trusted};
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
    /// An owner's endpoint (host:port) that may be asked with the token, besides any on the
    /// endpoint's host (repeatable). Owners publish their address in their consumer `client.id`,
    /// which any member of the group can set: others are named, never asked.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
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
    endpoint_authority(endpoint)?
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
    let mut answer: WindowsAnswer = serde_json::from_str(&body)
        .with_context(|| format!("{endpoint} answered no live-state JSON"))?;
    answer.recount();
    Ok(answer)
}

pub(super) fn query(args: &QueryArgs) -> Result<()> {
    let trusted = Trusted::new(&args.endpoint, &args.peers)?;
    let token = query_token(args.token_file.as_deref())?
        .ok_or_else(|| anyhow!("no query token: set STREAMAGG_QUERY_TOKEN or --token-file"))?;
    let path = format!("{PATH_PREFIX}{}", encode_source(&args.source));
    let mut answer = ask(&args.endpoint, &path, &token, args.timeout)?;
    for owner in answer.elsewhere.clone() {
        if !trusted.trusts(&owner) {
            let parts: Vec<String> = answer
                .partitions
                .iter()
                .filter(|p| {
                    !p.owned
                        && p.owner.as_ref().and_then(|o| o.address.as_deref())
                            == Some(owner.as_str())
                })
                .map(|p| format!("{}[{}]", p.topic, p.partition))
                .collect();
            tracing::warn!(
                "{} owned by {owner}, which is neither on the endpoint's host nor a --peer: not \
                 asked (the token goes only to trusted addresses); if it is one of yours, ask \
                 again with --peer {owner}",
                parts.join(", ")
            );
            continue;
        }
        tracing::info!(owner = %owner, "asking the instance that owns part of the source");
        match ask(&owner, &path, &token, args.timeout) {
            Ok(other) => {
                if answer.fill_from(&other) == 0 {
                    tracing::warn!(owner = %owner, "the named owner does not own the source's partitions either (a rebalance may be under way): try again");
                }
            }
            Err(error) => tracing::warn!(owner = %owner, "{error:#}"),
        }
    }
    if !answer.complete {
        tracing::warn!(
            "partial answer: the windows of {} are missing (\"complete\": false){}",
            answer.missing().join(", "),
            if answer
                .partitions
                .iter()
                .any(|p| !p.owned && p.owner.as_ref().is_none_or(|o| o.address.is_none()))
            {
                "; an owner publishes no address (see --advertised-address)"
            } else {
                ""
            }
        );
    }
    println!("{}", serde_json::to_string(&answer)?);
    Ok(())
}
