//! The CBOR form of the payloads: one map per payload, with the JSON field names as text keys.
//!
//! Readers accept definite and indefinite lengths, skip fields they do not know (of any type,
//! however nested: minicbor's `skip` walks them without recursion) and refuse trailing bytes.
//! Messages name CBOR types and byte offsets only, never payload content.

use std::collections::BTreeMap;

use minicbor::data::Type;
use minicbor::decode::{Decode, Decoder, Error as DecodeError};
use minicbor::Encoder;
use zeroize::Zeroizing;

/// A decoded top-level map: the text keys and where each value lies in the payload.
pub(crate) struct CborMap<'b> {
    input: &'b [u8],
    fields: Vec<(String, Span)>,
}

/// Byte range of one encoded value.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

impl<'b, C> Decode<'b, C> for Span {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, DecodeError> {
        let start = d.position();
        d.skip()?;
        Ok(Span {
            start,
            end: d.position(),
        })
    }
}

/// A map key: text (definite or indefinite) or, for any other type, `None`.
struct Key(Option<String>);

impl<'b, C> Decode<'b, C> for Key {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, DecodeError> {
        match d.datatype()? {
            Type::String | Type::StringIndef => Ok(Key(Some(text(d)?))),
            _ => {
                d.skip()?;
                Ok(Key(None))
            }
        }
    }
}

/// A text value, definite or indefinite.
struct Text(String);

impl<'b, C> Decode<'b, C> for Text {
    fn decode(d: &mut Decoder<'b>, _: &mut C) -> Result<Self, DecodeError> {
        text(d).map(Text)
    }
}

fn text(d: &mut Decoder<'_>) -> Result<String, DecodeError> {
    let mut out = String::new();
    for chunk in d.str_iter()? {
        out.push_str(chunk?);
    }
    Ok(out)
}

/// Where decoding stopped. minicbor's own messages are not used: their formatting code costs
/// more of the library's size than the rest of the codec.
fn describe(e: &DecodeError) -> String {
    match e.position() {
        Some(at) if e.is_end_of_input() => format!("truncated at byte {at}"),
        Some(at) => format!("unexpected item at byte {at}"),
        None if e.is_end_of_input() => "truncated".to_owned(),
        None => "unexpected item".to_owned(),
    }
}

/// Why a payload or one of its fields is not what was expected.
pub(crate) type CborError = String;

impl<'b> CborMap<'b> {
    /// Reads `input` as exactly one CBOR map.
    pub(crate) fn parse(input: &'b [u8]) -> Result<CborMap<'b>, CborError> {
        let mut d = Decoder::new(input);
        match d.datatype() {
            Ok(Type::Map | Type::MapIndef) => {}
            Ok(_) => return Err("the payload is not a CBOR map".to_owned()),
            Err(e) => return Err(format!("the payload is not CBOR: {}", describe(&e))),
        }
        let mut fields = Vec::new();
        for entry in d
            .map_iter::<Key, Span>()
            .map_err(|e| format!("the payload is not a CBOR map: {}", describe(&e)))?
        {
            let (key, span) =
                entry.map_err(|e| format!("the CBOR map is malformed: {}", describe(&e)))?;
            if let Key(Some(key)) = key {
                fields.push((key, span));
            }
        }
        if d.position() != input.len() {
            return Err(format!(
                "{} bytes follow the CBOR map",
                input.len() - d.position()
            ));
        }
        Ok(CborMap { input, fields })
    }

    fn value(&self, key: &str) -> Option<Decoder<'b>> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, span)| Decoder::new(&self.input[span.start..span.end]))
    }

    /// The text field `key`, if present.
    pub(crate) fn text(&self, key: &str) -> Result<Option<String>, CborError> {
        let Some(mut d) = self.value(key) else {
            return Ok(None);
        };
        text(&mut d)
            .map(Some)
            .map_err(|e| format!("{key} is not CBOR text: {}", describe(&e)))
    }

    /// The text field `key`, which must be present.
    pub(crate) fn required_text(&self, key: &str) -> Result<String, CborError> {
        self.text(key)?.ok_or_else(|| format!("{key} is missing"))
    }

    /// The text field `key` copied into one zeroizing buffer sized up front, so that no
    /// reallocation leaves a copy behind; the only other copy is in the payload.
    pub(crate) fn secret_text(&self, key: &str) -> Result<Zeroizing<String>, CborError> {
        let mut d = self.value(key).ok_or_else(|| format!("{key} is missing"))?;
        let not_text = |e: DecodeError| format!("{key} is not CBOR text: {}", describe(&e));
        let mut len = 0usize;
        for chunk in d.clone().str_iter().map_err(not_text)? {
            len = len.saturating_add(chunk.map_err(not_text)?.len());
        }
        let mut out = Zeroizing::new(String::with_capacity(len));
        for chunk in d.str_iter().map_err(not_text)? {
            out.push_str(chunk.map_err(not_text)?);
        }
        Ok(out)
    }

    /// The map of text to text `key`; absent or null is empty.
    pub(crate) fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, CborError> {
        let Some(mut d) = self.value(key) else {
            return Ok(BTreeMap::new());
        };
        if matches!(d.datatype(), Ok(Type::Null)) {
            return Ok(BTreeMap::new());
        }
        let bad =
            |e: DecodeError| format!("{key} is not a CBOR map of text to text: {}", describe(&e));
        d.map_iter::<Text, Text>()
            .map_err(bad)?
            .map(|entry| entry.map(|(k, v)| (k.0, v.0)).map_err(bad))
            .collect()
    }

    /// Whether `key` is missing or CBOR null.
    pub(crate) fn is_absent_or_null(&self, key: &str) -> bool {
        self.value(key)
            .is_none_or(|d| matches!(d.datatype(), Ok(Type::Null)))
    }

    /// The integer field `key`, or text holding one; anything else is `None`.
    pub(crate) fn int(&self, key: &str) -> Option<i64> {
        let mut d = self.value(key)?;
        match d.datatype().ok()? {
            Type::String | Type::StringIndef => text(&mut d).ok()?.trim().parse().ok(),
            _ => d.i64().ok(),
        }
    }
}

/// Builds a CBOR map of text keys.
pub(crate) struct MapWriter {
    encoder: Encoder<Vec<u8>>,
}

impl MapWriter {
    /// A map of `len` entries.
    pub(crate) fn new(len: u64) -> MapWriter {
        let mut encoder = Encoder::new(Vec::new());
        // Writing into a Vec cannot fail (its error type is Infallible).
        let _ = encoder.map(len);
        MapWriter { encoder }
    }

    pub(crate) fn text(mut self, key: &str, value: &str) -> MapWriter {
        let _ = self.encoder.str(key).and_then(|e| e.str(value));
        self
    }

    pub(crate) fn string_map(mut self, key: &str, map: &BTreeMap<String, String>) -> MapWriter {
        let _ = self.encoder.str(key).and_then(|e| e.map(map.len() as u64));
        for (k, v) in map {
            let _ = self.encoder.str(k).and_then(|e| e.str(v));
        }
        self
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.encoder.into_writer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definite_and_indefinite_forms_read_alike() {
        // {"a": "xy", "m": {"k": "v"}, "n": 7}, definite.
        let definite = b"\xa3\x61a\x62xy\x61m\xa1\x61k\x61v\x61n\x07";
        // The same with an indefinite map, an indefinite text value and an indefinite inner map.
        let indefinite = b"\xbf\x61a\x7f\x61x\x61y\xff\x61m\xbf\x61k\x61v\xff\x61n\x07\xff";
        for input in [&definite[..], &indefinite[..]] {
            let map = CborMap::parse(input).unwrap();
            assert_eq!(map.required_text("a").unwrap(), "xy");
            assert_eq!(map.secret_text("a").unwrap().as_str(), "xy");
            assert_eq!(map.string_map("m").unwrap()["k"], "v");
            assert_eq!(map.int("n"), Some(7));
            assert_eq!(map.text("absent").unwrap(), None);
            assert!(map.string_map("absent").unwrap().is_empty());
        }
    }

    #[test]
    fn unknown_fields_of_any_shape_are_skipped() {
        // {1: [1, {"x": h'00'}], "a": "b", "t": 1(2)}
        let input = b"\xa3\x01\x82\x01\xa1\x61x\x41\x00\x61a\x61b\x61t\xc1\x02";
        let map = CborMap::parse(input).unwrap();
        assert_eq!(map.required_text("a").unwrap(), "b");
    }

    #[test]
    fn malformed_input_is_refused() {
        for bad in [
            &b""[..],
            b"\x80",                  // an array
            b"\x61a",                 // text
            b"\xa1\x61a",             // value missing
            b"\xa1\x61a\x61b\x00",    // trailing byte
            b"\xbf\x61a\x61b",        // no break
            b"\xa1\x62a",             // truncated key
            b"\xa1\x61a\x62\xff\xfe", // invalid UTF-8
        ] {
            assert!(
                CborMap::parse(bad)
                    .and_then(|m| m.required_text("a"))
                    .is_err(),
                "{bad:x?}"
            );
        }
        let map = CborMap::parse(b"\xa2\x61a\x05\x61m\xa1\x61k\x01").unwrap();
        assert!(map.required_text("a").is_err());
        assert!(map.secret_text("a").is_err());
        assert!(map.string_map("m").is_err());
    }

    #[test]
    fn deep_nesting_in_an_unknown_field_does_not_recurse() {
        let mut input = b"\xa1\x61z".to_vec();
        input.extend(std::iter::repeat_n(0x81u8, 100_000));
        input.push(0x00);
        assert!(CborMap::parse(&input).is_ok());
    }

    #[test]
    fn writer_output_reads_back() {
        let params: BTreeMap<String, String> = [("k".into(), "v".into())].into();
        let bytes = MapWriter::new(2)
            .text("a", "b")
            .string_map("m", &params)
            .finish();
        assert_eq!(bytes, b"\xa2\x61a\x61b\x61m\xa1\x61k\x61v");
        let map = CborMap::parse(&bytes).unwrap();
        assert_eq!(map.string_map("m").unwrap(), params);
    }
}
