//! The reads of a resolution plan's steps: integers and floats with their promotion, and
//! stepping over a writer-only value of any type, bounded by the bytes left.

use super::{Read, Skip};
use crate::codec::{AvroReader, DecodeError};

impl Skip {
    /// Whether skipping one value may consume no bytes (bounds an array's loop otherwise).
    fn may_be_empty(&self) -> bool {
        match self {
            Skip::Nothing => true,
            Skip::Fixed(size) => *size == 0,
            Skip::Record(fields) => fields.iter().all(Skip::may_be_empty),
            Skip::Union(_) | Skip::Boolean | Skip::Varint | Skip::LengthPrefixed | Skip::Utf8 => {
                false
            }
            Skip::Array(_) | Skip::Map(_) | Skip::Enum(_) => false,
        }
    }
}

impl<'a> AvroReader<'a> {
    pub(super) fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.rest.len() {
            return Err(DecodeError::Avro("truncated value"));
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn length(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(self.long()?).map_err(|_| DecodeError::Avro("negative length"))
    }

    fn int(&mut self) -> Result<i32, DecodeError> {
        i32::try_from(self.long()?).map_err(|_| DecodeError::Avro("int out of range"))
    }

    pub(super) fn integral(&mut self, read: Read) -> Result<i64, DecodeError> {
        match read {
            Read::Int => self.int().map(i64::from),
            _ => self.long(),
        }
    }

    pub(super) fn number(&mut self, read: Read) -> Result<f64, DecodeError> {
        Ok(match read {
            Read::Int => f64::from(self.int()?),
            Read::Long => self.long()? as f64,
            Read::Float => f64::from(f32::from_le_bytes(
                self.take(4)?
                    .try_into()
                    .map_err(|_| DecodeError::Avro("truncated float"))?,
            )),
            Read::Double | Read::String => self.double()?,
        })
    }

    /// Steps over one value; block-encoded arrays and maps are bounded by the bytes left.
    pub(super) fn skip(&mut self, skip: &Skip) -> Result<(), DecodeError> {
        match skip {
            Skip::Nothing => {}
            Skip::Boolean => match self.take(1)? {
                [0 | 1] => {}
                _ => return Err(DecodeError::Avro("invalid boolean")),
            },
            Skip::Varint => {
                self.long()?;
            }
            Skip::Fixed(size) => {
                self.take(*size)?;
            }
            Skip::LengthPrefixed => {
                let len = self.length()?;
                self.take(len)?;
            }
            Skip::Utf8 => {
                self.string()?;
            }
            Skip::Enum(symbols) => {
                let index = self.long()?;
                if usize::try_from(index).map_or(true, |i| i >= *symbols) {
                    return Err(DecodeError::Avro("enum index out of range"));
                }
            }
            Skip::Array(item) => self.skip_blocks(item, false)?,
            Skip::Map(value) => self.skip_blocks(value, true)?,
            Skip::Union(branches) => {
                let index = self.long()?;
                let branch = usize::try_from(index)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or(DecodeError::Avro("union branch index out of range"))?;
                self.skip(branch)?;
            }
            Skip::Record(fields) => {
                for field in fields {
                    self.skip(field)?;
                }
            }
        }
        Ok(())
    }

    /// Steps over the blocks of an array or map. A block with a negative count carries its byte
    /// size too: its items are still stepped over one by one (as apache-avro reads them) and must
    /// take exactly that size, so a datum whose sizes and items disagree is refused.
    fn skip_blocks(&mut self, item: &Skip, keyed: bool) -> Result<(), DecodeError> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            let size = if count < 0 {
                Some(self.length()?)
            } else {
                None
            };
            let before = self.rest.len();
            let count = count.unsigned_abs();
            if keyed || !item.may_be_empty() {
                if count > self.rest.len() as u64 {
                    return Err(DecodeError::Avro("block count exceeds the bytes left"));
                }
                for _ in 0..count {
                    if keyed {
                        self.string()?; // the key
                    }
                    self.skip(item)?;
                }
            } // else items of no bytes: nothing to step over, however many
            if size.is_some_and(|size| size != before - self.rest.len()) {
                return Err(DecodeError::Avro("block size does not match its items"));
            }
        }
    }
}
