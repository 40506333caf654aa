//! One pass over a JSON text that validates all of it and records where the members the caller
//! asked for sit, without building anything.
//!
//! Every request body is read this way before it is forwarded, and batch answers are split
//! this way. serde_json with borrowed `RawValue`s did the same job in two or three passes (a
//! batch as an array of raw values, then each element as an object, then UTF-8 checks of each
//! raw value) and was the largest cost of a proxied request in the profile.
//!
//! The scanner accepts exactly the JSON that serde_json accepts (RFC 8259: no trailing commas,
//! no leading zeros, no control characters in strings, `\u` escapes as four hex digits), up to
//! a nesting depth the caller sets; a differential test and a fuzz target hold the two to the
//! same answers.
//!
//! Member names are read as the nodes behind livechain read them: escapes decoded (`"\u0069d"`
//! is `"id"`), and every wanted name also looked for in each spelling Go's `encoding/json`
//! takes for it ([`go_name_eq`]). Geth and Erigon decode requests with that package, which
//! matches object keys to struct fields without regard to case and lets the last matching key
//! win: `{"method":"eth_blockNumber","METHOD":"admin_addPeer"}` is `admin_addPeer` to geth. Such
//! spellings ([`Object::variants`]) and names given twice ([`Object::repeated`]) are reported
//! to the caller, who decides; nothing is silently picked from them.

use std::ops::Range;

/// Why a text was not scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not JSON (serde_json then says what is wrong with it).
    NotJson,
    /// Nested deeper than the caller's limit.
    TooDeep,
}

/// A whole JSON text: one value and whitespace around it.
#[derive(Debug, PartialEq)]
pub enum Document<const N: usize> {
    Object(Object<N>),
    Array(Vec<Element<N>>),
    /// A string, number or literal.
    Scalar,
}

/// An array element.
#[derive(Debug, PartialEq)]
pub enum Element<const N: usize> {
    Object(Object<N>),
    /// Any other value; its span.
    Other(Range<usize>),
}

/// An object, and for each wanted name what it holds under that name.
#[derive(Debug, PartialEq)]
pub struct Object<const N: usize> {
    pub span: Range<usize>,
    /// The value of the member spelled exactly as wanted (escapes decoded); the last one when
    /// there are several.
    pub fields: [Option<Range<usize>>; N],
    /// What else there is to know of its wanted names, when there is anything: boxed, as it
    /// is rare and objects are moved about on every request.
    odd: Option<Box<Odd<N>>>,
}

#[derive(Debug, PartialEq)]
struct Odd<const N: usize> {
    /// The name was given exactly more than once.
    repeated: [bool; N],
    /// The last member whose name is another spelling of the wanted one, to Go's decoder.
    variants: [Option<Variant>; N],
    /// A member name does not decode to Unicode (a lone surrogate escape such as `"\ud800"`):
    /// Go reads it as U+FFFD, serde_json refuses the whole text.
    bad_name: bool,
}

impl<const N: usize> Odd<N> {
    fn new() -> Box<Odd<N>> {
        Box::new(Odd {
            repeated: [false; N],
            variants: std::array::from_fn(|_| None),
            bad_name: false,
        })
    }
}

/// A member whose name is another spelling of a wanted name (`METHOD` for `method`).
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The name as written, between its quotes.
    pub key: Range<usize>,
    pub value: Range<usize>,
}

impl<const N: usize> Object<N> {
    /// Whether every wanted name appears at most once, in one spelling (and every name
    /// decodes).
    pub fn is_plain(&self) -> bool {
        self.odd.is_none()
    }

    /// Wanted name `k` was given exactly more than once.
    pub fn repeated(&self, k: usize) -> bool {
        self.odd.as_ref().is_some_and(|o| o.repeated[k])
    }

    /// The last member whose name is another spelling of wanted name `k`, to Go's decoder.
    pub fn variant(&self, k: usize) -> Option<&Variant> {
        self.odd.as_ref()?.variants[k].as_ref()
    }

    /// A member name does not decode to Unicode (a lone surrogate escape such as `"\ud800"`):
    /// Go reads it as U+FFFD, serde_json refuses the whole text.
    pub fn bad_name(&self) -> bool {
        self.odd.as_ref().is_some_and(|o| o.bad_name)
    }
}

/// Whether Go's `encoding/json` binds a member named `key` to a struct field named `name`
/// (ASCII): the names are equal under Unicode simple case folding. Only two characters outside
/// ASCII fold onto ASCII letters: `ſ` (U+017F) onto `s` and the Kelvin sign (U+212A) onto `k`.
/// `name` is folded too: `BLOCKNUMBER` is geth's `blockNumber`.
pub fn go_name_eq(key: &str, name: &str) -> bool {
    let mut wanted = name.bytes().map(|b| b.to_ascii_lowercase());
    for c in key.chars() {
        let folded = match c {
            'ſ' => b's',
            '\u{212A}' => b'k',
            c if c.is_ascii() => (c as u8).to_ascii_lowercase(),
            _ => return false,
        };
        if wanted.next() != Some(folded) {
            return false;
        }
    }
    wanted.next().is_none()
}

/// Scans `text` as a JSON document (UTF-8 checked along the way: a document it accepts is valid
/// UTF-8 throughout), nested at most `max_depth` deep, recording for each object at the top
/// level (the value itself, or the elements of a top-level array) what it has under `keys`.
pub fn document<const N: usize>(
    text: &[u8],
    keys: [&str; N],
    max_depth: usize,
) -> Result<Document<N>, Refused> {
    let mut c = Cursor::new(text, max_depth);
    c.ws();
    let doc = c.top(&keys);
    c.ws();
    match doc {
        Some(doc) if c.i == c.b.len() => Ok(doc),
        _ if c.too_deep => Err(Refused::TooDeep),
        _ => Err(Refused::NotJson),
    }
}

/// Nesting allowed in texts other than request bodies (params, upstream answers); deeper ones
/// go to serde_json.
pub const DEFAULT_DEPTH: usize = 128;

/// The `n`th element of the JSON array `text` (`Ok(None)` when it has fewer, or is not an
/// array); `Err` when `text` is not JSON or too deep.
pub fn array_element(text: &str, n: usize) -> Result<Option<&str>, GaveUp> {
    let mut c = Cursor::new(text.as_bytes(), DEFAULT_DEPTH);
    c.ws();
    if c.peek() != Some(b'[') {
        return c.whole(1).map(|()| None);
    }
    let mut found = None;
    let mut k = 0;
    c.array(1, |c| {
        let start = c.i;
        c.value(1)?;
        if k == n {
            found = Some(start..c.i);
        }
        k += 1;
        Some(())
    })
    .ok_or(GaveUp)?;
    c.ws();
    if c.i != c.b.len() {
        return Err(GaveUp);
    }
    Ok(found.map(|r| &text[r]))
}

/// The content of a JSON string written without escapes (`"abc"` gives `abc`).
pub fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['\\', '"'])).then_some(inner)
}

/// The scanner could not answer; serde_json must.
#[derive(Debug, PartialEq)]
pub struct GaveUp;

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
    max_depth: usize,
    /// Set when the scan stopped at the nesting limit.
    too_deep: bool,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes of `w` (8 bytes, little-endian) that end or escape a string, may not appear in
/// one, or start a multi-byte character (checked on its own), as high bits. Exact up to the first such byte, which is all a scan needs: the
/// borrows of the subtractions can only mark bytes above a byte that is really special.
fn special(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w;
    (zero_in(quote) | zero_in(backslash) | below_space | w) & HIGHS
}

impl<'a> Cursor<'a> {
    fn new(b: &'a [u8], max_depth: usize) -> Cursor<'a> {
        Cursor {
            b,
            i: 0,
            max_depth,
            too_deep: false,
        }
    }

    /// The document's one value, recording wanted members of top-level objects.
    fn top<const N: usize>(&mut self, keys: &[&str; N]) -> Option<Document<N>> {
        Some(match self.peek()? {
            b'{' => Document::Object(self.wanted(1, keys)?),
            b'[' => {
                let mut elements = Vec::new();
                self.array(1, |c| {
                    let el = if c.peek() == Some(b'{') {
                        Element::Object(c.wanted(2, keys)?)
                    } else {
                        let start = c.i;
                        // An element of the top-level array: what it opens is 2 deep.
                        c.value(1)?;
                        Element::Other(start..c.i)
                    };
                    elements.push(el);
                    Some(())
                })?;
                Document::Array(elements)
            }
            _ => {
                self.value(1)?;
                Document::Scalar
            }
        })
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// The rest of the text is one value and whitespace.
    fn whole(&mut self, depth: usize) -> Result<(), GaveUp> {
        self.value(depth).ok_or(GaveUp)?;
        self.ws();
        (self.i == self.b.len()).then_some(()).ok_or(GaveUp)
    }

    /// One value of any kind, at its first byte; `depth` is that of the array or object it is
    /// in (an array or object it opens is one deeper).
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth + 1, |_, _, _| Some(())),
            b'[' => self.array(depth + 1, |c| c.value(depth + 1)),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object, recording what it holds under `keys` (see [`Object`]).
    fn wanted<const N: usize>(&mut self, depth: usize, keys: &[&str; N]) -> Option<Object<N>> {
        let start = self.i;
        let mut fields: [Option<Range<usize>>; N] = std::array::from_fn(|_| None);
        let mut odd: Option<Box<Odd<N>>> = None;
        let text = self.b;
        self.object(depth, |key, escaped, value| {
            let raw = &text[key.clone()];
            // Nearly every key is one of the wanted names, written plainly.
            if !escaped {
                if let Some(k) = keys.iter().position(|k| k.as_bytes() == raw) {
                    if fields[k].replace(value).is_some() {
                        odd.get_or_insert_with(Odd::new).repeated[k] = true;
                    }
                    return Some(());
                }
            }
            let decoded;
            let name: &str = if escaped {
                // The raw key with its quotes is a JSON string the scan checked; only a lone
                // surrogate escape fails to decode.
                match serde_json::from_slice::<String>(&text[key.start - 1..key.end + 1]) {
                    Ok(d) => decoded = d,
                    Err(_) => {
                        odd.get_or_insert_with(Odd::new).bad_name = true;
                        return Some(());
                    }
                }
                &decoded
            } else {
                // The scan checked the UTF-8 of strings.
                std::str::from_utf8(raw).unwrap_or_default()
            };
            for (k, want) in keys.iter().enumerate() {
                if name == *want {
                    if fields[k].replace(value.clone()).is_some() {
                        odd.get_or_insert_with(Odd::new).repeated[k] = true;
                    }
                } else if go_name_eq(name, want) {
                    odd.get_or_insert_with(Odd::new).variants[k] = Some(Variant {
                        key: key.clone(),
                        value: value.clone(),
                    });
                }
            }
            Some(())
        })?;
        Some(Object {
            span: start..self.i,
            fields,
            odd,
        })
    }

    /// Steps into the object or array at the cursor (within the nesting limit); whether it is
    /// empty (its `close` byte consumed too).
    fn open(&mut self, depth: usize, close: u8) -> Option<bool> {
        if depth > self.max_depth {
            self.too_deep = true;
            return None;
        }
        self.i += 1;
        self.ws();
        Some(self.eat(close).is_some())
    }

    /// An object at `{`; `member` sees each key (its span between the quotes), whether the key
    /// has escapes, and the span of its value.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(Range<usize>, bool, Range<usize>) -> Option<()>,
    ) -> Option<()> {
        if self.open(depth, b'}')? {
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key_start = self.i + 1;
            let escaped = self.string()?;
            let key = key_start..self.i - 1;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let value_start = self.i;
            self.value(depth)?;
            member(key, escaped, value_start..self.i)?;
            if !self.more(b'}')? {
                return Some(());
            }
        }
    }
    /// An array at `[`; `element` consumes each element, starting at its first byte.
    fn array(
        &mut self,
        depth: usize,
        mut element: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if self.open(depth, b']')? {
            return Some(());
        }
        loop {
            element(self)?;
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    /// After a member or element: `true` past a `,` (another follows), `false` past `close`.
    fn more(&mut self, close: u8) -> Option<bool> {
        self.ws();
        let c = self.peek()?;
        self.i += 1;
        if c == b',' {
            self.ws();
            Some(true)
        } else {
            (c == close).then_some(false)
        }
    }

    /// A string at its opening quote; whether it has escapes.
    fn string(&mut self) -> Option<bool> {
        self.i += 1;
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    self.escape()?;
                }
                0x80.. => self.multibyte()?,
                // A control character.
                _ => return None,
            }
        }
    }

    /// Moves to the next byte that ends or escapes a string or may not be in one (or the end).
    fn skip_plain(&mut self) {
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let mut w = [0; 8];
            w.copy_from_slice(chunk);
            let found = special(u64::from_le_bytes(w));
            if found != 0 {
                self.i += found.trailing_zeros() as usize / 8;
                return;
            }
            self.i += 8;
        }
        while self
            .peek()
            .is_some_and(|c| c != b'"' && c != b'\\' && (0x20..0x80).contains(&c))
        {
            self.i += 1;
        }
    }

    /// One UTF-8 encoded character of two to four bytes, at its first byte.
    fn multibyte(&mut self) -> Option<()> {
        let len = match self.peek()? {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return None,
        };
        // The standard check: no overlong forms, surrogates or code points past U+10FFFF.
        std::str::from_utf8(self.b.get(self.i..self.i + len)?).ok()?;
        self.i += len;
        Some(())
    }

    /// The rest of an escape, after its backslash.
    fn escape(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
            b'u' => {
                let hex = self.b.get(self.i + 1..self.i + 5)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                self.i += 5;
            }
            _ => return None,
        }
        Some(())
    }

    fn word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    fn digits(&mut self) -> Option<()> {
        if !self.peek()?.is_ascii_digit() {
            return None;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        Some(())
    }

    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        if self.eat(b'0').is_none() {
            self.digits()?;
        }
        if self.eat(b'.').is_some() {
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits()?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn valid(text: &str) -> bool {
        document(text.as_bytes(), [], DEFAULT_DEPTH).is_ok()
    }

    #[test]
    fn accepts_json_and_rejects_what_is_not() {
        for ok in [
            r#"{}"#,
            r#"[]"#,
            r#" {"a" : [1, -2.5e+3, 0, 0.0, 1E9, true, false, null, "x\"\\\/\b\f\n\r\t\u00e9"]} "#,
            r#""é ünïcödé 😀""#,
            "0",
            "-0.0e-0",
            r#"[[[[{"a":{"b":[]}}]]]]"#,
            "\t\r\n[1]\n",
        ] {
            assert!(valid(ok), "{ok}");
        }
        for bad in [
            "",
            " ",
            "{",
            "[1,]",
            r#"{"a":1,}"#,
            r#"{"a"}"#,
            r#"{a:1}"#,
            "01",
            "-",
            "1.",
            "1e",
            ".5",
            "+1",
            "tru",
            "nul",
            "[1 2]",
            r#""\x""#,
            r#""\u12g4""#,
            "\"a\u{1}b\"",
            r#""open"#,
            "{} {}",
            "[1]x",
            "\u{c}[]",
            "NaN",
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn utf_8_is_checked_in_strings_and_nothing_else_may_be_non_ascii() {
        for ok in [
            "\"é\"",
            "\"😀 and 中文\"",
            "[\"\u{10FFFF}\", \"\u{7ff}\u{800}\"]",
        ] {
            assert!(valid(ok), "{ok}");
        }
        let bad: [&[u8]; 8] = [
            b"\"\x80\"",
            b"\"\xc0\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\"\xe2\x82\"",
            b"\"ab\xe2\x82",
            b"[1,\xc3\xa9]",
            b"{\"a\":1}\xc2\xa0",
        ];
        for b in bad {
            assert!(document(b, [], DEFAULT_DEPTH).is_err(), "{b:?}");
            assert!(
                std::str::from_utf8(b).is_err() || serde_json::from_slice::<&RawValue>(b).is_err()
            );
        }
    }

    #[test]
    fn wanted_members_are_found_at_the_top_level_only() {
        let text = r#"{"id":7, "method" :"m","params":[{"id":1}],"x":{"method":2}}"#;
        let Ok(Document::Object(o)) = document(
            text.as_bytes(),
            ["id", "method", "params", "jsonrpc"],
            DEFAULT_DEPTH,
        ) else {
            panic!("object");
        };
        let got: Vec<Option<&str>> = o
            .fields
            .iter()
            .map(|r| r.clone().map(|r| &text[r]))
            .collect();
        assert_eq!(got, [Some("7"), Some("\"m\""), Some(r#"[{"id":1}]"#), None]);
        assert_eq!(o.span, 0..text.len());
    }

    fn object(text: &str, keys: [&str; 2]) -> Object<2> {
        match document(text.as_bytes(), keys, DEFAULT_DEPTH) {
            Ok(Document::Object(o)) => o,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn escaped_names_are_decoded_and_repeated_names_reported() {
        let text = r#"{"\u0069d":1,"method":"m"}"#;
        let o = object(text, ["id", "method"]);
        assert_eq!(o.fields[0].clone().map(|r| &text[r]), Some("1"));
        assert!(o.is_plain());
        let text = r#"{"id":1,"id":2,"m\u0065thod":"a","method":"b"}"#;
        let o = object(text, ["id", "method"]);
        assert!(o.repeated(0) && o.repeated(1));
        // The last one, as every decoder that does not refuse them reads it.
        assert_eq!(o.fields[0].clone().map(|r| &text[r]), Some("2"));
        assert_eq!(o.fields[1].clone().map(|r| &text[r]), Some("\"b\""));
        assert!(!o.is_plain());
    }

    #[test]
    fn other_spellings_of_a_name_are_reported_as_go_reads_them() {
        for key in ["METHOD", "Method", "mEtHoD", "m\\u0045thod"] {
            let text = format!(r#"{{"method":"a","{key}":"b","params":[]}}"#);
            let o = object(&text, ["method", "params"]);
            let v = o.variant(0).cloned().unwrap_or_else(|| panic!("{key}"));
            assert_eq!(&text[v.value], "\"b\"", "{key}");
            assert_eq!(o.fields[0].clone().map(|r| &text[r]), Some("\"a\""));
            assert!(o.variant(1).is_none());
        }
        // `ſ` folds onto `s` and the Kelvin sign onto `k` for Go; other look-alikes do not.
        let text = "{\"param\u{17f}\":1,\"\u{212a}ey\":2,\"paramş\":3}";
        let o = object(text, ["params", "key"]);
        assert!(o.variant(0).is_some() && o.variant(1).is_some());
        assert!(!go_name_eq("paramş", "params"));
        assert!(!go_name_eq("method ", "method"));
        assert!(!go_name_eq("metho", "method"));
        assert!(go_name_eq("ID", "id"));
        assert!(go_name_eq("BLOCKNUMBER", "blockNumber"));
        assert!(go_name_eq("blocknumber", "blockNumber"));
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused_as_such() {
        let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(document(at(10).as_bytes(), [], 10).is_ok());
        assert_eq!(document(at(11).as_bytes(), [], 10), Err(Refused::TooDeep));
        let deep = format!(r#"{{"a":{}}}"#, at(10));
        assert_eq!(document(deep.as_bytes(), [], 10), Err(Refused::TooDeep));
        assert_eq!(document(b"[1,", [], 10), Err(Refused::NotJson));
        // Nothing ever recurses past the limit: a megabyte of brackets is refused, not a crash.
        let huge = "[".repeat(1 << 20);
        assert_eq!(document(huge.as_bytes(), [], 128), Err(Refused::TooDeep));
    }

    #[test]
    fn array_elements_by_position() {
        let params = r#" ["0xabc", {"to":"0x1"} , "latest"] "#;
        assert_eq!(array_element(params, 0), Ok(Some("\"0xabc\"")));
        assert_eq!(array_element(params, 1), Ok(Some(r#"{"to":"0x1"}"#)));
        assert_eq!(array_element(params, 2), Ok(Some("\"latest\"")));
        assert_eq!(array_element(params, 3), Ok(None));
        assert_eq!(array_element(r#"{"a":1}"#, 0), Ok(None));
        assert_eq!(array_element("[1,", 0), Err(GaveUp));
    }

    #[test]
    fn the_eight_byte_check_finds_every_special_byte_at_every_position() {
        for special_byte in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xc3, 0xff] {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = special_byte;
                let found = special(u64::from_le_bytes(w));
                assert_eq!(found.trailing_zeros() / 8, pos as u32, "{special_byte:#x}");
                // Earlier special bytes are found first.
                w[7] = b'"';
                let found = special(u64::from_le_bytes(w));
                assert_eq!(found.trailing_zeros() / 8, pos as u32, "{special_byte:#x}");
            }
        }
        for plain in [
            b"abcdefgh",
            b"0x12 !#~",
            &[0x20, 0x7f, b'\'', b'/', b'[', b']', b'{', b'}'],
        ] {
            assert_eq!(special(u64::from_le_bytes(*plain)), 0, "{plain:?}");
        }
    }
}
