//! The runtime service's error type: CRI-O's runtime error values (`ErrInvalidPodName`,
//! `ErrInvalidImageName`, `ErrInvalidContainerName`, `ErrInvalidSandboxID`,
//! `ErrInvalidContainerID`) as typed variants carrying the offending input, plus the failures
//! of the image service and the store.

use crate::container_metadata::MetadataDecodeError;

/// A runtime-service failure. Every variant names the input it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// CRI-O's `ErrInvalidPodName`: the pod name or the pod ID is empty.
    #[error("invalid pod name: pod name {pod_name:?}, pod ID {pod_id:?} (neither may be empty)")]
    InvalidPodName {
        /// The pod name given.
        pod_name: String,
        /// The pod ID given.
        pod_id: String,
    },
    /// CRI-O's `ErrInvalidImageName`: neither an image name nor an image ID was given.
    #[error("invalid image name: image name {image_name:?}, image ID {image_id:?} ({reason})")]
    InvalidImageName {
        /// The image name given.
        image_name: String,
        /// The image ID given.
        image_id: String,
        /// Why.
        reason: String,
    },
    /// CRI-O's `ErrInvalidContainerName`: the container name is empty.
    #[error("invalid container name {name:?}")]
    InvalidContainerName {
        /// The container name given.
        name: String,
    },
    /// CRI-O's `ErrInvalidSandboxID`: empty, or no such container.
    #[error("invalid sandbox ID {id:?}: no such pod sandbox")]
    InvalidSandboxId {
        /// The ID or name given.
        id: String,
    },
    /// CRI-O's `ErrInvalidContainerID`: empty, or no such container.
    #[error("invalid container ID {id:?}: no such container")]
    InvalidContainerId {
        /// The ID or name given.
        id: String,
    },
    /// The image is not in the store (and, for a container, is never pulled).
    #[error("{}", image_not_present_message(name, id))]
    ImageNotPresent {
        /// The image name given ("" if none).
        name: String,
        /// The image ID given ("" if none).
        id: String,
    },
    /// A pause image that is absent is pulled only by a fully qualified registry reference
    /// (`registry.example/repo:tag`), never by short name, ID or transport (CRI-O §10.8).
    #[error(
        "pause image {name:?} is not in the store and is not a fully qualified registry reference to pull"
    )]
    PauseImageNotQualified {
        /// The pause image name given.
        name: String,
    },
    /// An SELinux label option is not one of `disable`, `user:`, `role:`, `type:`, `level:`,
    /// `filetype:` (go-selinux's "Bad label option").
    #[error("bad SELinux label option {option:?}")]
    BadLabelOption {
        /// The offending option.
        option: String,
    },
    /// The container's metadata string is not CRI-O metadata (e.g. a podman container).
    #[error("container {id}: {source}")]
    Metadata {
        /// The container.
        id: String,
        /// The decode error (it quotes the metadata string).
        #[source]
        source: MetadataDecodeError,
    },
    /// The image service failed (lookup, pull, reading the image's config).
    #[error(transparent)]
    Image(#[from] podstore_image::ImageError),
    /// The store failed (duplicate ID or name, I/O, locks…).
    #[error(transparent)]
    Store(#[from] podstore_metadata::Error),
}

fn image_not_present_message(name: &str, id: &str) -> String {
    match (name.is_empty(), id.is_empty()) {
        (false, true) => format!("image {name:?} not present in image store"),
        (true, false) => format!("image with ID {id:?} not present in image store"),
        _ => format!("image {name:?} with ID {id:?} not present in image store"),
    }
}

/// A runtime-service result.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
