//! The Confluent Schema Registry wire format of a Kafka value: magic byte `0`, the schema id as
//! 4 big-endian bytes, then the Avro datum written with that schema. Pure: no I/O.

use super::DecodeError;

/// The first byte of every registry-framed value.
pub const MAGIC: u8 = 0;
/// Magic byte and schema id.
pub const HEADER_LEN: usize = 5;

/// The schema id and the datum of a registry-framed value.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match bytes.split_first_chunk::<HEADER_LEN>() {
        Some(([MAGIC, id @ ..], datum)) => Ok((u32::from_be_bytes(*id), datum)),
        _ => Err(DecodeError::NotFramed),
    }
}

/// Appends the header naming schema `id` to `out`; the datum follows.
pub fn write_header(id: u32, out: &mut Vec<u8>) {
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_output_record_name_is_the_schemas() {
        let schema = apache_avro::Schema::parse_str(crate::codec::TRAFFIC_AVERAGE_SCHEMA).unwrap();
        let name = schema.name().map(|n| n.fullname(None));
        assert_eq!(name.as_deref(), Some(crate::codec::TRAFFIC_AVERAGE_NAME));
    }

    #[test]
    fn a_header_round_trips_and_anything_else_is_not_framed() {
        let mut framed = Vec::new();
        write_header(0x0102_0304, &mut framed);
        framed.extend_from_slice(b"datum");
        assert_eq!(framed[..5], [0, 1, 2, 3, 4]);
        assert_eq!(split(&framed), Ok((0x0102_0304, &b"datum"[..])));
        assert_eq!(split(&[0, 0, 0, 0, 7]), Ok((7, &b""[..])));
        for bad in [
            &b""[..],
            &[0],
            &[0, 0, 0, 1],
            &[1, 0, 0, 0, 1, 2],
            b"{\"source\":1}",
        ] {
            assert_eq!(split(bad), Err(DecodeError::NotFramed), "{bad:?}");
        }
    }
}
