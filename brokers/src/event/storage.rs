//! The storage encoding of a [`CloudEvent`]: compact, versioned and length-prefixed.
//!
//! ```text
//! u8      format version (1)
//! u8      spec version: 0 = 0.3, 1 = 1.0
//! varint  attribute count
//!   varint name length, name bytes
//!   u8     tag: 0 string (varint length + UTF-8), 1 integer (zigzag varint), 2 boolean (u8)
//! u8      data present (0/1), then varint length + bytes
//! ```
//! Varints are unsigned LEB128. Decoding never trusts a length beyond the remaining input and
//! re-validates every attribute, so a corrupt record is an error, never a panic.

use bytes::Bytes;

use super::{AttrValue, CloudEvent, EventError, SpecVersion, check_attribute};

const FORMAT_VERSION: u8 = 1;
const TAG_STRING: u8 = 0;
const TAG_INTEGER: u8 = 1;
const TAG_BOOLEAN: u8 = 2;

pub(super) fn encode(event: &CloudEvent, out: &mut Vec<u8>) {
    out.reserve(encoded_len(event));
    out.push(FORMAT_VERSION);
    out.push(spec_byte(event.spec));
    put_varint(out, event.attributes.len() as u64);
    for (name, value) in &event.attributes {
        put_bytes(out, name.as_bytes());
        match value {
            AttrValue::String(s) => {
                out.push(TAG_STRING);
                put_bytes(out, s.as_bytes());
            }
            AttrValue::Integer(i) => {
                out.push(TAG_INTEGER);
                put_varint(out, zigzag(*i));
            }
            AttrValue::Boolean(b) => {
                out.push(TAG_BOOLEAN);
                out.push(u8::from(*b));
            }
        }
    }
    match &event.data {
        Some(data) => {
            out.push(1);
            put_bytes(out, data);
        }
        None => out.push(0),
    }
}

pub(super) fn encoded_len(event: &CloudEvent) -> usize {
    let attributes: usize = event
        .attributes
        .iter()
        .map(|(name, value)| {
            let value_len = match value {
                AttrValue::String(s) => bytes_len(s.len()),
                AttrValue::Integer(i) => varint_len(zigzag(*i)),
                AttrValue::Boolean(_) => 1,
            };
            bytes_len(name.len()) + 1 + value_len
        })
        .sum();
    let data = event.data.as_ref().map_or(0, |d| bytes_len(d.len()));
    2 + varint_len(event.attributes.len() as u64) + attributes + 1 + data
}

pub(super) fn decode(input: &[u8]) -> Result<CloudEvent, EventError> {
    let mut r = Reader { input, pos: 0 };
    let version = r.byte()?;
    if version != FORMAT_VERSION {
        return Err(corrupt(format!(
            "unknown storage format version {version}; written by a newer tidegate?"
        )));
    }
    let spec = match r.byte()? {
        0 => SpecVersion::V03,
        1 => SpecVersion::V10,
        other => return Err(corrupt(format!("unknown spec version tag {other}"))),
    };
    let mut event = CloudEvent::empty(spec);
    let count = r.varint()?;
    for _ in 0..count {
        let name = r.string()?;
        let value = match r.byte()? {
            TAG_STRING => AttrValue::String(r.string()?.to_owned()),
            TAG_INTEGER => AttrValue::Integer(unzigzag(r.varint()?)),
            TAG_BOOLEAN => match r.byte()? {
                0 => AttrValue::Boolean(false),
                1 => AttrValue::Boolean(true),
                other => return Err(corrupt(format!("invalid boolean byte {other}"))),
            },
            other => return Err(corrupt(format!("unknown value tag {other}"))),
        };
        check_attribute(spec, name, &value)?;
        if event.attributes.insert(name.to_owned(), value).is_some() {
            return Err(corrupt(format!("attribute {name:?} stored twice")));
        }
    }
    event.data = match r.byte()? {
        0 => None,
        1 => Some(Bytes::copy_from_slice(r.bytes()?)),
        other => return Err(corrupt(format!("invalid data flag {other}"))),
    };
    if r.pos != input.len() {
        return Err(corrupt(format!(
            "{} trailing bytes after the event",
            input.len() - r.pos
        )));
    }
    event.check_required()?;
    Ok(event)
}

fn corrupt(reason: impl Into<String>) -> EventError {
    EventError::invalid(
        "storage",
        format!("corrupt stored event: {}", reason.into()),
    )
}

fn spec_byte(spec: SpecVersion) -> u8 {
    match spec {
        SpecVersion::V03 => 0,
        SpecVersion::V10 => 1,
    }
}

fn zigzag(i: i64) -> u64 {
    ((i << 1) ^ (i >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn bytes_len(len: usize) -> usize {
    varint_len(len as u64) + len
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, EventError> {
        let b = *self
            .input
            .get(self.pos)
            .ok_or_else(|| corrupt("truncated record"))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, EventError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("varint longer than 64 bits"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], EventError> {
        let len = self.varint()?;
        let remaining = self.input.len() - self.pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= remaining)
            .ok_or_else(|| corrupt("length prefix beyond the end of the record"))?;
        let slice = &self.input[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    fn string(&mut self) -> Result<&'a str, EventError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| corrupt("string is not UTF-8"))
    }
}
