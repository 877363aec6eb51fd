//! Local image look-ups: how status, the list filter and untag interpret their string
//! (CRI-O's `getRef` + containers/image's `ParseStoreReference` + `GetStoreImage`,
//! crio-storage-behavior §1.3–1.5), without the fall-through to remote transports (§10.10).
//!
//! Accepted: a full image ID, a unique ID prefix of ≥ 3 characters, a name (normalised, `:latest`
//! added), `name@digest` (found by exact name, else among the images with that digest that are
//! named in the same repository), `name@ID`, and any of these behind `containers-storage:`
//! (with an optional `[driver@root+runroot]` store specifier, which is ignored: the service's own
//! store is used). Remote transports (`docker://`, `oci:`, `dir:`, …) are refused.

use podstore_metadata::{Error as StoreError, Image, Store};
use podstore_reference::{Digest, Reference, is_full_image_id};

use crate::error::{ImageError, Result};

/// Transports whose references name something outside the store.
const REMOTE_TRANSPORTS: &[&str] = &[
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "dir",
    "tarball",
    "atomic",
    "ostree",
];

/// The `containers-storage:` transport prefix.
pub const STORAGE_TRANSPORT: &str = "containers-storage:";

/// What a local image string denotes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LocalReference {
    /// The normalised name (with a tag or a digest), if any.
    pub name: Option<Reference>,
    /// The full image ID, if the string named one (or a unique prefix of one).
    pub id: Option<String>,
}

/// A local image found by [`find_local_image`].
#[derive(Debug, Clone)]
pub struct FoundImage {
    /// The current record.
    pub record: Image,
    /// The digest named by the reference, when it has one.
    pub requested_digest: Option<Digest>,
    /// The manifest big-data key to read (`manifest-<digest>` for a digested reference whose
    /// manifest is stored, else `manifest`).
    pub manifest_key: String,
}

/// `store.image(key)` with "unknown" and "ambiguous prefix" mapped to `None`.
fn try_image(store: &Store, key: &str) -> Result<Option<Image>> {
    match store.image(key) {
        Ok(image) => Ok(Some(image)),
        Err(StoreError::ImageUnknown { .. } | StoreError::AmbiguousPrefix { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The ID of the local image `text` is the full ID or a unique ≥ 3-character prefix of.
pub(crate) fn local_id_for(store: &Store, text: &str) -> Result<Option<String>> {
    if text.len() < 3 {
        return Ok(None);
    }
    Ok(try_image(store, text)?
        .filter(|image| image.id.starts_with(text))
        .map(|image| image.id))
}

/// Refuses remote transports; strips `containers-storage:[…]`.
fn strip_transport(input: &str) -> Result<&str> {
    if let Some(rest) = input.strip_prefix(STORAGE_TRANSPORT) {
        if let Some(spec) = rest.strip_prefix('[') {
            return match spec.split_once(']') {
                Some((_, rest)) => Ok(rest),
                None => Err(ImageError::InvalidImageName {
                    input: input.to_owned(),
                    reason: "store specifier has no closing \"]\"".to_owned(),
                }),
            };
        }
        return Ok(rest);
    }
    if input.starts_with("docker://") {
        return Err(ImageError::NotLocal {
            input: input.to_owned(),
            transport: "docker".to_owned(),
        });
    }
    if let Some((transport, _)) = input.split_once(':')
        && REMOTE_TRANSPORTS.contains(&transport)
    {
        return Err(ImageError::NotLocal {
            input: input.to_owned(),
            transport: transport.to_owned(),
        });
    }
    Ok(input)
}

/// Parses a local image string (see the module docs). Queries the store for ID prefixes.
pub fn parse_local_reference(store: &Store, input: &str) -> Result<LocalReference> {
    if input.is_empty() {
        return Err(ImageError::InvalidImageName {
            input: String::new(),
            reason: "empty image name".to_owned(),
        });
    }
    let text = strip_transport(input)?;
    let invalid = |reason: &str| ImageError::InvalidImageName {
        input: input.to_owned(),
        reason: reason.to_owned(),
    };
    if text.is_empty() {
        return Err(invalid("no name or ID after the transport"));
    }
    let mut rest = text;
    let mut id = None;
    if let Some((before, after)) = text.rsplit_once('@') {
        if after.is_empty() {
            return Err(invalid("nothing after \"@\""));
        }
        if Digest::parse(after).is_err() {
            if is_full_image_id(after) {
                id = Some(after.to_owned());
            } else if let Some(full) = local_id_for(store, after)? {
                id = Some(full);
            } else {
                return Err(invalid(
                    "the text after \"@\" is neither a digest nor a local image ID",
                ));
            }
            rest = before;
        }
    } else if is_full_image_id(text) {
        id = Some(text.to_owned());
        rest = "";
    } else if !text.contains(':')
        && let Some(full) = local_id_for(store, text)?
    {
        id = Some(full);
        rest = "";
    }
    let name = if rest.is_empty() {
        None
    } else {
        let parsed =
            Reference::parse_normalized(rest).map_err(|source| ImageError::InvalidReference {
                input: input.to_owned(),
                source: Box::new(source),
            })?;
        Some(parsed.tag_or_latest())
    };
    if name.is_none() && id.is_none() {
        return Err(invalid("no name or ID"));
    }
    Ok(LocalReference { name, id })
}

fn has_name_in_repository(image: &Image, repository: &str) -> bool {
    image.names.iter().any(|n| {
        Reference::parse_normalized(n)
            .map(|r| r.name() == repository)
            .unwrap_or(false)
    })
}

/// Finds the image a [`LocalReference`] denotes (containers/image's `GetStoreImage`); `None`
/// when there is none.
pub fn resolve_local(store: &Store, reference: &LocalReference) -> Result<Option<FoundImage>> {
    let requested_digest = reference.name.as_ref().and_then(|n| n.digest().cloned());
    let found = |record: Image| {
        let manifest_key = requested_digest
            .as_ref()
            .map(|d| format!("manifest-{d}"))
            .filter(|k| record.big_data_names.contains(k))
            .unwrap_or_else(|| "manifest".to_owned());
        FoundImage {
            record,
            requested_digest: requested_digest.clone(),
            manifest_key,
        }
    };
    if let Some(id) = &reference.id {
        let Some(image) = try_image(store, id)?.filter(|i| &i.id == id) else {
            return Ok(None);
        };
        if let Some(name) = &reference.name
            && !has_name_in_repository(&image, &name.name())
        {
            return Ok(None);
        }
        return Ok(Some(found(image)));
    }
    let Some(name) = &reference.name else {
        return Ok(None);
    };
    if let Some(image) = try_image(store, &name.to_string())? {
        // An exact name match; an ID-shaped key could also have matched an ID or prefix.
        if image.names.contains(&name.to_string()) {
            return Ok(Some(found(image)));
        }
    }
    if let Some(digest) = name.digest() {
        let repository = name.name();
        let candidates = store.images_by_digest(digest)?;
        if let Some(image) = candidates
            .into_iter()
            .find(|i| has_name_in_repository(i, &repository))
        {
            return Ok(Some(found(image)));
        }
    }
    Ok(None)
}

/// [`parse_local_reference`] then [`resolve_local`], with "not found" as
/// [`ImageError::ImageNotKnown`] naming `input`.
pub fn find_local_image(store: &Store, input: &str) -> Result<FoundImage> {
    let reference = parse_local_reference(store, input)?;
    resolve_local(store, &reference)?.ok_or_else(|| ImageError::ImageNotKnown {
        input: input.to_owned(),
    })
}
