//! Who owns which input partition, from the consumer group's description: each member's client id
//! (where an instance with the query endpoint on publishes its address, `streamagg@<host:port>`) and
//! its assignment bytes (Kafka's `ConsumerProtocolAssignment`, versions 0–3: an `int16` version, an
//! array of topics with their `int32` partitions, then user data, which is ignored). Pure.

use std::collections::BTreeMap;

use crate::config::cluster::is_host_port;

/// What an instance puts in front of its advertised address in its consumer `client.id`.
pub const CLIENT_ID_PREFIX: &str = "streamagg@";

/// The consumer `client.id` that publishes `address` (`host:port`).
pub fn advertising_client_id(address: &str) -> String {
    format!("{CLIENT_ID_PREFIX}{address}")
}

/// The address a member's client id publishes, if it follows [`advertising_client_id`].
pub fn advertised_address(client_id: &str) -> Option<&str> {
    client_id
        .strip_prefix(CLIENT_ID_PREFIX)
        .filter(|address| is_host_port(address))
}

/// Why assignment bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable group assignment: {0}")]
pub struct AssignmentError(&'static str);

/// The `(topic, partition)`s of a `ConsumerProtocolAssignment`.
pub fn parse_assignment(bytes: &[u8]) -> Result<Vec<(String, i32)>, AssignmentError> {
    let mut reader = Reader(bytes);
    let version = reader.i16()?;
    if !(0..=3).contains(&version) {
        return Err(AssignmentError("unknown version"));
    }
    let mut assigned = Vec::new();
    for _ in 0..reader.count()? {
        let length = usize::try_from(reader.i16()?).map_err(|_| AssignmentError("null topic"))?;
        let topic = std::str::from_utf8(reader.take(length)?)
            .map_err(|_| AssignmentError("topic is not UTF-8"))?
            .to_owned();
        for _ in 0..reader.count()? {
            assigned.push((topic.clone(), reader.i32()?));
        }
    }
    Ok(assigned)
}

/// Big-endian fields from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AssignmentError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(AssignmentError("truncated"))?;
        self.0 = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, AssignmentError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, AssignmentError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An array length; a null array (-1) is empty. Each element takes at least 4 bytes, so a count
    /// beyond what is left is refused before anything is allocated for it.
    fn count(&mut self) -> Result<usize, AssignmentError> {
        let count = self.i32()?;
        let count = usize::try_from(count.max(0)).unwrap_or(0);
        if count > self.0.len() / 4 {
            return Err(AssignmentError("array longer than the data"));
        }
        Ok(count)
    }
}

/// The member that owns a partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub client_id: String,
    /// The host the broker saw the member connect from.
    pub client_host: String,
    /// Its query endpoint, if it publishes one.
    pub address: Option<String>,
}

/// One group member as the broker describes it.
pub struct Member<'a> {
    pub client_id: &'a str,
    pub client_host: &'a str,
    pub assignment: Option<&'a [u8]>,
}

/// `(topic, partition)` → owner, over every member whose assignment can be read (an unreadable one
/// owns nothing here: its partitions stay unknown).
pub fn owners<'a>(members: impl IntoIterator<Item = Member<'a>>) -> BTreeMap<(String, i32), Owner> {
    let mut owners = BTreeMap::new();
    for member in members {
        let Some(Ok(assigned)) = member.assignment.map(parse_assignment) else {
            continue;
        };
        let owner = Owner {
            client_id: member.client_id.to_owned(),
            client_host: member.client_host.trim_start_matches('/').to_owned(),
            address: advertised_address(member.client_id).map(str::to_owned),
        };
        for tp in assigned {
            owners.insert(tp, owner.clone());
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `ConsumerProtocolAssignment` written field by field, as the Java client's generated code
    /// writes it.
    fn encode(version: i16, topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
        let mut out = version.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            out.extend((topic.len() as i16).to_be_bytes());
            out.extend(topic.as_bytes());
            out.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                out.extend(p.to_be_bytes());
            }
        }
        match user_data {
            Some(data) => {
                out.extend((data.len() as i32).to_be_bytes());
                out.extend(data);
            }
            None => out.extend((-1i32).to_be_bytes()),
        }
        out
    }

    #[test]
    fn assignments_of_every_version_with_or_without_user_data_are_read() {
        for version in 0..=3 {
            for user_data in [None, Some(&b"\x00\x01sticky"[..])] {
                let bytes = encode(version, &[("in", &[0, 2]), ("other", &[5])], user_data);
                assert_eq!(
                    parse_assignment(&bytes),
                    Ok(vec![
                        ("in".into(), 0),
                        ("in".into(), 2),
                        ("other".into(), 5)
                    ])
                );
            }
        }
        assert_eq!(parse_assignment(&encode(1, &[], None)), Ok(vec![]));
    }

    #[test]
    fn malformed_assignments_are_refused_not_misread() {
        let good = encode(0, &[("in", &[0, 1])], None);
        assert!(parse_assignment(&good).is_ok());
        for (bytes, why) in [
            (&[][..], "truncated"),
            (
                &[0, 0, 0, 0, 0, 1, 0, 9, b'i', b'n', 0, 0, 0, 0][..],
                "truncated",
            ),
            (&[0, 9, 0, 0, 0, 0][..], "unknown version"),
            (
                &[0, 0, 0x7f, 0xff, 0xff, 0xff][..],
                "array longer than the data",
            ),
            (
                &[0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 0, 0, 0][..],
                "null topic",
            ),
        ] {
            assert_eq!(
                parse_assignment(bytes),
                Err(AssignmentError(why)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn owners_map_partitions_to_members_and_their_published_addresses() {
        let a = encode(3, &[("in", &[0, 2])], Some(b"x"));
        let b = encode(3, &[("in", &[1])], None);
        let owners = owners([
            Member {
                client_id: "streamagg@10.0.0.1:9464",
                client_host: "/10.0.0.1",
                assignment: Some(&a),
            },
            Member {
                client_id: "streamagg",
                client_host: "/10.0.0.2",
                assignment: Some(&b),
            },
            Member {
                client_id: "streamagg@broken:1",
                client_host: "/10.0.0.3",
                assignment: Some(&[1, 2, 3]),
            },
        ]);
        assert_eq!(owners.len(), 3);
        let first = &owners[&("in".to_owned(), 2)];
        assert_eq!(first.address.as_deref(), Some("10.0.0.1:9464"));
        assert_eq!(first.client_host, "10.0.0.1");
        assert_eq!(owners[&("in".to_owned(), 1)].address, None);
    }

    #[test]
    fn only_usable_addresses_are_advertised() {
        for (client_id, expected) in [
            ("streamagg@host:9464", Some("host:9464")),
            ("streamagg@[::1]:9464", Some("[::1]:9464")),
            ("streamagg@10.1.2.3:1", Some("10.1.2.3:1")),
            ("streamagg", None),
            ("streamagg@host", None),
            ("streamagg@host:0", None),
            ("streamagg@:9464", None),
            ("streamagg@a b:9464", None),
            ("streamagg@evil/x:9464", None),
            ("other@host:9464", None),
        ] {
            assert_eq!(advertised_address(client_id), expected, "{client_id}");
        }
        assert_eq!(
            advertised_address(&advertising_client_id("h:1")),
            Some("h:1")
        );
    }
}
