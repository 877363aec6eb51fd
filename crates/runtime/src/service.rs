//! [`RuntimeService`]: the seed's `RuntimeServer` over an [`ImageService`]'s store — creating
//! pod sandboxes and containers from images (CRI-O §8.1–8.3 with the later fixes of §10),
//! removing them, mounting and unmounting their root filesystems, their CRI-O metadata and
//! their work and run directories.
//!
//! Invariant: a create either returns a [`ContainerInfo`] or leaves no container, layer or
//! directory behind (the store rolls back its own failures; every later failure deletes the
//! container again). Layer names are added atomically, never read-modified-written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::image::ImageConfiguration;
use podstore_image::{
    ImageError, ImageService, ImageServiceOptions, PullOptions, find_local_image,
};
use podstore_layer::{IdMappings, MountOptions};
use podstore_metadata::{
    Container, ContainerOptions, Error as StoreError, IdMappingOptions, Image, NamesOp, Store,
};
use podstore_reference::{Reference, is_qualified};
use serde::Serialize;

use crate::container_metadata::RuntimeContainerMetadata;
use crate::error::{Result, RuntimeError};
use crate::labels::{labels_for, random_categories, selinux_enabled};

/// What [`RuntimeService::create_pod_sandbox`] and [`RuntimeService::create_container`]
/// return (the seed's `ContainerInfo`), serialised with the seed's field names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerInfo {
    /// The store container ID (the pod ID for a sandbox).
    #[serde(rename = "ID")]
    pub id: String,
    /// The persistent per-container directory `<graphroot>/<driver>-containers/<id>/userdata`.
    #[serde(rename = "Dir")]
    pub dir: PathBuf,
    /// The volatile per-container directory `<runroot>/<driver>-containers/<id>/userdata`.
    #[serde(rename = "RunDir")]
    pub run_dir: PathBuf,
    /// The image's OCI configuration (`None` for an image without one, e.g. schema1).
    #[serde(rename = "Config")]
    pub config: Option<ImageConfiguration>,
    /// The SELinux process label recorded for the container ("" without SELinux).
    #[serde(rename = "ProcessLabel")]
    pub process_label: String,
    /// The SELinux mount label recorded for the container ("" without SELinux).
    #[serde(rename = "MountLabel")]
    pub mount_label: String,
}

/// The arguments of [`RuntimeService::create_pod_sandbox`] (the seed's `CreatePodSandbox`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSandboxRequest {
    /// The pod's name (required).
    pub pod_name: String,
    /// The pod's ID; also the infra container's ID (required).
    pub pod_id: String,
    /// The (pause) image name; pulled when absent, so it must then be fully qualified.
    pub image_name: String,
    /// The auth file for pulling the pause image (`None`: the image service's).
    pub image_auth_file: Option<PathBuf>,
    /// The image ID; when given, it is used instead of resolving the name (§10.7).
    pub image_id: String,
    /// The infra container's name (required).
    pub container_name: String,
    /// The CRI metadata name ("" means the container name).
    pub metadata_name: String,
    /// The pod's UID (recorded in the metadata).
    pub uid: String,
    /// The pod's namespace (recorded in the metadata).
    pub namespace: String,
    /// The CRI attempt number.
    pub attempt: u32,
    /// Requested ID maps (`None` or empty: the image top layer's). Other maps put the
    /// container's layer on an ID-shifted copy of the image's top layer, made once per image
    /// and maps and reused; the container record keeps the maps.
    pub id_mappings: Option<IdMappings>,
    /// SELinux label options.
    pub label_options: Vec<String>,
    /// Whether the sandbox is privileged (recorded in the metadata).
    pub privileged: bool,
}

/// The arguments of [`RuntimeService::create_container`] (the seed's `CreateContainer`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRequest {
    /// The pod's name (required).
    pub pod_name: String,
    /// The pod's ID (required).
    pub pod_id: String,
    /// The image name (one of name and ID is required); never pulled.
    pub image_name: String,
    /// The image ID; when given, it is used instead of resolving the name (§10.7).
    pub image_id: String,
    /// The container's name (required).
    pub container_name: String,
    /// The container ID ("" lets the store pick a random one).
    pub container_id: String,
    /// The CRI metadata name ("" means the container name).
    pub metadata_name: String,
    /// The CRI attempt number.
    pub attempt: u32,
    /// Requested ID maps (`None` or empty: the image top layer's). Other maps put the
    /// container's layer on an ID-shifted copy of the image's top layer, made once per image
    /// and maps and reused; the container record keeps the maps.
    pub id_mappings: Option<IdMappings>,
    /// SELinux label options.
    pub label_options: Vec<String>,
    /// Whether the container is privileged (recorded in the metadata).
    pub privileged: bool,
}

/// The shared creation routine's inputs.
struct CreateArgs<'a> {
    pod_name: &'a str,
    pod_id: &'a str,
    image_name: &'a str,
    image_id: &'a str,
    container_name: &'a str,
    container_id: &'a str,
    metadata_name: &'a str,
    uid: &'a str,
    namespace: &'a str,
    attempt: u32,
    id_mappings: Option<&'a IdMappings>,
    label_options: &'a [String],
    privileged: bool,
    /// `Some(auth file)` for the pause image (it is pulled when absent).
    pause: Option<Option<&'a PathBuf>>,
}

/// CRI-O's runtime server over the image service's store. Cheap to share (`&self`
/// everywhere; the store does the locking).
#[derive(Debug, Clone)]
pub struct RuntimeService {
    images: Arc<ImageService>,
    selinux: bool,
}

impl RuntimeService {
    /// The seed's `GetRuntimeService`: a runtime service using `images` for pulls and its store
    /// for everything else. Whether SELinux labels are made is detected from the host.
    pub fn new(images: impl Into<Arc<ImageService>>) -> RuntimeService {
        RuntimeService {
            images: images.into(),
            selinux: selinux_enabled(),
        }
    }

    /// Overrides SELinux detection (labels are "" when `false`).
    pub fn with_selinux(mut self, enabled: bool) -> RuntimeService {
        self.selinux = enabled;
        self
    }

    /// The image service.
    pub fn image_service(&self) -> &Arc<ImageService> {
        &self.images
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        self.images.store()
    }

    /// Creates a pod sandbox's infra container with ID = pod ID, names [container name, pod
    /// name] and metadata `pod: true` (CRI-O §8.2). An absent image is pulled by its fully
    /// qualified name (with the request's auth file) and then looked up by the canonical
    /// `repository@digest` the pull returned.
    pub fn create_pod_sandbox(&self, request: &PodSandboxRequest) -> Result<ContainerInfo> {
        self.create(&CreateArgs {
            pod_name: &request.pod_name,
            pod_id: &request.pod_id,
            image_name: &request.image_name,
            image_id: &request.image_id,
            container_name: &request.container_name,
            container_id: &request.pod_id,
            metadata_name: &request.metadata_name,
            uid: &request.uid,
            namespace: &request.namespace,
            attempt: request.attempt,
            id_mappings: request.id_mappings.as_ref(),
            label_options: &request.label_options,
            privileged: request.privileged,
            pause: Some(request.image_auth_file.as_ref()),
        })
    }

    /// Creates a container from a local image (never pulled), CRI-O §8.3.
    pub fn create_container(&self, request: &ContainerRequest) -> Result<ContainerInfo> {
        self.create(&CreateArgs {
            pod_name: &request.pod_name,
            pod_id: &request.pod_id,
            image_name: &request.image_name,
            image_id: &request.image_id,
            container_name: &request.container_name,
            container_id: &request.container_id,
            metadata_name: &request.metadata_name,
            uid: "",
            namespace: "",
            attempt: request.attempt,
            id_mappings: request.id_mappings.as_ref(),
            label_options: &request.label_options,
            privileged: request.privileged,
            pause: None,
        })
    }

    fn create(&self, args: &CreateArgs<'_>) -> Result<ContainerInfo> {
        if args.pod_name.is_empty() || args.pod_id.is_empty() {
            return Err(RuntimeError::InvalidPodName {
                pod_name: args.pod_name.to_owned(),
                pod_id: args.pod_id.to_owned(),
            });
        }
        if args.image_name.is_empty() && args.image_id.is_empty() {
            return Err(RuntimeError::InvalidImageName {
                image_name: String::new(),
                image_id: String::new(),
                reason: "neither an image name nor an image ID was given".to_owned(),
            });
        }
        if args.container_name.is_empty() {
            return Err(RuntimeError::InvalidContainerName {
                name: String::new(),
            });
        }
        let metadata_name = if args.metadata_name.is_empty() {
            args.container_name
        } else {
            args.metadata_name
        };
        let labels = labels_for(args.label_options, self.selinux, random_categories())?;
        let image = self.find_image(args)?;
        // Reading the config (through the image service's cache) fails before anything is
        // created when the image's manifest or config is unreadable.
        let config = self.images.image_status(&image.id)?.oci_config;
        let image_name = if args.image_name.is_empty() {
            image.names.first().cloned().unwrap_or_default()
        } else {
            args.image_name.to_owned()
        };
        let pod = args.container_id == args.pod_id;
        let metadata = RuntimeContainerMetadata {
            pod_name: args.pod_name.to_owned(),
            pod_id: args.pod_id.to_owned(),
            image_name,
            image_id: image.id.clone(),
            container_name: args.container_name.to_owned(),
            metadata_name: metadata_name.to_owned(),
            uid: args.uid.to_owned(),
            namespace: args.namespace.to_owned(),
            mount_label: String::new(),
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            attempt: args.attempt,
            pod,
            privileged: args.privileged,
        };
        let mut names = vec![args.container_name.to_owned()];
        if pod && !names.iter().any(|n| n == args.pod_name) {
            names.push(args.pod_name.to_owned());
        }
        let container = self.store().create_container(ContainerOptions {
            id: (!args.container_id.is_empty()).then(|| args.container_id.to_owned()),
            names,
            image: image.id.clone(),
            metadata: metadata.to_json(),
            mount_label: labels.mount_label,
            process_label: labels.process_label,
            id_mappings: args
                .id_mappings
                .map(|m| IdMappingOptions {
                    uid_map: m.uid.clone(),
                    gid_map: m.gid.clone(),
                    ..IdMappingOptions::default()
                })
                .unwrap_or_default(),
            ..ContainerOptions::default()
        })?;
        match self.finish_create(&container, args, config) {
            Ok(info) => Ok(info),
            Err(e) => {
                if let Err(cleanup) = self.store().delete_container(&container.id) {
                    tracing::warn!(
                        "removing container {} after a failed create ({e}) failed: {cleanup}",
                        container.id
                    );
                }
                Err(e)
            }
        }
    }

    /// Everything after the store created the container; any error makes the caller delete it.
    fn finish_create(
        &self,
        container: &Container,
        args: &CreateArgs<'_>,
        config: Option<ImageConfiguration>,
    ) -> Result<ContainerInfo> {
        let store = self.store();
        store.update_layer_names(
            &container.layer,
            &[format!("{}-layer", args.container_name)],
            NamesOp::Add,
        )?;
        let dir = store.container_directory(&container.id)?;
        let run_dir = store.container_run_directory(&container.id)?;
        let flag = |key: &str| {
            container
                .flags
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        Ok(ContainerInfo {
            id: container.id.clone(),
            dir,
            run_dir,
            config,
            process_label: flag("ProcessLabel"),
            mount_label: flag("MountLabel"),
        })
    }

    /// The image a create uses: by the caller's ID when given (§10.7), else by name; an absent
    /// pause image is pulled.
    fn find_image(&self, args: &CreateArgs<'_>) -> Result<Image> {
        let store = self.store();
        let not_present = || RuntimeError::ImageNotPresent {
            name: args.image_name.to_owned(),
            id: args.image_id.to_owned(),
        };
        if !args.image_id.is_empty() {
            let id = args.image_id;
            return match store.image(id) {
                Ok(image)
                    if image.id == id
                        || (id.len() >= 3
                            && id.bytes().all(|b| b.is_ascii_hexdigit())
                            && image.id.starts_with(id)) =>
                {
                    Ok(image)
                }
                Ok(_)
                | Err(StoreError::ImageUnknown { .. } | StoreError::AmbiguousPrefix { .. }) => {
                    Err(not_present())
                }
                Err(e) => Err(e.into()),
            };
        }
        let name = args
            .image_name
            .strip_prefix("docker://")
            .unwrap_or(args.image_name);
        match find_local_image(store, name) {
            Ok(found) => return Ok(found.record),
            Err(ImageError::ImageNotKnown { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // Only "not found" leads to a pull (§10.8), and only for the pause image.
        let Some(auth_file) = args.pause else {
            return Err(not_present());
        };
        self.pull_pause_image(args.image_name, auth_file)
    }

    /// Pulls the pause image `name` (fully qualified, no transport) and looks it up by the
    /// canonical `repository@digest` reference the pull produced.
    fn pull_pause_image(&self, name: &str, auth_file: Option<&PathBuf>) -> Result<Image> {
        let not_qualified = || RuntimeError::PauseImageNotQualified {
            name: name.to_owned(),
        };
        if name.contains("://") || !is_qualified(name) {
            return Err(not_qualified());
        }
        let reference = Reference::parse_normalized(name).map_err(|_| not_qualified())?;
        let with_auth;
        let service: &ImageService = match auth_file {
            Some(file) => {
                with_auth = ImageService::new(
                    Arc::clone(self.store()),
                    ImageServiceOptions {
                        auth_file: Some(file.clone()),
                        ..self.images.options().clone()
                    },
                )?;
                &with_auth
            }
            None => &self.images,
        };
        let pulled = service.pull_image_blocking(
            &format!("docker://{}", reference.tag_or_latest()),
            &PullOptions::default(),
        )?;
        let canonical = format!("{}@{}", reference.name(), pulled.manifest_digest);
        Ok(find_local_image(self.store(), &canonical)?.record)
    }

    /// Looks a container up, mapping "not known" with `unknown`.
    fn lookup(&self, id: &str, unknown: fn(String) -> RuntimeError) -> Result<Container> {
        match self.store().container(id) {
            Ok(c) => Ok(c),
            Err(StoreError::ContainerUnknown { .. }) => Err(unknown(id.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a pod sandbox's infra container (record, layer, directories; unmounted first).
    /// An empty or unknown ID is [`RuntimeError::InvalidSandboxId`].
    pub fn remove_pod_sandbox(&self, id_or_name: &str) -> Result<()> {
        let unknown = |id| RuntimeError::InvalidSandboxId { id };
        let container = self.lookup(id_or_name, unknown)?;
        match self.store().delete_container(&container.id) {
            Ok(()) => Ok(()),
            Err(StoreError::ContainerUnknown { .. }) => Err(unknown(id_or_name.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a container (record, layer, directories; unmounted first). "" is
    /// [`RuntimeError::InvalidContainerId`]; an unknown container is success (§10.3).
    pub fn delete_container(&self, id_or_name: &str) -> Result<()> {
        if id_or_name.is_empty() {
            return Err(RuntimeError::InvalidContainerId { id: String::new() });
        }
        match self.store().delete_container(id_or_name) {
            Ok(()) | Err(StoreError::ContainerUnknown { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Mounts the container's root filesystem (counted: a second start returns the same path
    /// and raises the count) with the metadata's mount label, falling back to the layer's.
    /// Unknown is [`RuntimeError::InvalidContainerId`]; non-CRI-O metadata is
    /// [`RuntimeError::Metadata`].
    pub fn start_container(&self, id_or_name: &str) -> Result<PathBuf> {
        let container = self.lookup(id_or_name, |id| RuntimeError::InvalidContainerId { id })?;
        let metadata =
            RuntimeContainerMetadata::from_json(&container.metadata).map_err(|source| {
                RuntimeError::Metadata {
                    id: container.id.clone(),
                    source,
                }
            })?;
        let options = MountOptions {
            mount_label: Some(metadata.mount_label).filter(|l| !l.is_empty()),
            ..MountOptions::default()
        };
        match self.store().mount(&container.id, &options) {
            Ok(path) => Ok(path),
            Err(StoreError::ContainerUnknown { .. } | StoreError::LayerUnknown { .. }) => {
                Err(RuntimeError::InvalidContainerId {
                    id: id_or_name.to_owned(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Unmounts the container's root filesystem, dropping every mount reference (force, §10.4).
    /// "" is [`RuntimeError::InvalidContainerId`]; an unknown container or layer is success.
    pub fn stop_container(&self, id_or_name: &str) -> Result<()> {
        if id_or_name.is_empty() {
            return Err(RuntimeError::InvalidContainerId { id: String::new() });
        }
        let container = match self.store().container(id_or_name) {
            Ok(c) => c,
            Err(StoreError::ContainerUnknown { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match self.store().unmount(&container.id, true) {
            Ok(_) | Err(StoreError::ContainerUnknown { .. } | StoreError::LayerUnknown { .. }) => {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The container's CRI-O metadata. Unknown is [`RuntimeError::InvalidContainerId`];
    /// metadata that does not decode is [`RuntimeError::Metadata`].
    pub fn get_container_metadata(&self, id_or_name: &str) -> Result<RuntimeContainerMetadata> {
        let container = self.lookup(id_or_name, |id| RuntimeError::InvalidContainerId { id })?;
        RuntimeContainerMetadata::from_json(&container.metadata).map_err(|source| {
            RuntimeError::Metadata {
                id: container.id.clone(),
                source,
            }
        })
    }

    /// Replaces the container's metadata with `metadata`'s CRI-O encoding. Unknown is
    /// [`RuntimeError::InvalidContainerId`].
    pub fn set_container_metadata(
        &self,
        id_or_name: &str,
        metadata: &RuntimeContainerMetadata,
    ) -> Result<()> {
        match self
            .store()
            .set_container_metadata(id_or_name, &metadata.to_json())
        {
            Ok(()) => Ok(()),
            Err(StoreError::ContainerUnknown { .. }) => Err(RuntimeError::InvalidContainerId {
                id: id_or_name.to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// `<graphroot>/<driver>-containers/<id>/userdata`, created (0700) if missing. Unknown is
    /// [`RuntimeError::InvalidContainerId`].
    pub fn get_work_dir(&self, id: &str) -> Result<PathBuf> {
        match self.store().container_directory(id) {
            Ok(dir) => Ok(dir),
            Err(StoreError::ContainerUnknown { .. }) => {
                Err(RuntimeError::InvalidContainerId { id: id.to_owned() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `<runroot>/<driver>-containers/<id>/userdata`, created (0700) if missing. Unknown is
    /// [`RuntimeError::InvalidContainerId`].
    pub fn get_run_dir(&self, id: &str) -> Result<PathBuf> {
        match self.store().container_run_directory(id) {
            Ok(dir) => Ok(dir),
            Err(StoreError::ContainerUnknown { .. }) => {
                Err(RuntimeError::InvalidContainerId { id: id.to_owned() })
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_info_serialises_with_the_seed_field_names() {
        let info = ContainerInfo {
            id: "id".into(),
            dir: PathBuf::from("/g/vfs-containers/id/userdata"),
            run_dir: PathBuf::from("/r/vfs-containers/id/userdata"),
            config: None,
            process_label: "p".into(),
            mount_label: "m".into(),
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"ID":"id","Dir":"/g/vfs-containers/id/userdata","RunDir":"/r/vfs-containers/id/userdata","Config":null,"ProcessLabel":"p","MountLabel":"m"}"#
        );
    }
}
