//! The live-state endpoint's settings (`query_token_file`, `advertised_address`), validated once,
//! and what they rule out among the consumer's pass-through properties.

use std::collections::BTreeMap;

use super::cluster::{is_host_port, Secret};
use super::ConfigError;

/// The live-state endpoint `GET /v1/windows/{source}` (served on `metrics_addr`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySettings {
    /// The bearer token clients must present.
    pub token: Secret,
    /// Where others reach this instance's endpoint (`host:port`); `None`: the bound metrics address,
    /// unless it is unspecified (`0.0.0.0`), in which case no address is published.
    pub advertised_address: Option<String>,
}

/// The live-state endpoint's settings: on with a token (which needs the metrics endpoint it is
/// served on); an advertised address only with it, and only a usable `host:port`.
pub(super) fn settings(
    token: Option<String>,
    advertised_address: Option<String>,
    metrics_on: bool,
) -> Result<Option<QuerySettings>, ConfigError> {
    let invalid = |key, reason: &str| ConfigError::Invalid {
        key,
        reason: reason.to_owned(),
    };
    let Some(token) = token else {
        return match advertised_address {
            Some(_) => Err(invalid(
                "advertised_address",
                "only used by the live-state endpoint: set query_token_file too",
            )),
            None => Ok(None),
        };
    };
    if token.trim().is_empty() {
        return Err(invalid("query_token_file", "the token is empty"));
    }
    if !metrics_on {
        return Err(invalid(
            "query_token_file",
            "the live-state endpoint is served on metrics_addr, which is off",
        ));
    }
    if let Some(address) = &advertised_address {
        if !is_host_port(address) {
            return Err(ConfigError::Invalid {
                key: "advertised_address",
                reason: format!("'{address}' is not a host:port clients can reach"),
            });
        }
    }
    Ok(Some(QuerySettings {
        token: Secret::new(token),
        advertised_address,
    }))
}

/// With the endpoint on, the consumer's `client.id` publishes the instance's address
/// (`streamagg@<host:port>`, how the instances find each other): a `client.id` of the user's
/// (`[kafka.consumer]`, canonical keys) would be overwritten, silently breaking the client-id quotas
/// and monitoring it was set for, so the two are refused together.
pub(super) fn check_consumer_properties(
    query: Option<&QuerySettings>,
    consumer_properties: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if query.is_some() && consumer_properties.contains_key("client.id") {
        return Err(ConfigError::Refused {
            table: "consumer",
            key: "client.id".to_owned(),
            reason: "with the live-state endpoint on (query_token_file), the consumer's client.id \
                     publishes this instance's address (streamagg@<advertised_address>); unset one \
                     of the two",
        });
    }
    Ok(())
}
