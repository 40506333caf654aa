//! A strict RLP reader for the few shapes a signed transaction has. It accepts only the canonical
//! encoding, as go-ethereum's decoder does, because a node decodes a raw transaction that way: an
//! encoding it would refuse must be refused here too, and for an accepted one the bytes of each
//! field are already its canonical encoding, so signing payloads can be hashed from slices of the
//! input without re-encoding anything.
//!
//! It never allocates: items are slices of the input, and every length is checked against the
//! bytes that are actually there before it is used. It does not recurse on its own; callers walk
//! lists to the fixed depth of their schema.

/// What went wrong, for `TxError::Rlp`.
pub type Error = &'static str;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    List,
}

/// One item: its kind, its payload (a string's bytes, or a list's encoded items), and the whole
/// encoding including the header.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub kind: Kind,
    pub payload: &'a [u8],
    pub raw: &'a [u8],
}

/// The item at the front of `input`, and what follows it.
pub fn next(input: &[u8]) -> Result<(Item<'_>, &[u8]), Error> {
    let (&b, after) = input
        .split_first()
        .ok_or("input ends where an item should start")?;
    let (kind, header, len) = match b {
        // A single byte below 0x80 is its own encoding.
        0x00..=0x7f => {
            return Ok((
                Item {
                    kind: Kind::Str,
                    payload: &input[..1],
                    raw: &input[..1],
                },
                after,
            ))
        }
        0x80..=0xb7 => (Kind::Str, 1, usize::from(b - 0x80)),
        0xb8..=0xbf => (
            Kind::Str,
            1 + usize::from(b - 0xb7),
            long_len(after, b - 0xb7)?,
        ),
        0xc0..=0xf7 => (Kind::List, 1, usize::from(b - 0xc0)),
        0xf8..=0xff => (
            Kind::List,
            1 + usize::from(b - 0xf7),
            long_len(after, b - 0xf7)?,
        ),
    };
    // `long_len` checked that the length bytes are there; `header` is at most 9.
    let body = &input[header..];
    if len > body.len() {
        return Err("item is longer than the input left");
    }
    let payload = &body[..len];
    // 0x81 0x05 says what 0x05 alone says; geth refuses the longer form.
    if kind == Kind::Str && header == 1 && len == 1 && payload[0] < 0x80 {
        return Err("single byte below 0x80 wrapped in a string header");
    }
    Ok((
        Item {
            kind,
            payload,
            raw: &input[..header + len],
        },
        &body[len..],
    ))
}

/// The length of a long-form item from its `n` big-endian length bytes at the front of `after`.
fn long_len(after: &[u8], n: u8) -> Result<usize, Error> {
    let bytes = after
        .get(..usize::from(n))
        .ok_or("input ends inside a length")?;
    if bytes[0] == 0 {
        return Err("length with leading zero bytes");
    }
    let mut len: u64 = 0;
    for &d in bytes {
        // At most 8 bytes: this cannot overflow a u64.
        len = (len << 8) | u64::from(d);
    }
    if len < 56 {
        return Err("long length header for a length under 56");
    }
    // A length beyond the address space cannot fit the input either.
    usize::try_from(len).map_err(|_| "item is longer than the input left")
}

/// The one item that `input` must be, nothing after it.
pub fn single(input: &[u8]) -> Result<Item<'_>, Error> {
    let (item, rest) = next(input)?;
    if !rest.is_empty() {
        return Err("trailing bytes after the transaction");
    }
    Ok(item)
}

/// The items of a list's payload, in order.
#[derive(Debug, Clone, Copy)]
pub struct Items<'a> {
    rest: &'a [u8],
}

impl<'a> Items<'a> {
    pub fn new(payload: &'a [u8]) -> Self {
        Items { rest: payload }
    }

    /// The next item; `None` at the end of the list.
    pub fn next_item(&mut self) -> Result<Option<Item<'a>>, Error> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (item, rest) = next(self.rest)?;
        self.rest = rest;
        Ok(Some(item))
    }

    /// The encoded items not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// The kind of the next item without reading it; `None` at the end of the list.
    pub fn peek_kind(&self) -> Option<Kind> {
        self.rest
            .first()
            .map(|&b| if b < 0xc0 { Kind::Str } else { Kind::List })
    }
}

/// The header of a list whose payload is `len` bytes, written to the front of `out`; returns how
/// many bytes it took (at most 9).
pub fn list_header(len: usize, out: &mut [u8; 9]) -> usize {
    if len < 56 {
        // `len < 56` fits a byte.
        out[0] = 0xc0 + len as u8;
        return 1;
    }
    let be = (len as u64).to_be_bytes();
    let skip = be.iter().take_while(|&&d| d == 0).count();
    let n = be.len() - skip;
    // `n` is 1..=8.
    out[0] = 0xf7 + n as u8;
    out[1..=n].copy_from_slice(&be[skip..]);
    1 + n
}

/// The canonical encoding of the integer `v`, written to the front of `out`; returns its length.
pub fn uint(v: u64, out: &mut [u8; 9]) -> usize {
    if v == 0 {
        out[0] = 0x80;
        return 1;
    }
    if v < 0x80 {
        out[0] = v as u8;
        return 1;
    }
    let be = v.to_be_bytes();
    let skip = be.iter().take_while(|&&d| d == 0).count();
    let n = be.len() - skip;
    out[0] = 0x80 + n as u8;
    out[1..=n].copy_from_slice(&be[skip..]);
    1 + n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Result<(Kind, Vec<u8>), Error> {
        let item = single(input)?;
        Ok((item.kind, item.payload.to_vec()))
    }

    #[test]
    fn canonical_items() {
        assert_eq!(one(&[0x05]), Ok((Kind::Str, vec![5])));
        assert_eq!(one(&[0x00]), Ok((Kind::Str, vec![0])));
        assert_eq!(one(&[0x80]), Ok((Kind::Str, vec![])));
        assert_eq!(one(&[0x81, 0x80]), Ok((Kind::Str, vec![0x80])));
        assert_eq!(one(&[0xc0]), Ok((Kind::List, vec![])));
        assert_eq!(one(&[0xc2, 0x01, 0x80]), Ok((Kind::List, vec![1, 0x80])));
        let mut long = vec![0xb8, 56];
        long.extend([7u8; 56]);
        assert_eq!(one(&long), Ok((Kind::Str, vec![7; 56])));
        let mut long = vec![0xf9, 0x01, 0x00];
        long.extend([1u8; 256]);
        assert_eq!(one(&long), Ok((Kind::List, vec![1; 256])));
    }

    #[test]
    fn non_canonical_and_short_items() {
        // A byte below 0x80 must stand alone.
        assert!(one(&[0x81, 0x05]).is_err());
        // Long form for a short length, and a length with a leading zero.
        let mut short = vec![0xb8, 55];
        short.extend([7u8; 55]);
        assert!(one(&short).is_err());
        let mut zero = vec![0xb9, 0x00, 56];
        zero.extend([7u8; 56]);
        assert!(one(&zero).is_err());
        let mut list = vec![0xf8, 2, 1, 2];
        assert!(one(&list).is_err());
        list[1] = 56;
        assert!(one(&list).is_err());
        // Truncated: no item, inside a length, inside a payload.
        assert!(one(&[]).is_err());
        assert!(one(&[0xb9, 0x01]).is_err());
        assert!(one(&[0x82, 0x01]).is_err());
        assert!(one(&[0xc3, 0x01, 0x02]).is_err());
        // A length near 2^64 is refused before anything is read at it.
        assert!(one(&[0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(one(&[0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
        // Trailing bytes.
        assert!(one(&[0x80, 0x80]).is_err());
    }

    #[test]
    fn encodes_headers_and_integers() {
        let mut out = [0u8; 9];
        let n = list_header(3, &mut out);
        assert_eq!(&out[..n], &[0xc3]);
        let n = list_header(55, &mut out);
        assert_eq!(&out[..n], &[0xf7]);
        let n = list_header(56, &mut out);
        assert_eq!(&out[..n], &[0xf8, 56]);
        let n = list_header(0x1_0000, &mut out);
        assert_eq!(&out[..n], &[0xfa, 1, 0, 0]);
        for (v, enc) in [
            (0u64, &[0x80][..]),
            (1, &[0x01]),
            (0x7f, &[0x7f]),
            (0x80, &[0x81, 0x80]),
            (31337, &[0x82, 0x7a, 0x69]),
            (
                u64::MAX,
                &[0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        ] {
            let n = uint(v, &mut out);
            assert_eq!(&out[..n], enc, "{v}");
        }
    }
}
