//! The JSON dialect of containers/storage 1.43: a compact writer that reproduces Go's
//! `encoding/json` bytes (HTML escaping, sorted maps, struct field order, omitempty), and a
//! tolerant field reader (case-insensitive keys, `null`s, unknown keys kept aside).

use std::collections::BTreeMap;

use serde_json::{Map, Number, Value};

use crate::gotime::GoTime;

/// Appends `s` as a JSON string exactly as Go's `encoding/json` writes it: `<`, `>`, `&`,
/// control characters (other than `\n`, `\r`, `\t`), U+2028 and U+2029 as `\uXXXX`.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            _ => None,
        };
        if let Some(esc) = escape {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(esc);
            i += 1;
            start = i;
            continue;
        }
        if b < 0x20 || b == b'<' || b == b'>' || b == b'&' {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
            i += 1;
            start = i;
            continue;
        }
        // U+2028 and U+2029 are E2 80 A8 / E2 80 A9 in UTF-8.
        if b == 0xE2 && i + 2 < bytes.len() && bytes[i + 1] == 0x80 && (bytes[i + 2] & 0xFE) == 0xA8
        {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(if bytes[i + 2] == 0xA8 {
                b"\\u2028"
            } else {
                b"\\u2029"
            });
            i += 3;
            start = i;
            continue;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    // Go decodes untyped numbers as float64 and prints integral values without a fraction.
    if let Some(f) = n.as_f64().filter(|_| n.is_f64())
        && f.fract() == 0.0
        && f.abs() < 1e21
    {
        #[allow(clippy::cast_possible_truncation)]
        let i = f as i128;
        out.extend_from_slice(i.to_string().as_bytes());
        return;
    }
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Appends a generic value. `sort_maps` mimics Go maps (`map[string]any`), whose keys are
/// written sorted; otherwise object keys keep the order they were read in.
pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value, sort_maps: bool) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, sort_maps);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            if sort_maps {
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            }
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                write_value(out, v, sort_maps);
            }
            out.push(b'}');
        }
    }
}

/// Writes one JSON object field by field, in call order, applying omitempty.
pub(crate) struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_string(self.out, key);
        self.out.push(b':');
    }

    /// A string field; omitted when empty and `omitempty`.
    pub(crate) fn string(&mut self, key: &str, value: &str, omitempty: bool) {
        if omitempty && value.is_empty() {
            return;
        }
        self.key(key);
        write_string(self.out, value);
    }

    /// An integer field, omitted when zero.
    pub(crate) fn int_omitempty(&mut self, key: &str, value: i64) {
        if value == 0 {
            return;
        }
        self.int(key, value);
    }

    /// An integer field, always written.
    pub(crate) fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    /// A time, always written (omitempty never drops a struct).
    pub(crate) fn time(&mut self, key: &str, value: &GoTime) {
        self.key(key);
        write_string(self.out, &value.to_string());
    }

    /// A string list, omitted when empty.
    pub(crate) fn strings(&mut self, key: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_string(self.out, v);
        }
        self.out.push(b']');
    }

    /// A `[]uint32` field, omitted when empty.
    pub(crate) fn u32s(&mut self, key: &str, values: &[u32]) {
        if values.is_empty() {
            return;
        }
        self.key(key);
        self.out.push(b'[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(v.to_string().as_bytes());
        }
        self.out.push(b']');
    }

    /// A `map[string]int64`, sorted, omitted when empty.
    pub(crate) fn int_map(&mut self, key: &str, map: &BTreeMap<String, i64>) {
        if map.is_empty() {
            return;
        }
        self.key(key);
        self.out.push(b'{');
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_string(self.out, k);
            self.out.push(b':');
            self.out.extend_from_slice(v.to_string().as_bytes());
        }
        self.out.push(b'}');
    }

    /// A `map[string]string`, sorted, omitted when empty.
    pub(crate) fn string_map(&mut self, key: &str, map: &BTreeMap<String, String>) {
        if map.is_empty() {
            return;
        }
        self.key(key);
        self.out.push(b'{');
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_string(self.out, k);
            self.out.push(b':');
            write_string(self.out, v);
        }
        self.out.push(b'}');
    }

    /// A `map[string]interface{}`, sorted at every level, omitted when empty.
    pub(crate) fn value_map(&mut self, key: &str, map: &BTreeMap<String, Value>) {
        if map.is_empty() {
            return;
        }
        self.key(key);
        self.out.push(b'{');
        for (i, (k, v)) in map.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write_string(self.out, k);
            self.out.push(b':');
            write_value(self.out, v, true);
        }
        self.out.push(b'}');
    }

    /// An already-built value written as read (for preserved unknown keys).
    pub(crate) fn raw_value(&mut self, key: &str, value: &Value) {
        self.key(key);
        write_value(self.out, value, false);
    }

    /// Any list of sub-objects, omitted when empty.
    pub(crate) fn objects<T>(&mut self, key: &str, items: &[T], write: impl Fn(&T, &mut Vec<u8>)) {
        if items.is_empty() {
            return;
        }
        self.key(key);
        self.out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            write(item, self.out);
        }
        self.out.push(b']');
    }

    pub(crate) fn finish(self) {
        self.out.push(b'}');
    }
}

/// Writes a top-level array of records.
pub(crate) fn write_array<T>(items: &[T], write: impl Fn(&T, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * items.len() + 2);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(item, &mut out);
    }
    out.push(b']');
    out
}

/// Matches a JSON key to one of `known` the way Go does: exact match first, then ASCII
/// case-insensitive.
pub(crate) fn match_key(key: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .find(|k| **k == key)
        .or_else(|| known.iter().find(|k| k.eq_ignore_ascii_case(key)))
        .copied()
}

/// A field-level decoding failure, turned into a store error naming the file by the caller.
pub(crate) type FieldResult<T> = Result<T, String>;

pub(crate) fn as_string(key: &str, v: Value) -> FieldResult<String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s),
        other => Err(format!("{key}: expected a string, found {}", kind(&other))),
    }
}

pub(crate) fn as_strings(key: &str, v: Value) -> FieldResult<Vec<String>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(|i| as_string(key, i)).collect(),
        other => Err(format!(
            "{key}: expected a list of strings, found {}",
            kind(&other)
        )),
    }
}

pub(crate) fn as_i64(key: &str, v: Value) -> FieldResult<i64> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{key}: {n} is not a 64-bit integer")),
        other => Err(format!(
            "{key}: expected an integer, found {}",
            kind(&other)
        )),
    }
}

pub(crate) fn as_u32(key: &str, v: Value) -> FieldResult<u32> {
    let i = as_i64(key, v)?;
    u32::try_from(i).map_err(|_| format!("{key}: {i} is out of range for uint32"))
}

pub(crate) fn as_u32s(key: &str, v: Value) -> FieldResult<Vec<u32>> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(|i| as_u32(key, i)).collect(),
        other => Err(format!(
            "{key}: expected a list of integers, found {}",
            kind(&other)
        )),
    }
}

pub(crate) fn as_time(key: &str, v: Value) -> FieldResult<GoTime> {
    match v {
        Value::Null => Ok(GoTime::default()),
        Value::String(s) => {
            GoTime::parse(&s).ok_or_else(|| format!("{key}: {s:?} is not an RFC 3339 time"))
        }
        other => Err(format!(
            "{key}: expected a time string, found {}",
            kind(&other)
        )),
    }
}

pub(crate) fn as_object(key: &str, v: Value) -> FieldResult<Option<Map<String, Value>>> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        other => Err(format!("{key}: expected an object, found {}", kind(&other))),
    }
}

pub(crate) fn as_int_map(key: &str, v: Value) -> FieldResult<BTreeMap<String, i64>> {
    let mut out = BTreeMap::new();
    if let Some(m) = as_object(key, v)? {
        for (k, v) in m {
            out.insert(k, as_i64(key, v)?);
        }
    }
    Ok(out)
}

pub(crate) fn as_string_map(key: &str, v: Value) -> FieldResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(m) = as_object(key, v)? {
        for (k, v) in m {
            out.insert(k, as_string(key, v)?);
        }
    }
    Ok(out)
}

pub(crate) fn as_value_map(key: &str, v: Value) -> FieldResult<BTreeMap<String, Value>> {
    Ok(as_object(key, v)?
        .map(|m| m.into_iter().collect())
        .unwrap_or_default())
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let table: &[(&str, &str)] = &[
            ("plain", r#""plain""#),
            ("x<y>&z", r#""x\u003cy\u003e\u0026z""#),
            ("q\"b\\", r#""q\"b\\""#),
            ("a\nb\rc\td", r#""a\nb\rc\td""#),
            ("\u{1}\u{8}\u{c}\u{1f}", r#""\u0001\u0008\u000c\u001f""#),
            ("\u{2028}\u{2029}", r#""\u2028\u2029""#),
            ("é☃\u{7f}/", "\"é☃\u{7f}/\""),
        ];
        for (input, want) in table {
            let mut out = Vec::new();
            write_string(&mut out, input);
            assert_eq!(String::from_utf8(out).unwrap(), *want, "input {input:?}");
        }
    }

    #[test]
    fn values_sort_maps_and_print_integral_floats_bare() {
        let v: Value =
            serde_json::from_str(r#"{"b":1.0,"a":[true,null,"<"],"c":{"z":1,"y":2.5}}"#).unwrap();
        let mut sorted = Vec::new();
        write_value(&mut sorted, &v, true);
        assert_eq!(
            String::from_utf8(sorted).unwrap(),
            r#"{"a":[true,null,"\u003c"],"b":1,"c":{"y":2.5,"z":1}}"#
        );
        let mut kept = Vec::new();
        write_value(&mut kept, &v, false);
        assert_eq!(
            String::from_utf8(kept).unwrap(),
            r#"{"b":1,"a":[true,null,"\u003c"],"c":{"z":1,"y":2.5}}"#
        );
    }

    #[test]
    fn key_matching_prefers_exact_then_case_insensitive() {
        let known = ["id", "names", "ID"];
        assert_eq!(match_key("ID", &known), Some("ID"));
        assert_eq!(match_key("Names", &known), Some("names"));
        assert_eq!(match_key("iD", &known), Some("id"));
        assert_eq!(match_key("other", &known), None);
    }

    #[test]
    fn readers_accept_null_and_reject_wrong_types() {
        assert_eq!(as_string("k", Value::Null).unwrap(), "");
        assert_eq!(as_strings("k", Value::Null).unwrap(), Vec::<String>::new());
        assert_eq!(as_i64("k", Value::Null).unwrap(), 0);
        assert!(as_time("k", Value::Null).unwrap().is_zero());
        assert!(as_string("k", serde_json::json!(5)).is_err());
        assert!(as_u32s("k", serde_json::json!([-1])).is_err());
        assert!(as_i64("k", serde_json::json!(1.5)).is_err());
        assert!(as_time("k", serde_json::json!("yesterday")).is_err());
    }
}
