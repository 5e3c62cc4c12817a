//! A DER codec, just what the library needs: split elements off the front of the input,
//! and write lengths, unsigned INTEGERs and wrapped elements.

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;

/// Splits one DER element off `input`: (tag, content, rest). Definite lengths up to 4 bytes.
pub(crate) fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Like [`der_next`], but the element must carry `tag`.
pub(crate) fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match der_next(input)? {
        (t, content, rest) if t == tag => Some((content, rest)),
        _ => None,
    }
}

/// Appends a DER length.
fn der_push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else if len < 0x1_0000 {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    } else {
        out.extend_from_slice(&[0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]);
    }
}

/// The DER INTEGER of an unsigned big-endian number.
pub(crate) fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let digits = if start == bytes.len() {
        &[0u8][..]
    } else {
        &bytes[start..]
    };
    let pad = digits[0] & 0x80 != 0;
    let mut out = vec![TAG_INTEGER];
    der_push_len(&mut out, digits.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

/// ECDSA signature as fixed-width r || s (PKCS#11, most secure elements) to DER Ecdsa-Sig-Value.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8]) -> Vec<u8> {
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = der_uint(r);
    body.extend(der_uint(s));
    let mut out = vec![TAG_SEQUENCE];
    der_push_len(&mut out, body.len());
    out.extend(body);
    out
}

/// A DER element: `tag`, length, `content`.
pub(crate) fn der_wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_push_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_integers_are_minimal() {
        assert_eq!(der_uint(&[0, 0, 5]), vec![2, 1, 5]);
        assert_eq!(der_uint(&[0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(der_uint(&[0, 0]), vec![2, 1, 0]);
        let long = der_uint(&[0xff; 200]);
        assert_eq!(&long[..4], &[2, 0x81, 201, 0]);
    }

    #[test]
    fn elements_split_and_wrap() {
        let e = der_wrap(TAG_SEQUENCE, &[1, 2, 3]);
        assert_eq!(
            der_next(&[e.clone(), vec![9]].concat()),
            Some((TAG_SEQUENCE, &[1u8, 2, 3][..], &[9u8][..]))
        );
        assert_eq!(
            der_expect(&e, TAG_SEQUENCE),
            Some((&[1u8, 2, 3][..], &[][..]))
        );
        assert_eq!(der_expect(&e, TAG_OID), None);
        assert_eq!(der_next(&[0x30, 0x05, 0x00]), None);
        let r_s = [[0x80u8; 32], [1u8; 32]].concat();
        let sig = ecdsa_raw_to_der(&r_s);
        assert_eq!(sig[0], TAG_SEQUENCE);
        assert_eq!(&sig[2..5], &[TAG_INTEGER, 33, 0]);
    }
}
