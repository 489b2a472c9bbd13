//! PostgreSQL client encodings as tollgate reads them: which names PostgreSQL accepts (with its
//! aliases), which of them tollgate decodes exactly as the server does, and the decoding and
//! encoding themselves (`encoding_rs` for the WHATWG encodings, ISO-8859-1 by hand).
//!
//! The analyser must see the statement the server will run, so a client's bytes are decoded
//! exactly as the server decodes them, and refused where that cannot be guaranteed:
//! - Client-only encodings in which an ASCII byte can be the second byte of a multibyte
//!   character (SJIS, SHIFT_JIS_2004, BIG5, GBK, GB18030, UHC, JOHAB) are refused: a quote or a
//!   backslash swallowed by a character is the classic injection through an encoding.
//! - Encodings `encoding_rs` does not implement (EUC_TW, EUC_JIS_2004, MULE_INTERNAL) are refused.
//! - Where a mapping of `encoding_rs` differs from PostgreSQL's (checked byte for byte against a
//!   real server by `tests/pg_encodings.rs`), the character is refused rather than guessed.
//!
//! Text that is pure ASCII reads the same in every PostgreSQL client encoding (all of them are
//! ASCII supersets, and in none of them is a byte below 0x80 part of a multibyte character
//! unless a byte of 0x80 or above leads it): such text needs no decoding at all.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// How the bytes of one encoding become text.
#[derive(Debug, Clone, Copy)]
enum Codec {
    Utf8,
    /// ISO-8859-1: byte n is U+00nn (WHATWG's "iso-8859-1" is really windows-1252).
    Latin1,
    /// A WHATWG encoding that matches PostgreSQL's mapping (save the refused sequences).
    Whatwg(&'static Encoding),
    /// An ISO-8859 encoding whose WHATWG label maps to a windows-125x superset: bytes 0x80-0x9F
    /// are the C1 controls U+0080-U+009F, the rest as in `Encoding`.
    IsoC1(&'static Encoding),
}

struct Entry {
    /// PostgreSQL's canonical name, as ParameterStatus reports it.
    name: &'static str,
    codec: Codec,
    /// Bytes (single-byte encodings) PostgreSQL refuses, which `encoding_rs` would accept.
    refused_bytes: &'static [u8],
}

/// The encodings tollgate decodes. Index 0 is UTF8, the default.
static SUPPORTED: &[Entry] = &[
    entry("UTF8", Codec::Utf8),
    entry("SQL_ASCII", Codec::Utf8),
    entry("LATIN1", Codec::Latin1),
    entry("LATIN2", Codec::Whatwg(encoding_rs::ISO_8859_2)),
    entry("LATIN3", Codec::Whatwg(encoding_rs::ISO_8859_3)),
    entry("LATIN4", Codec::Whatwg(encoding_rs::ISO_8859_4)),
    entry("LATIN5", Codec::IsoC1(encoding_rs::WINDOWS_1254)),
    entry("LATIN6", Codec::Whatwg(encoding_rs::ISO_8859_10)),
    entry("LATIN7", Codec::Whatwg(encoding_rs::ISO_8859_13)),
    entry("LATIN8", Codec::Whatwg(encoding_rs::ISO_8859_14)),
    entry("LATIN9", Codec::Whatwg(encoding_rs::ISO_8859_15)),
    entry("LATIN10", Codec::Whatwg(encoding_rs::ISO_8859_16)),
    entry("ISO_8859_5", Codec::Whatwg(encoding_rs::ISO_8859_5)),
    entry("ISO_8859_6", Codec::Whatwg(encoding_rs::ISO_8859_6)),
    entry("ISO_8859_7", Codec::Whatwg(encoding_rs::ISO_8859_7)),
    entry("ISO_8859_8", Codec::Whatwg(encoding_rs::ISO_8859_8)),
    entry("WIN866", Codec::Whatwg(encoding_rs::IBM866)),
    entry("WIN874", Codec::Whatwg(encoding_rs::WINDOWS_874)),
    entry("WIN1250", Codec::Whatwg(encoding_rs::WINDOWS_1250)),
    entry("WIN1251", Codec::Whatwg(encoding_rs::WINDOWS_1251)),
    entry("WIN1252", Codec::Whatwg(encoding_rs::WINDOWS_1252)),
    entry("WIN1253", Codec::Whatwg(encoding_rs::WINDOWS_1253)),
    entry("WIN1254", Codec::Whatwg(encoding_rs::WINDOWS_1254)),
    entry("WIN1255", Codec::Whatwg(encoding_rs::WINDOWS_1255)),
    entry("WIN1256", Codec::Whatwg(encoding_rs::WINDOWS_1256)),
    entry("WIN1257", Codec::Whatwg(encoding_rs::WINDOWS_1257)),
    entry("WIN1258", Codec::Whatwg(encoding_rs::WINDOWS_1258)),
    entry("KOI8R", Codec::Whatwg(encoding_rs::KOI8_R)),
    // WHATWG's KOI8-U is KOI8-RU: 0xAE and 0xBE are Ў/ў there, box drawing in PostgreSQL's.
    Entry {
        name: "KOI8U",
        codec: Codec::Whatwg(encoding_rs::KOI8_U),
        refused_bytes: &[0xAE, 0xBE],
    },
    entry("EUC_JP", Codec::Whatwg(encoding_rs::EUC_JP)),
    entry("EUC_KR", Codec::Whatwg(encoding_rs::EUC_KR)),
    entry("EUC_CN", Codec::Whatwg(encoding_rs::GBK)),
];

const fn entry(name: &'static str, codec: Codec) -> Entry {
    Entry {
        name,
        codec,
        refused_bytes: &[],
    }
}

/// Client-only encodings where a byte below 0x80 can end a multibyte character.
const UNSAFE: [&str; 7] = [
    "SJIS",
    "SHIFT_JIS_2004",
    "BIG5",
    "GBK",
    "GB18030",
    "UHC",
    "JOHAB",
];

/// Encodings PostgreSQL accepts that tollgate has no exact decoder for.
const UNSUPPORTED: [&str; 3] = ["EUC_TW", "EUC_JIS_2004", "MULE_INTERNAL"];

/// PostgreSQL's aliases (encnames.c), by cleaned name (lower case, letters and digits only).
const ALIASES: &[(&str, &str)] = &[
    ("abc", "WIN1258"),
    ("alt", "WIN866"),
    ("big5", "BIG5"),
    ("euccn", "EUC_CN"),
    ("eucjis2004", "EUC_JIS_2004"),
    ("eucjp", "EUC_JP"),
    ("euckr", "EUC_KR"),
    ("euctw", "EUC_TW"),
    ("gb18030", "GB18030"),
    ("gbk", "GBK"),
    ("iso88591", "LATIN1"),
    ("iso885910", "LATIN6"),
    ("iso885913", "LATIN7"),
    ("iso885914", "LATIN8"),
    ("iso885915", "LATIN9"),
    ("iso885916", "LATIN10"),
    ("iso88592", "LATIN2"),
    ("iso88593", "LATIN3"),
    ("iso88594", "LATIN4"),
    ("iso88595", "ISO_8859_5"),
    ("iso88596", "ISO_8859_6"),
    ("iso88597", "ISO_8859_7"),
    ("iso88598", "ISO_8859_8"),
    ("iso88599", "LATIN5"),
    ("johab", "JOHAB"),
    ("koi8", "KOI8R"),
    ("koi8r", "KOI8R"),
    ("koi8u", "KOI8U"),
    ("latin1", "LATIN1"),
    ("latin10", "LATIN10"),
    ("latin2", "LATIN2"),
    ("latin3", "LATIN3"),
    ("latin4", "LATIN4"),
    ("latin5", "LATIN5"),
    ("latin6", "LATIN6"),
    ("latin7", "LATIN7"),
    ("latin8", "LATIN8"),
    ("latin9", "LATIN9"),
    ("mskanji", "SJIS"),
    ("muleinternal", "MULE_INTERNAL"),
    ("shiftjis", "SJIS"),
    ("shiftjis2004", "SHIFT_JIS_2004"),
    ("sjis", "SJIS"),
    ("sqlascii", "SQL_ASCII"),
    ("tcvn", "WIN1258"),
    ("tcvn5712", "WIN1258"),
    ("uhc", "UHC"),
    ("unicode", "UTF8"),
    ("utf8", "UTF8"),
    ("vscii", "WIN1258"),
    ("win", "WIN1251"),
    ("win1250", "WIN1250"),
    ("win1251", "WIN1251"),
    ("win1252", "WIN1252"),
    ("win1253", "WIN1253"),
    ("win1254", "WIN1254"),
    ("win1255", "WIN1255"),
    ("win1256", "WIN1256"),
    ("win1257", "WIN1257"),
    ("win1258", "WIN1258"),
    ("win866", "WIN866"),
    ("win874", "WIN874"),
    ("win932", "SJIS"),
    ("win936", "GBK"),
    ("win949", "UHC"),
    ("win950", "BIG5"),
    ("windows1250", "WIN1250"),
    ("windows1251", "WIN1251"),
    ("windows1252", "WIN1252"),
    ("windows1253", "WIN1253"),
    ("windows1254", "WIN1254"),
    ("windows1255", "WIN1255"),
    ("windows1256", "WIN1256"),
    ("windows1257", "WIN1257"),
    ("windows1258", "WIN1258"),
    ("windows866", "WIN866"),
    ("windows874", "WIN874"),
    ("windows932", "SJIS"),
    ("windows936", "GBK"),
    ("windows949", "UHC"),
    ("windows950", "BIG5"),
];

/// A client encoding tollgate decodes exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientEncoding(u8);

/// What a client encoding name means to tollgate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Supported(ClientEncoding),
    /// An encoding whose multibyte characters can hide an ASCII byte: refused.
    Unsafe(&'static str),
    /// An encoding PostgreSQL knows that tollgate cannot decode exactly: refused.
    Unsupported(&'static str),
    /// Not an encoding name PostgreSQL knows (the server would refuse it too).
    Unknown,
}

/// Text that is not valid in the client's encoding, or a character tollgate cannot decode
/// exactly as the server would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid byte sequence for encoding \"{0}\"")]
pub struct DecodeError(pub &'static str);

/// Text with a character the client's encoding cannot represent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a character has no equivalent in encoding \"{0}\"")]
pub struct EncodeError(pub &'static str);

/// PostgreSQL's `clean_encoding_name`: lower case, letters and digits only.
fn clean(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// What `name` (as a client would write it: `latin1`, `'ISO-8859-15'`, `unicode`) means.
pub fn lookup(name: &str) -> Lookup {
    let cleaned = clean(name);
    let Some(canonical) = ALIASES
        .iter()
        .find(|(alias, _)| *alias == cleaned)
        .map(|(_, c)| *c)
    else {
        return Lookup::Unknown;
    };
    if let Some(i) = SUPPORTED.iter().position(|e| e.name == canonical) {
        return Lookup::Supported(ClientEncoding(i as u8));
    }
    if let Some(n) = UNSAFE.iter().find(|n| **n == canonical) {
        return Lookup::Unsafe(n);
    }
    match UNSUPPORTED.iter().find(|n| **n == canonical) {
        Some(n) => Lookup::Unsupported(n),
        None => Lookup::Unknown,
    }
}

/// Why a client may not use `name`, in words for a refusal; `Ok` for a supported encoding.
pub fn check_name(name: &str) -> Result<ClientEncoding, String> {
    match lookup(name) {
        Lookup::Supported(e) => Ok(e),
        Lookup::Unsafe(n) => Err(format!(
            "client_encoding \"{n}\" is refused: in it a byte that looks like ASCII (a quote, a backslash) can be part of a multibyte character, so tollgate's analysis could read a statement differently from the server; use UTF8"
        )),
        Lookup::Unsupported(n) => Err(format!(
            "client_encoding \"{n}\" is not supported by tollgate (no exact decoder); use UTF8"
        )),
        Lookup::Unknown => Err(format!("invalid value for client_encoding: \"{name}\"")),
    }
}

impl Default for ClientEncoding {
    fn default() -> Self {
        ClientEncoding::UTF8
    }
}

impl ClientEncoding {
    pub const UTF8: ClientEncoding = ClientEncoding(0);

    fn entry(self) -> &'static Entry {
        &SUPPORTED[usize::from(self.0)]
    }

    /// PostgreSQL's name for it.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// A small number for atomics ([`ClientEncoding::from_index`] reverses it).
    pub fn index(self) -> u8 {
        self.0
    }

    pub fn from_index(i: u8) -> ClientEncoding {
        if usize::from(i) < SUPPORTED.len() {
            ClientEncoding(i)
        } else {
            ClientEncoding::UTF8
        }
    }

    /// Whether text passes through unchanged (UTF8 and SQL_ASCII against a UTF8 server).
    pub fn is_utf8(self) -> bool {
        matches!(self.entry().codec, Codec::Utf8)
    }

    /// The client's bytes as the server reads them. Pure ASCII is borrowed as it is.
    pub fn decode(self, bytes: &[u8]) -> Result<Cow<'_, str>, DecodeError> {
        let e = self.entry();
        let err = || DecodeError(e.name);
        if let Codec::Utf8 = e.codec {
            return std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|_| err());
        }
        if bytes.is_ascii() {
            // Every supported encoding reads ASCII as ASCII.
            return Ok(Cow::Borrowed(
                std::str::from_utf8(bytes).map_err(|_| err())?,
            ));
        }
        if bytes.iter().any(|b| e.refused_bytes.contains(b)) {
            return Err(err());
        }
        let text = match e.codec {
            Codec::Utf8 => unreachable!("handled above"),
            Codec::Latin1 => bytes.iter().map(|&b| char::from(b)).collect::<String>(),
            Codec::IsoC1(enc) => {
                let mut out = String::with_capacity(bytes.len() + 8);
                for chunk in bytes.split_inclusive(|b| (0x80..0xA0).contains(b)) {
                    let (head, c1) = match chunk.split_last() {
                        Some((&last, head)) if (0x80..0xA0).contains(&last) => {
                            (head, Some(char::from(last)))
                        }
                        _ => (chunk, None),
                    };
                    let part = enc
                        .decode_without_bom_handling_and_without_replacement(head)
                        .ok_or_else(err)?;
                    out.push_str(&part);
                    out.extend(c1);
                }
                out
            }
            Codec::Whatwg(enc) => enc
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or_else(err)?
                .into_owned(),
        };
        if refused_text(e.name, &text) {
            return Err(err());
        }
        Ok(Cow::Owned(text))
    }

    /// `text` in the client's encoding, exactly (for a rewritten statement): a character the
    /// encoding cannot hold, or bytes that would not read back as `text`, are an error.
    pub fn encode(self, text: &str) -> Result<Cow<'_, [u8]>, EncodeError> {
        let e = self.entry();
        let err = EncodeError(e.name);
        if text.is_ascii() || self.is_utf8() {
            return Ok(Cow::Borrowed(text.as_bytes()));
        }
        let bytes: Vec<u8> = match e.codec {
            Codec::Utf8 => unreachable!("handled above"),
            Codec::Latin1 => text
                .chars()
                .map(|c| u8::try_from(u32::from(c)).map_err(|_| err.clone()))
                .collect::<Result<_, _>>()?,
            Codec::IsoC1(enc) | Codec::Whatwg(enc) => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    let cp = u32::from(c);
                    if matches!(e.codec, Codec::IsoC1(_)) && (0x80..0xA0).contains(&cp) {
                        out.push(cp as u8);
                        continue;
                    }
                    let mut buf = [0u8; 4];
                    let (bytes, _, unmappable) = enc.encode(c.encode_utf8(&mut buf));
                    if unmappable {
                        return Err(err);
                    }
                    out.extend_from_slice(&bytes);
                }
                out
            }
        };
        // Only what reads back as the very same text is sent.
        match self.decode(&bytes) {
            Ok(back) if back == text => Ok(Cow::Owned(bytes)),
            _ => Err(err),
        }
    }

    /// `text` in the client's encoding for tollgate's own messages: a character the encoding
    /// cannot hold becomes `?`.
    pub fn encode_lossy(self, text: &str) -> Cow<'_, [u8]> {
        if let Ok(b) = self.encode(text) {
            return b;
        }
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            let mut buf = [0u8; 4];
            match self.encode(c.encode_utf8(&mut buf)) {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => out.push(b'?'),
            }
        }
        Cow::Owned(out)
    }
}

/// Characters `encoding_rs` decodes but PostgreSQL maps differently or refuses (found by
/// `tests/pg_encodings.rs` against a real server): refused, never guessed.
fn refused_text(encoding: &str, text: &str) -> bool {
    REFUSED_CHARS
        .iter()
        .find(|(name, _)| *name == encoding)
        .is_some_and(|(_, chars)| text.chars().any(|c| chars.contains(&c)))
}

/// Per encoding, the characters of [`refused_text`]: EUC_JP 0x8FA2C3 is U+FFE4 in PostgreSQL,
/// U+00A6 in WHATWG; EUC_CN 0xA1A4 and 0xA1AA are U+30FB and U+2015 in PostgreSQL (GB2312),
/// U+00B7 and U+2014 in WHATWG's GBK.
const REFUSED_CHARS: &[(&str, &[char])] =
    &[("EUC_JP", &['\u{a6}']), ("EUC_CN", &['\u{b7}', '\u{2014}'])];

/// Every supported encoding's name (for tests and docs).
pub fn supported_names() -> impl Iterator<Item = &'static str> {
    SUPPORTED.iter().map(|e| e.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(name: &str) -> ClientEncoding {
        match lookup(name) {
            Lookup::Supported(e) => e,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn names_and_aliases_resolve_like_postgres() {
        assert_eq!(enc("UTF8"), ClientEncoding::UTF8);
        assert_eq!(enc("'unicode'").name(), "UTF8");
        assert_eq!(enc("utf-8").name(), "UTF8");
        assert_eq!(enc("ISO-8859-15").name(), "LATIN9");
        assert_eq!(enc("windows-1252").name(), "WIN1252");
        assert_eq!(enc("euc_jp").name(), "EUC_JP");
        assert_eq!(lookup("SJIS"), Lookup::Unsafe("SJIS"));
        assert_eq!(lookup("Shift_JIS"), Lookup::Unsafe("SJIS"));
        assert_eq!(lookup("win950"), Lookup::Unsafe("BIG5"));
        assert_eq!(lookup("GB18030"), Lookup::Unsafe("GB18030"));
        assert_eq!(lookup("EUC_TW"), Lookup::Unsupported("EUC_TW"));
        assert_eq!(lookup("klingon"), Lookup::Unknown);
        assert!(check_name("sjis").unwrap_err().contains("multibyte"));
        for name in supported_names() {
            assert_eq!(enc(name).name(), name);
            assert_eq!(ClientEncoding::from_index(enc(name).index()), enc(name));
        }
    }

    #[test]
    fn single_byte_encodings_decode_and_encode_back() {
        let latin1 = enc("LATIN1");
        assert_eq!(latin1.decode(b"caf\xe9").unwrap(), "café");
        assert_eq!(latin1.decode(b"\x80").unwrap(), "\u{80}");
        assert_eq!(latin1.encode("café").unwrap().as_ref(), b"caf\xe9");
        assert!(latin1.encode("€").is_err());
        let latin9 = enc("LATIN9");
        assert_eq!(latin9.decode(b"\xa4").unwrap(), "€");
        assert_eq!(latin9.encode("€").unwrap().as_ref(), b"\xa4");
        let win1252 = enc("WIN1252");
        assert_eq!(win1252.decode(b"\x80").unwrap(), "€");
        let latin5 = enc("LATIN5");
        assert_eq!(latin5.decode(b"\x80\xfd").unwrap(), "\u{80}ı");
        assert_eq!(latin5.encode("\u{80}ı").unwrap().as_ref(), b"\x80\xfd");
        // ASCII is borrowed untouched.
        assert!(matches!(
            latin9.decode(b"SELECT 1").unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(latin9.encode_lossy("x ☃ y").as_ref(), b"x ? y");
    }

    #[test]
    fn multibyte_encodings_decode_whole_characters_only() {
        let eucjp = enc("EUC_JP");
        assert_eq!(eucjp.decode(b"\xa4\xa2").unwrap(), "あ");
        assert_eq!(eucjp.encode("あ").unwrap().as_ref(), b"\xa4\xa2");
        assert!(eucjp.decode(b"\xa4").is_err());
        assert!(eucjp.decode(b"\xa4'").is_err());
        // Where WHATWG and PostgreSQL map a sequence differently, it is refused, not guessed.
        assert!(eucjp.decode(b"\x8f\xa2\xc3").is_err());
        assert!(enc("EUC_CN").decode(b"\xa1\xa4").is_err());
        assert!(enc("KOI8U").decode(b"\xae").is_err());
        assert_eq!(enc("KOI8R").decode(b"\xae").unwrap(), "╝");
        let utf8 = ClientEncoding::UTF8;
        assert!(utf8.decode(b"\xff").is_err());
        assert_eq!(utf8.encode("é").unwrap().as_ref(), "é".as_bytes());
    }
}
