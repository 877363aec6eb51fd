//! CRI-O's per-container metadata record (`RuntimeContainerMetadata`): the JSON string kept in
//! the metadata field of every container record CRI-O creates, with CRI-O's exact keys, key
//! order and omit-empty rules, and its decoding rules (case-insensitive keys, last duplicate
//! wins, `null` is the zero value).

use podstore_metadata::write_go_json_string;
use serde_json::Value;

/// What CRI-O stores about a pod sandbox or container in the store's metadata field.
///
/// Serialised with the keys, order and omit-empty rules of CRI-O's Go struct:
///
/// ```
/// use podstore_runtime::RuntimeContainerMetadata;
/// let md = RuntimeContainerMetadata { pod: true, mount_label: "label".into(), ..Default::default() };
/// assert_eq!(
///     md.to_json(),
///     r#"{"pod-name":"","pod-id":"","image-name":"","image-id":"","name":"","metadata-name":"","mountlabel":"label","created-at":0,"pod":true}"#
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeContainerMetadata {
    /// The pod's name (mandatory for CRI-O containers).
    pub pod_name: String,
    /// The pod's ID (mandatory for CRI-O containers).
    pub pod_id: String,
    /// The image name the container was created from, as given.
    pub image_name: String,
    /// The ID of the image the container was created from.
    pub image_id: String,
    /// The container's name; for an infrastructure container usually `<pod name>-infra`.
    pub container_name: String,
    /// The name given in the CRI PodSandbox or Container metadata.
    pub metadata_name: String,
    /// The pod's UID (pods only).
    pub uid: String,
    /// The pod's namespace (pods only).
    pub namespace: String,
    /// The SELinux mount label.
    pub mount_label: String,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Creation attempt number.
    pub attempt: u32,
    /// True for a pod's infrastructure container.
    pub pod: bool,
    /// True for a privileged container.
    pub privileged: bool,
}

/// Why a metadata string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataDecodeError {
    /// The string is not JSON at all (this includes the empty string).
    #[error("container metadata {input:?} is not valid JSON: {reason}")]
    NotJson {
        /// The offending metadata string.
        input: String,
        /// The parser's explanation.
        reason: String,
    },
    /// The JSON is neither an object nor `null`.
    #[error("container metadata {input:?} is not a JSON object")]
    NotAnObject {
        /// The offending metadata string.
        input: String,
    },
    /// A known key holds a value of the wrong type.
    #[error("container metadata {input:?}: key {key:?} must be {expected}")]
    WrongType {
        /// The offending metadata string.
        input: String,
        /// The key as written in the input.
        key: String,
        /// The JSON type the key needs.
        expected: &'static str,
    },
}

impl RuntimeContainerMetadata {
    /// Encodes as CRI-O does: compact, keys in declaration order, empty optional keys omitted,
    /// strings escaped as Go's `encoding/json` escapes them (`<`, `>`, `&` as `\u003c`, `\u003e`,
    /// `\u0026`; control characters as `\u00XX`).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(256);
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, name: &str| {
            out.push(if first { b'{' } else { b',' });
            first = false;
            write_go_json_string(out, name);
            out.push(b':');
        };
        let strings = [
            ("pod-name", &self.pod_name, false),
            ("pod-id", &self.pod_id, false),
            ("image-name", &self.image_name, false),
            ("image-id", &self.image_id, false),
            ("name", &self.container_name, false),
            ("metadata-name", &self.metadata_name, false),
            ("uid", &self.uid, true),
            ("namespace", &self.namespace, true),
            ("mountlabel", &self.mount_label, true),
        ];
        for (name, value, omit_empty) in strings {
            if !(omit_empty && value.is_empty()) {
                key(&mut out, name);
                write_go_json_string(&mut out, value);
            }
        }
        key(&mut out, "created-at");
        out.extend_from_slice(self.created_at.to_string().as_bytes());
        if self.attempt != 0 {
            key(&mut out, "attempt");
            out.extend_from_slice(self.attempt.to_string().as_bytes());
        }
        for (name, value) in [("pod", self.pod), ("privileged", self.privileged)] {
            if value {
                key(&mut out, name);
                out.extend_from_slice(b"true");
            }
        }
        out.push(b'}');
        // Every piece written above is valid UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Decodes as Go's `encoding/json` would into CRI-O's struct: keys match case-insensitively,
    /// the last duplicate wins, unknown keys are ignored, `null` values (and a top-level `null`)
    /// leave the zero value, and a value of the wrong type is an error.
    pub fn from_json(input: &str) -> Result<RuntimeContainerMetadata, MetadataDecodeError> {
        let value: Value =
            serde_json::from_str(input).map_err(|e| MetadataDecodeError::NotJson {
                input: input.to_owned(),
                reason: e.to_string(),
            })?;
        let mut md = RuntimeContainerMetadata::default();
        let object = match value {
            Value::Null => return Ok(md),
            Value::Object(map) => map,
            _ => {
                return Err(MetadataDecodeError::NotAnObject {
                    input: input.to_owned(),
                });
            }
        };
        for (key, value) in object {
            if value.is_null() {
                continue;
            }
            let wrong = |expected| MetadataDecodeError::WrongType {
                input: input.to_owned(),
                key: key.clone(),
                expected,
            };
            let string = |v: &Value| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| wrong("a string"))
            };
            match key.to_ascii_lowercase().as_str() {
                "pod-name" => md.pod_name = string(&value)?,
                "pod-id" => md.pod_id = string(&value)?,
                "image-name" => md.image_name = string(&value)?,
                "image-id" => md.image_id = string(&value)?,
                "name" => md.container_name = string(&value)?,
                "metadata-name" => md.metadata_name = string(&value)?,
                "uid" => md.uid = string(&value)?,
                "namespace" => md.namespace = string(&value)?,
                "mountlabel" => md.mount_label = string(&value)?,
                "created-at" => {
                    md.created_at = value.as_i64().ok_or_else(|| wrong("an integer"))?;
                }
                "attempt" => {
                    md.attempt = value
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| wrong("an unsigned 32-bit integer"))?;
                }
                "pod" => md.pod = value.as_bool().ok_or_else(|| wrong("a boolean"))?,
                "privileged" => {
                    md.privileged = value.as_bool().ok_or_else(|| wrong("a boolean"))?;
                }
                _ => {}
            }
        }
        Ok(md)
    }

    /// Sets the mount label on this value only; persist it with the runtime service's
    /// `set_container_metadata`.
    pub fn set_mount_label(&mut self, mount_label: impl Into<String>) {
        self.mount_label = mount_label.into();
    }

    /// Whether a container with this metadata was created by CRI-O: both the pod name and the
    /// pod ID are set (podman and buildah containers have neither).
    pub fn is_crio_container(&self) -> bool {
        !self.pod_name.is_empty() && !self.pod_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_crio() {
        let full = RuntimeContainerMetadata {
            pod_name: "k8s_POD_p_default_0a1b_0".into(),
            pod_id: "2f0e".into(),
            image_name: "docker.io/library/example:latest".into(),
            image_id: "6c97".into(),
            container_name: "web".into(),
            metadata_name: "web".into(),
            uid: "u".into(),
            namespace: "ns".into(),
            mount_label: "system_u:object_r:container_file_t:s0:c1,c2".into(),
            created_at: 1714641362,
            attempt: 2,
            pod: true,
            privileged: true,
        };
        let table: &[(&RuntimeContainerMetadata, &str)] = &[
            (
                &RuntimeContainerMetadata::default(),
                r#"{"pod-name":"","pod-id":"","image-name":"","image-id":"","name":"","metadata-name":"","created-at":0}"#,
            ),
            (
                &full,
                r#"{"pod-name":"k8s_POD_p_default_0a1b_0","pod-id":"2f0e","image-name":"docker.io/library/example:latest","image-id":"6c97","name":"web","metadata-name":"web","uid":"u","namespace":"ns","mountlabel":"system_u:object_r:container_file_t:s0:c1,c2","created-at":1714641362,"attempt":2,"pod":true,"privileged":true}"#,
            ),
        ];
        for (md, want) in table {
            assert_eq!(md.to_json(), *want);
            assert_eq!(&RuntimeContainerMetadata::from_json(want).unwrap(), *md);
        }
    }

    #[test]
    fn escapes_html_characters() {
        let md = RuntimeContainerMetadata {
            pod_name: "<a&b>".into(),
            ..Default::default()
        };
        let json = md.to_json();
        assert!(
            json.starts_with(r#"{"pod-name":"\u003ca\u0026b\u003e","#),
            "{json}"
        );
        assert_eq!(RuntimeContainerMetadata::from_json(&json).unwrap(), md);
    }

    #[test]
    fn escapes_control_characters_like_go() {
        // serde_json would write \b and \f here; Go writes \u0008 and \u000c.
        let md = RuntimeContainerMetadata {
            pod_name: "a\u{8}b\u{c}c\nd\u{2028}".into(),
            ..Default::default()
        };
        let json = md.to_json();
        assert!(
            json.starts_with(r#"{"pod-name":"a\u0008b\u000cc\nd\u2028","#),
            "{json}"
        );
        assert_eq!(RuntimeContainerMetadata::from_json(&json).unwrap(), md);
    }

    #[test]
    fn decodes_like_go() {
        type Check = fn(&RuntimeContainerMetadata) -> bool;
        let ok: &[(&str, Check)] = &[
            (r#"{"Pod": true}"#, |m| m.pod),
            (r#"{"POD-NAME":"p","Pod-Id":"i"}"#, |m| {
                m.is_crio_container()
            }),
            (r#"{"pod":true,"Pod":false}"#, |m| !m.pod),
            (r#"{"pod":false,"pod":true}"#, |m| m.pod),
            ("null", |m| *m == RuntimeContainerMetadata::default()),
            (r#"{"pod-name":null,"attempt":null}"#, |m| {
                m.pod_name.is_empty()
            }),
            (r#"{"unknown":[1,2],"name":"c"}"#, |m| {
                m.container_name == "c"
            }),
            ("{}", |m| !m.is_crio_container()),
            (r#"{"created-at":-5,"attempt":4294967295}"#, |m| {
                m.created_at == -5 && m.attempt == u32::MAX
            }),
        ];
        for (input, check) in ok {
            let md = RuntimeContainerMetadata::from_json(input)
                .unwrap_or_else(|e| panic!("{input}: {e}"));
            assert!(check(&md), "{input}: {md:?}");
        }
        let bad: &[&str] = &[
            "",
            "invalid",
            "[]",
            "3",
            r#"{"pod":"yes"}"#,
            r#"{"attempt":-1}"#,
            r#"{"attempt":4294967296}"#,
            r#"{"created-at":1.5}"#,
            r#"{"name":7}"#,
        ];
        for input in bad {
            let err = RuntimeContainerMetadata::from_json(input).unwrap_err();
            assert!(err.to_string().contains(&format!("{input:?}")), "{err}");
        }
    }

    #[test]
    fn crio_container_needs_pod_name_and_id() {
        let table = [
            ("", "", false),
            ("p", "", false),
            ("", "i", false),
            ("p", "i", true),
        ];
        for (name, id, want) in table {
            let md = RuntimeContainerMetadata {
                pod_name: name.into(),
                pod_id: id.into(),
                ..Default::default()
            };
            assert_eq!(md.is_crio_container(), want, "{name:?} {id:?}");
        }
    }

    #[test]
    fn set_mount_label_changes_only_the_label() {
        let mut md =
            RuntimeContainerMetadata::from_json(r#"{"pod-name":"p","pod-id":"i"}"#).unwrap();
        md.set_mount_label("label");
        assert_eq!(md.mount_label, "label");
        assert!(md.to_json().contains(r#""mountlabel":"label""#));
        assert!(md.is_crio_container());
    }
}
