//! The records of `layers.json`, `images.json`, `containers.json` and `mountpoints.json`, with
//! a reader and a writer that reproduce containers/storage 1.43's bytes. Keys this version does
//! not know are kept in each record's `extra` map and written back after the known keys.

use std::collections::BTreeMap;

use podstore_layer::IdMap;
use podstore_reference::Digest;
use serde_json::{Map, Value};

use crate::gotime::GoTime;
use crate::json::{self, FieldResult, ObjectWriter};

/// The layer flag that marks a layer being created or deleted.
pub const INCOMPLETE_FLAG: &str = "incomplete";

/// One element of `layers.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layer {
    /// Layer ID.
    pub id: String,
    /// Names, unique across layers.
    pub names: Vec<String>,
    /// Parent layer ID; empty for a base layer.
    pub parent: String,
    /// Opaque caller string.
    pub metadata: String,
    /// SELinux label used when mounting.
    pub mount_label: String,
    /// Creation time.
    pub created: GoTime,
    /// Digest of the blob as given (`compressed-diff-digest`); empty when unknown.
    pub compressed_digest: String,
    /// Bytes of that blob.
    pub compressed_size: i64,
    /// DiffID (`diff-digest`); empty when unknown.
    pub uncompressed_digest: String,
    /// Length of the uncompressed tar.
    pub uncompressed_size: i64,
    /// 0 none, 1 bzip2, 2 gzip, 3 xz, 4 zstd.
    pub compression: i64,
    /// Sorted UIDs found in the layer.
    pub uid_set: Vec<u32>,
    /// Sorted GIDs found in the layer.
    pub gid_set: Vec<u32>,
    /// Flags such as `incomplete`.
    pub flags: BTreeMap<String, Value>,
    /// UID mapping of the layer.
    pub uid_map: Vec<IdMap>,
    /// GID mapping of the layer.
    pub gid_map: Vec<IdMap>,
    /// Keys of the layer's big data.
    pub big_data_names: Vec<String>,
    /// Keys this version does not know, preserved on rewrite.
    pub extra: Map<String, Value>,
}

/// One element of `images.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Image {
    /// Image ID (normally the config digest's hex).
    pub id: String,
    /// The searchable digest; filled from the first manifest big-data item when empty.
    pub digest: String,
    /// Fully normalized references, unique across images.
    pub names: Vec<String>,
    /// Names the image has had, newest first.
    pub names_history: Vec<String>,
    /// Top layer ID.
    pub layer: String,
    /// Copies of the top layer with other ID mappings.
    pub mapped_layers: Vec<String>,
    /// Caller metadata; containers/image writes JSON.
    pub metadata: String,
    /// Big-data keys in insertion order.
    pub big_data_names: Vec<String>,
    /// Byte length of each big-data item.
    pub big_data_sizes: BTreeMap<String, i64>,
    /// Digest of each big-data item.
    pub big_data_digests: BTreeMap<String, String>,
    /// Creation time (from the image config when known).
    pub created: GoTime,
    /// Flags.
    pub flags: BTreeMap<String, Value>,
    /// Keys this version does not know, preserved on rewrite.
    pub extra: Map<String, Value>,
}

/// One element of `containers.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Container {
    /// Container ID.
    pub id: String,
    /// Names, unique across containers.
    pub names: Vec<String>,
    /// Image ID (may be empty).
    pub image: String,
    /// The container's read-write layer ID.
    pub layer: String,
    /// Caller metadata.
    pub metadata: String,
    /// Big-data keys in insertion order.
    pub big_data_names: Vec<String>,
    /// Byte length of each big-data item.
    pub big_data_sizes: BTreeMap<String, i64>,
    /// sha256 of each big-data item.
    pub big_data_digests: BTreeMap<String, String>,
    /// Creation time.
    pub created: GoTime,
    /// UID mapping.
    pub uid_map: Vec<IdMap>,
    /// GID mapping.
    pub gid_map: Vec<IdMap>,
    /// Flags (`MountLabel`, `ProcessLabel`, `MountOpts`, `Volatile`).
    pub flags: BTreeMap<String, Value>,
    /// Keys this version does not know, preserved on rewrite.
    pub extra: Map<String, Value>,
}

/// One element of `mountpoints.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mountpoint {
    /// Layer ID.
    pub id: String,
    /// Mount point.
    pub path: String,
    /// Cross-process mount count.
    pub count: i64,
}

impl Layer {
    /// The parent ID, if any.
    pub fn parent_id(&self) -> Option<&str> {
        (!self.parent.is_empty()).then_some(self.parent.as_str())
    }
    /// Whether the `incomplete` flag is set.
    pub fn is_incomplete(&self) -> bool {
        self.flags
            .get(INCOMPLETE_FLAG)
            .is_some_and(|v| v.as_bool() == Some(true))
    }
    /// `compressed-diff-digest` when it is a valid digest.
    pub fn compressed_digest(&self) -> Option<Digest> {
        Digest::parse(&self.compressed_digest).ok()
    }
    /// `diff-digest` when it is a valid digest.
    pub fn uncompressed_digest(&self) -> Option<Digest> {
        Digest::parse(&self.uncompressed_digest).ok()
    }
    /// The uncompressed size, or `None` when `diff-digest` is missing (containers/storage
    /// then reports −1).
    pub fn size(&self) -> Option<i64> {
        (!self.uncompressed_digest.is_empty()).then_some(self.uncompressed_size)
    }
}

impl Image {
    /// The in-memory `Digests` list: `digest` first, then every distinct manifest-key digest.
    pub fn digests(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if !self.digest.is_empty() {
            out.push(self.digest.clone());
        }
        for (key, d) in &self.big_data_digests {
            if is_manifest_key(key) && !out.contains(d) {
                out.push(d.clone());
            }
        }
        out
    }

    /// Validates `digest` and every manifest-key digest (as podman does at load), and fills
    /// `digest` from the first manifest digest when it is empty. Returns whether `digest`
    /// changed.
    pub(crate) fn recompute_digests(&mut self) -> Result<bool, String> {
        match self.checked_digest()? {
            Some(first) => {
                self.digest = first;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// What [`Image::recompute_digests`] checks, without changing the record: the digest to
    /// fill in when `digest` is empty and a manifest digest exists, else `None`.
    pub(crate) fn checked_digest(&self) -> Result<Option<String>, String> {
        if !self.digest.is_empty() {
            Digest::parse(&self.digest).map_err(|e| e.to_string())?;
        }
        for (key, d) in &self.big_data_digests {
            if is_manifest_key(key) {
                Digest::parse(d).map_err(|e| format!("big-data {key:?}: {e}"))?;
            }
        }
        if self.digest.is_empty() {
            return Ok(self.digests().into_iter().next());
        }
        Ok(None)
    }
}

/// Whether a big-data key is a manifest key (`manifest`, `manifest-…`): its digest is the
/// manifest digest and it feeds the image's `Digests`.
pub fn is_manifest_key(key: &str) -> bool {
    key.starts_with("manifest")
}

const LAYER_KEYS: &[&str] = &[
    "id",
    "names",
    "parent",
    "metadata",
    "mountlabel",
    "created",
    "compressed-diff-digest",
    "compressed-size",
    "diff-digest",
    "diff-size",
    "compression",
    "uidset",
    "gidset",
    "flags",
    "uidmap",
    "gidmap",
    "big-data-names",
];

const IMAGE_KEYS: &[&str] = &[
    "id",
    "digest",
    "names",
    "names-history",
    "layer",
    "mapped-layers",
    "metadata",
    "big-data-names",
    "big-data-sizes",
    "big-data-digests",
    "created",
    "flags",
];

const CONTAINER_KEYS: &[&str] = &[
    "id",
    "names",
    "image",
    "layer",
    "metadata",
    "big-data-names",
    "big-data-sizes",
    "big-data-digests",
    "created",
    "uidmap",
    "gidmap",
    "flags",
];

const MOUNT_KEYS: &[&str] = &["id", "path", "count"];
const IDMAP_KEYS: &[&str] = &["container_id", "host_id", "size"];

fn read_idmaps(key: &str, v: Value) -> FieldResult<Vec<IdMap>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "{key}: expected a list, found {}",
                json::kind(&other)
            ));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let mut m = IdMap {
            container_id: 0,
            host_id: 0,
            size: 0,
        };
        if let Some(obj) = json::as_object(key, item)? {
            for (k, v) in obj {
                match json::match_key(&k, IDMAP_KEYS) {
                    Some("container_id") => m.container_id = json::as_u32(&k, v)?,
                    Some("host_id") => m.host_id = json::as_u32(&k, v)?,
                    Some("size") => m.size = json::as_u32(&k, v)?,
                    _ => {}
                }
            }
        }
        out.push(m);
    }
    Ok(out)
}

fn write_idmap(m: &IdMap, out: &mut Vec<u8>) {
    let mut w = ObjectWriter::new(out);
    w.int("container_id", i64::from(m.container_id));
    w.int("host_id", i64::from(m.host_id));
    w.int("size", i64::from(m.size));
    w.finish();
}

fn write_extra(w: &mut ObjectWriter<'_>, extra: &Map<String, Value>) {
    for (k, v) in extra {
        w.raw_value(k, v);
    }
}

/// A record type stored as a JSON array in one file.
pub trait Record: Sized + Clone {
    /// Decodes one array element.
    fn from_json(obj: Map<String, Value>) -> FieldResult<Self>;
    /// Encodes one array element exactly as containers/storage 1.43 would.
    fn write_json(&self, out: &mut Vec<u8>);
}

impl Record for Layer {
    fn from_json(obj: Map<String, Value>) -> FieldResult<Self> {
        let mut r = Layer::default();
        for (k, v) in obj {
            match json::match_key(&k, LAYER_KEYS) {
                Some("id") => r.id = json::as_string(&k, v)?,
                Some("names") => r.names = json::as_strings(&k, v)?,
                Some("parent") => r.parent = json::as_string(&k, v)?,
                Some("metadata") => r.metadata = json::as_string(&k, v)?,
                Some("mountlabel") => r.mount_label = json::as_string(&k, v)?,
                Some("created") => r.created = json::as_time(&k, v)?,
                Some("compressed-diff-digest") => r.compressed_digest = json::as_string(&k, v)?,
                Some("compressed-size") => r.compressed_size = json::as_i64(&k, v)?,
                Some("diff-digest") => r.uncompressed_digest = json::as_string(&k, v)?,
                Some("diff-size") => r.uncompressed_size = json::as_i64(&k, v)?,
                Some("compression") => r.compression = json::as_i64(&k, v)?,
                Some("uidset") => r.uid_set = json::as_u32s(&k, v)?,
                Some("gidset") => r.gid_set = json::as_u32s(&k, v)?,
                Some("flags") => r.flags = json::as_value_map(&k, v)?,
                Some("uidmap") => r.uid_map = read_idmaps(&k, v)?,
                Some("gidmap") => r.gid_map = read_idmaps(&k, v)?,
                Some("big-data-names") => r.big_data_names = json::as_strings(&k, v)?,
                _ => {
                    r.extra.insert(k, v);
                }
            }
        }
        Ok(r)
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out);
        w.string("id", &self.id, false);
        w.strings("names", &self.names);
        w.string("parent", &self.parent, true);
        w.string("metadata", &self.metadata, true);
        w.string("mountlabel", &self.mount_label, true);
        w.time("created", &self.created);
        w.string("compressed-diff-digest", &self.compressed_digest, true);
        w.int_omitempty("compressed-size", self.compressed_size);
        w.string("diff-digest", &self.uncompressed_digest, true);
        w.int_omitempty("diff-size", self.uncompressed_size);
        w.int_omitempty("compression", self.compression);
        w.u32s("uidset", &self.uid_set);
        w.u32s("gidset", &self.gid_set);
        w.value_map("flags", &self.flags);
        w.objects("uidmap", &self.uid_map, write_idmap);
        w.objects("gidmap", &self.gid_map, write_idmap);
        w.strings("big-data-names", &self.big_data_names);
        write_extra(&mut w, &self.extra);
        w.finish();
    }
}

impl Record for Image {
    fn from_json(obj: Map<String, Value>) -> FieldResult<Self> {
        let mut r = Image::default();
        for (k, v) in obj {
            match json::match_key(&k, IMAGE_KEYS) {
                Some("id") => r.id = json::as_string(&k, v)?,
                Some("digest") => r.digest = json::as_string(&k, v)?,
                Some("names") => r.names = json::as_strings(&k, v)?,
                Some("names-history") => r.names_history = json::as_strings(&k, v)?,
                Some("layer") => r.layer = json::as_string(&k, v)?,
                Some("mapped-layers") => r.mapped_layers = json::as_strings(&k, v)?,
                Some("metadata") => r.metadata = json::as_string(&k, v)?,
                Some("big-data-names") => r.big_data_names = json::as_strings(&k, v)?,
                Some("big-data-sizes") => r.big_data_sizes = json::as_int_map(&k, v)?,
                Some("big-data-digests") => r.big_data_digests = json::as_string_map(&k, v)?,
                Some("created") => r.created = json::as_time(&k, v)?,
                Some("flags") => r.flags = json::as_value_map(&k, v)?,
                _ => {
                    r.extra.insert(k, v);
                }
            }
        }
        Ok(r)
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out);
        w.string("id", &self.id, false);
        w.string("digest", &self.digest, true);
        w.strings("names", &self.names);
        w.strings("names-history", &self.names_history);
        w.string("layer", &self.layer, true);
        w.strings("mapped-layers", &self.mapped_layers);
        w.string("metadata", &self.metadata, true);
        w.strings("big-data-names", &self.big_data_names);
        w.int_map("big-data-sizes", &self.big_data_sizes);
        w.string_map("big-data-digests", &self.big_data_digests);
        w.time("created", &self.created);
        w.value_map("flags", &self.flags);
        write_extra(&mut w, &self.extra);
        w.finish();
    }
}

impl Record for Container {
    fn from_json(obj: Map<String, Value>) -> FieldResult<Self> {
        let mut r = Container::default();
        for (k, v) in obj {
            match json::match_key(&k, CONTAINER_KEYS) {
                Some("id") => r.id = json::as_string(&k, v)?,
                Some("names") => r.names = json::as_strings(&k, v)?,
                Some("image") => r.image = json::as_string(&k, v)?,
                Some("layer") => r.layer = json::as_string(&k, v)?,
                Some("metadata") => r.metadata = json::as_string(&k, v)?,
                Some("big-data-names") => r.big_data_names = json::as_strings(&k, v)?,
                Some("big-data-sizes") => r.big_data_sizes = json::as_int_map(&k, v)?,
                Some("big-data-digests") => r.big_data_digests = json::as_string_map(&k, v)?,
                Some("created") => r.created = json::as_time(&k, v)?,
                Some("uidmap") => r.uid_map = read_idmaps(&k, v)?,
                Some("gidmap") => r.gid_map = read_idmaps(&k, v)?,
                Some("flags") => r.flags = json::as_value_map(&k, v)?,
                _ => {
                    r.extra.insert(k, v);
                }
            }
        }
        Ok(r)
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out);
        w.string("id", &self.id, false);
        w.strings("names", &self.names);
        w.string("image", &self.image, false);
        w.string("layer", &self.layer, false);
        w.string("metadata", &self.metadata, true);
        w.strings("big-data-names", &self.big_data_names);
        w.int_map("big-data-sizes", &self.big_data_sizes);
        w.string_map("big-data-digests", &self.big_data_digests);
        w.time("created", &self.created);
        w.objects("uidmap", &self.uid_map, write_idmap);
        w.objects("gidmap", &self.gid_map, write_idmap);
        w.value_map("flags", &self.flags);
        write_extra(&mut w, &self.extra);
        w.finish();
    }
}

impl Record for Mountpoint {
    fn from_json(obj: Map<String, Value>) -> FieldResult<Self> {
        let mut r = Mountpoint::default();
        for (k, v) in obj {
            match json::match_key(&k, MOUNT_KEYS) {
                Some("id") => r.id = json::as_string(&k, v)?,
                Some("path") => r.path = json::as_string(&k, v)?,
                Some("count") => r.count = json::as_i64(&k, v)?,
                _ => {}
            }
        }
        Ok(r)
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out);
        w.string("id", &self.id, false);
        w.string("path", &self.path, false);
        w.int("count", self.count);
        w.finish();
    }
}

/// Go writes an integral float64 below 1e21 without a fraction (`4e14` → `400000000000000`),
/// and so does our encoder, which re-reads as an integer; decoding such floats as integers up
/// front keeps unknown keys identical through a save.
fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.is_finite()
                && f.fract() == 0.0
            {
                if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
                    *n = serde_json::Number::from(f as i64);
                } else if (0.0..1.844_674_407_370_955_2e19).contains(&f) {
                    *n = serde_json::Number::from(f as u64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Decodes a whole records file. Empty (or all-whitespace) content is an empty list, as in
/// containers/storage; anything else that is not a JSON array of objects is an error naming
/// what is wrong.
pub fn decode_records<R: Record>(data: &[u8]) -> Result<Vec<R>, String> {
    if data.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut value: Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    integral_floats_as_integers(&mut value);
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(format!(
                "expected a JSON array, found {}",
                json::kind(&other)
            ));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(obj) => R::from_json(obj).map_err(|e| format!("element {i}: {e}")),
            other => Err(format!(
                "element {i}: expected an object, found {}",
                json::kind(&other)
            )),
        })
        .collect()
}

/// Encodes a whole records file: compact, no trailing newline, `[]` when empty.
pub fn encode_records<R: Record>(items: &[R]) -> Vec<u8> {
    json::write_array(items, |r, out| r.write_json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `records` fuzz target: an unknown key holding a number f64 cannot parse
    /// exactly changed through a save unless serde_json parses floats with correct rounding
    /// (`float_roundtrip`).
    #[test]
    fn unknown_float_keys_survive_a_save() {
        let cases: &[&[u8]] = &[
            br#"[{"i4$444444":4440000000000000000000000000000000000000}]"#,
            br#"[{"x":0.1,"y":1.7976931348623157e308,"z":-2.2250738585072014e-308}]"#,
            br#"[{"z1z":400000000000000.00112,"n":-0.0,"m":1e20,"k":[2.0,{"j":-3.0}]}]"#,
        ];
        for input in cases {
            let loaded = decode_records::<Container>(input).unwrap();
            let saved = encode_records(&loaded);
            let reloaded = decode_records::<Container>(&saved).unwrap();
            assert_eq!(reloaded, loaded, "{}", String::from_utf8_lossy(input));
            assert_eq!(encode_records(&reloaded), saved);
        }
    }

    /// The `records` fuzz target's committed seed corpus, replayed on stable: whatever loads
    /// saves, reloads to the same records and re-saves byte for byte.
    #[test]
    fn fuzz_seed_corpus_round_trips() {
        fn check<R: Record + PartialEq + std::fmt::Debug>(name: &str, json: &[u8]) {
            let Ok(loaded) = decode_records::<R>(json) else {
                return;
            };
            let saved = encode_records(&loaded);
            let reloaded = decode_records::<R>(&saved).unwrap();
            assert_eq!(reloaded, loaded, "{name}");
            assert_eq!(encode_records(&reloaded), saved, "{name}");
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/records");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let name = path.display().to_string();
            let Some((&kind, json)) = data.split_first() else {
                continue;
            };
            match kind % 4 {
                0 => check::<Layer>(&name, json),
                1 => check::<Image>(&name, json),
                2 => check::<Container>(&name, json),
                _ => check::<Mountpoint>(&name, json),
            }
            seen += 1;
        }
        assert!(seen > 0, "no seeds in {}", dir.display());
    }

    fn round_trip<R: Record>(text: &str) -> String {
        let recs: Vec<R> = decode_records(text.as_bytes()).unwrap();
        String::from_utf8(encode_records(&recs)).unwrap()
    }

    /// Files as containers/storage 1.43 wrote them (spec §2.1–2.5 and the stores made by
    /// skopeo 1.9.3 and containers-storage 1.43 on this machine) re-encode byte for byte.
    #[test]
    fn golden_records_round_trip_byte_stable() {
        let layers = [
            r#"[{"id":"3a7c8ac71e38a9e6f3b65765d160098c6ce67fc531d7952a5d685a8668143d87","created":"2024-05-02T09:15:31.418207719Z","compressed-diff-digest":"sha256:a5c855ae99eda4a3430eb4680c69542bac1807eb0f3b04527a59ab09222ce659","compressed-size":127,"diff-digest":"sha256:3a7c8ac71e38a9e6f3b65765d160098c6ce67fc531d7952a5d685a8668143d87","diff-size":10240,"compression":2,"uidset":[0],"gidset":[0]},{"id":"f7c59f2a3b01e9c662cdb4111be521b725e59fac4a34e2dd9110089fb4f5a194","names":["web-layer"],"parent":"3a7c8ac71e38a9e6f3b65765d160098c6ce67fc531d7952a5d685a8668143d87","mountlabel":"system_u:object_r:container_file_t:s0:c100,c200","created":"2024-05-02T09:16:02.004Z"}]"#,
            r#"[{"id":"a","created":"0001-01-01T00:00:00Z","flags":{"incomplete":true},"uidmap":[{"container_id":0,"host_id":100000,"size":65536}],"gidmap":[{"container_id":0,"host_id":100000,"size":65536}],"big-data-names":["x"]}]"#,
            "[]",
        ];
        for text in layers {
            assert_eq!(round_trip::<Layer>(text), text);
        }
        let images = [
            r#"[{"id":"a5071ec44afdfe36487e42685240f41c11e77b2eaee2ceaac1068fa1a24c9f0d","digest":"sha256:7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310","names":["example.com/a/b:v1"],"names-history":["example.com/a/b:v1"],"layer":"444fc91ea349b8cd9f77f008e48319809534be98af1d3553c060be43be440227","metadata":"{\"signatures-sizes\":{\"sha256:7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310\":[]}}","big-data-names":["sha256:a5071ec44afdfe36487e42685240f41c11e77b2eaee2ceaac1068fa1a24c9f0d","manifest-sha256:7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310","manifest","signature-7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310"],"big-data-sizes":{"manifest":401,"manifest-sha256:7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310":401,"sha256:a5071ec44afdfe36487e42685240f41c11e77b2eaee2ceaac1068fa1a24c9f0d":208,"signature-7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310":0},"big-data-digests":{"manifest":"sha256:7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310","manifest-sha256:7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310":"sha256:7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310","sha256:a5071ec44afdfe36487e42685240f41c11e77b2eaee2ceaac1068fa1a24c9f0d":"sha256:a5071ec44afdfe36487e42685240f41c11e77b2eaee2ceaac1068fa1a24c9f0d","signature-7cdff5611600f986bdd870f7eeb3fc4b7923789d097498bbe4b8197dd17e7310":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},"created":"2023-11-14T22:13:20Z"}]"#,
            r#"[{"id":"b","mapped-layers":["c"],"created":"2023-11-14T23:13:20+01:00","flags":{"a":{"y":1,"z":[1,2]},"b":"\u003c"}}]"#,
        ];
        for text in images {
            assert_eq!(round_trip::<Image>(text), text);
        }
        let containers = [
            r#"[{"id":"50e72773eb15884f4bf5817e8cf1ac70dd71b37557a4e4cd3896199f4bcb402b","names":["c1","x\u003cy\u003e\u0026z"],"image":"a5071ec44afdfe36487e42685240f41c11e77b2eaee2ceaac1068fa1a24c9f0d","layer":"c52eb2a338f1321d4fd6d1b6be0c3f356fdd24d45a4c0e1eb22365aaded01ac5","big-data-names":["some-key"],"big-data-sizes":{"some-key":0},"big-data-digests":{"some-key":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},"created":"2026-11-28T01:08:44.369410989Z","flags":{"MountLabel":"","ProcessLabel":""}}]"#,
            r#"[{"id":"x","image":"","layer":"","created":"0001-01-01T00:00:00Z","uidmap":[{"container_id":0,"host_id":1,"size":2}]}]"#,
        ];
        for text in containers {
            assert_eq!(round_trip::<Container>(text), text);
        }
        let mounts = r#"[{"id":"c52eb2a338f1321d4fd6d1b6be0c3f356fdd24d45a4c0e1eb22365aaded01ac5","path":"/dev/shm/x/root/vfs/dir/c52eb2a338f1321d4fd6d1b6be0c3f356fdd24d45a4c0e1eb22365aaded01ac5","count":1}]"#;
        assert_eq!(round_trip::<Mountpoint>(mounts), mounts);
    }

    #[test]
    fn tolerant_reader() {
        // Table: input, expected re-encoding.
        let table: &[(&str, &str)] = &[
            // missing fields, nulls, and mixed-case keys
            (
                r#"[{"ID":"a","Names":null,"created":null}]"#,
                r#"[{"id":"a","created":"0001-01-01T00:00:00Z"}]"#,
            ),
            (
                r#"[{"id":"a","uidset":null,"flags":null,"uidmap":null}]"#,
                r#"[{"id":"a","created":"0001-01-01T00:00:00Z"}]"#,
            ),
            // unknown keys are kept, after the known ones, in their order
            (
                r#"[{"toc-digest":"sha256:00","id":"a","zz":{"b":1,"a":2},"created":"2024-01-01T00:00:00Z"}]"#,
                r#"[{"id":"a","created":"2024-01-01T00:00:00Z","toc-digest":"sha256:00","zz":{"b":1,"a":2}}]"#,
            ),
            // empty values are dropped (omitempty), including empty lists and maps
            (
                r#"[{"id":"a","names":[],"parent":"","compressed-size":0,"flags":{},"created":"2024-01-01T00:00:00Z"}]"#,
                r#"[{"id":"a","created":"2024-01-01T00:00:00Z"}]"#,
            ),
            ("", "[]"),
            ("  \n", "[]"),
            ("null", "[]"),
            ("[]\n", "[]"),
        ];
        for (input, want) in table {
            assert_eq!(round_trip::<Layer>(input), *want, "input {input}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            "[{\"id\":\"a\"",
            "{}",
            "[1]",
            "[{\"id\":5}]",
            "[{\"id\":\"a\",\"created\":\"never\"}]",
            "[{\"id\":\"a\",\"uidset\":[-1]}]",
            "\0\0\0",
        ] {
            assert!(decode_records::<Layer>(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn image_digests_follow_recompute_rules() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let mut img = Image::default();
        img.big_data_digests.insert("manifest-x".into(), d1.clone());
        img.big_data_digests.insert("manifest".into(), d1.clone());
        img.big_data_digests
            .insert("sha256:conf".into(), d2.clone());
        assert_eq!(img.recompute_digests(), Ok(true));
        assert_eq!(img.digest, d1);
        assert_eq!(img.digests(), vec![d1.clone()]);
        img.big_data_digests.insert("manifest-y".into(), d2.clone());
        assert_eq!(img.recompute_digests(), Ok(false));
        assert_eq!(img.digests(), vec![d1, d2]);
        img.big_data_digests
            .insert("manifest-bad".into(), "sha256:ABC".into());
        assert!(img.recompute_digests().is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![Just(String::new()), "[a-z0-9:<>&\"\\\\\u{2028}é\n -]{0,12}"]
        }

        fn time() -> impl Strategy<Value = GoTime> {
            (0i64..4_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| GoTime::from_unix(s, n))
        }

        fn idmaps() -> impl Strategy<Value = Vec<IdMap>> {
            proptest::collection::vec(
                (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(c, h, s)| IdMap {
                    container_id: c,
                    host_id: h,
                    size: s,
                }),
                0..3,
            )
        }

        fn flags() -> impl Strategy<Value = BTreeMap<String, Value>> {
            proptest::collection::btree_map(
                "[A-Za-z]{1,8}",
                prop_oneof![
                    any::<bool>().prop_map(Value::Bool),
                    text().prop_map(Value::String),
                    any::<i32>().prop_map(|i| Value::from(i64::from(i))),
                ],
                0..3,
            )
        }

        prop_compose! {
            fn layer()(id in "[0-9a-f]{1,64}", names in proptest::collection::vec(text(), 0..3),
                parent in text(), metadata in text(), label in text(), created in time(),
                cd in text(), cs in any::<i64>(), ud in text(), us in any::<i64>(), comp in 0i64..5,
                uids in proptest::collection::vec(any::<u32>(), 0..4), gids in proptest::collection::vec(any::<u32>(), 0..4),
                flags in flags(), um in idmaps(), gm in idmaps(), bdn in proptest::collection::vec(text(), 0..3))
                -> Layer {
                Layer { id, names, parent, metadata, mount_label: label, created, compressed_digest: cd,
                    compressed_size: cs, uncompressed_digest: ud, uncompressed_size: us, compression: comp,
                    uid_set: uids, gid_set: gids, flags, uid_map: um, gid_map: gm, big_data_names: bdn,
                    extra: Map::new() }
            }
        }

        prop_compose! {
            fn image()(id in "[0-9a-f]{1,64}", digest in text(), names in proptest::collection::vec(text(), 0..3),
                hist in proptest::collection::vec(text(), 0..3), layer in text(), mapped in proptest::collection::vec(text(), 0..2),
                metadata in text(), bdn in proptest::collection::vec(text(), 0..3),
                sizes in proptest::collection::btree_map(text(), any::<i64>(), 0..3),
                digests in proptest::collection::btree_map(text(), text(), 0..3), created in time(), flags in flags())
                -> Image {
                Image { id, digest, names, names_history: hist, layer, mapped_layers: mapped, metadata,
                    big_data_names: bdn, big_data_sizes: sizes, big_data_digests: digests, created, flags,
                    extra: Map::new() }
            }
        }

        prop_compose! {
            fn container()(id in "[0-9a-f]{1,64}", names in proptest::collection::vec(text(), 0..3),
                image in text(), layer in text(), metadata in text(), bdn in proptest::collection::vec(text(), 0..3),
                sizes in proptest::collection::btree_map(text(), any::<i64>(), 0..3),
                digests in proptest::collection::btree_map(text(), text(), 0..3), created in time(),
                um in idmaps(), gm in idmaps(), flags in flags())
                -> Container {
                Container { id, names, image, layer, metadata, big_data_names: bdn, big_data_sizes: sizes,
                    big_data_digests: digests, created, uid_map: um, gid_map: gm, flags, extra: Map::new() }
            }
        }

        fn stable<R: Record + PartialEq + std::fmt::Debug>(
            recs: Vec<R>,
        ) -> Result<(), TestCaseError> {
            let bytes = encode_records(&recs);
            // Whatever we write is valid JSON that serde agrees with.
            let _: Value =
                serde_json::from_slice(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: Vec<R> = decode_records(&bytes).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&back, &recs);
            prop_assert_eq!(encode_records(&back), bytes);
            Ok(())
        }

        proptest! {
            #[test]
            fn layers_round_trip(recs in proptest::collection::vec(layer(), 0..3)) { stable(recs)?; }
            #[test]
            fn images_round_trip(recs in proptest::collection::vec(image(), 0..3)) { stable(recs)?; }
            #[test]
            fn containers_round_trip(recs in proptest::collection::vec(container(), 0..3)) { stable(recs)?; }
        }
    }
}
