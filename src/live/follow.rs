//! Which owners `streamagg query` follows with its bearer token. Pure.
//!
//! An owner's address comes from a group member's consumer `client.id` (`streamagg@<host:port>`),
//! which any principal allowed to join the group can set: following it blindly would send the token,
//! over plain HTTP, to wherever that member says. So an owner is followed only when its address is
//! one the user vouched for: its host is the host of the `--endpoint` they asked (any port: the
//! instances of one deployment), or it is one of the `--peer host:port`s. Hosts are compared as
//! written (case aside), never resolved.

use crate::config::cluster::is_host_port;

/// Why the endpoint or a peer cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowError {
    #[error("endpoint {0}: https is not supported; the endpoint speaks plain HTTP (put a TLS proxy in front of it)")]
    Https(String),
    #[error("endpoint {0} is not http://host:port")]
    Endpoint(String),
    #[error("peer {0} is not a host:port")]
    Peer(String),
}

/// The `host:port` of an endpoint written `http://host:port` (a trailing `/` allowed) or `host:port`.
pub fn endpoint_authority(endpoint: &str) -> Result<&str, FollowError> {
    if endpoint.starts_with("https://") {
        return Err(FollowError::Https(endpoint.to_owned()));
    }
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or(endpoint)
        .trim_end_matches('/');
    if is_host_port(authority) {
        Ok(authority)
    } else {
        Err(FollowError::Endpoint(endpoint.to_owned()))
    }
}

/// The host of a `host:port` (`[::1]` of `[::1]:9464`).
fn host_of(host_port: &str) -> Option<&str> {
    host_port.rsplit_once(':').map(|(host, _)| host)
}

/// The addresses the user trusts with the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    endpoint_host: String,
    peers: Vec<String>,
}

impl Trusted {
    /// Trust in `endpoint`'s host and in each of `peers` (`host:port`).
    pub fn new(endpoint: &str, peers: &[String]) -> Result<Self, FollowError> {
        let authority = endpoint_authority(endpoint)?;
        let endpoint_host = host_of(authority)
            .ok_or_else(|| FollowError::Endpoint(endpoint.to_owned()))?
            .to_ascii_lowercase();
        let peers = peers
            .iter()
            .map(|peer| {
                if is_host_port(peer) {
                    Ok(peer.to_ascii_lowercase())
                } else {
                    Err(FollowError::Peer(peer.clone()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Trusted {
            endpoint_host,
            peers,
        })
    }

    /// Whether an owner's published `address` may be asked with the token.
    pub fn trusts(&self, address: &str) -> bool {
        if !is_host_port(address) {
            return false;
        }
        let address = address.to_ascii_lowercase();
        self.peers.contains(&address) || host_of(&address) == Some(self.endpoint_host.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_host_ports() {
        for (endpoint, expected) in [
            ("http://10.0.0.7:9464", Ok("10.0.0.7:9464")),
            ("http://10.0.0.7:9464/", Ok("10.0.0.7:9464")),
            ("h:1", Ok("h:1")),
            ("http://[::1]:9464", Ok("[::1]:9464")),
            ("https://h:1", Err(FollowError::Https("https://h:1".into()))),
            ("http://h", Err(FollowError::Endpoint("http://h".into()))),
            (
                "http://user@h:1",
                Err(FollowError::Endpoint("http://user@h:1".into())),
            ),
            (
                "http://h:1/x",
                Err(FollowError::Endpoint("http://h:1/x".into())),
            ),
        ] {
            assert_eq!(endpoint_authority(endpoint), expected, "{endpoint}");
        }
    }

    #[test]
    fn only_the_endpoints_host_and_named_peers_are_trusted_with_the_token() {
        let trusted = Trusted::new(
            "http://10.0.0.7:9464",
            &["Other.Example:9464".into(), "[fd00::2]:9464".into()],
        )
        .expect("valid");
        for (address, expected) in [
            ("10.0.0.7:9464", true),
            ("10.0.0.7:9999", true),
            ("other.example:9464", true),
            ("OTHER.example:9464", true),
            ("[fd00::2]:9464", true),
            // What any member of the group may publish in its client.id.
            ("evil:80", false),
            ("10.0.0.8:9464", false),
            ("10.0.0.70:9464", false),
            ("other.example:9465", false),
            ("[fd00::2]:80", false),
            ("10.0.0.7", false),
            ("10.0.0.7:0", false),
            ("", false),
        ] {
            assert_eq!(trusted.trusts(address), expected, "{address}");
        }
        let alone = Trusted::new("http://127.0.0.1:9464", &[]).expect("valid");
        assert!(alone.trusts("127.0.0.1:1"));
        assert!(!alone.trusts("127.0.0.2:9464"));
        assert!(!alone.trusts("localhost:9464"), "hosts are not resolved");
        assert_eq!(
            Trusted::new("http://h:1", &["h".into()]),
            Err(FollowError::Peer("h".into()))
        );
        assert_eq!(
            Trusted::new("https://h:1", &[]),
            Err(FollowError::Https("https://h:1".into()))
        );
    }
}
