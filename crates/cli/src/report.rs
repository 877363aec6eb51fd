//! `podstore info` and `podstore df`: what the store holds and how much disk it uses, gathered
//! from the Store's records and its driver's layer sizes, as tables or JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::{Context, Result};
use podstore_metadata::{Layer, Store};
use serde_json::json;

use crate::output::{aligned, human_size};

/// The containers/storage release whose on-disk format and lock protocol podstore writes.
pub const CONTAINERS_STORAGE_VERSION: &str = "1.43";
/// The containers/image release whose pull records (image IDs, big data) podstore matches.
pub const CONTAINERS_IMAGE_VERSION: &str = "5.23";

/// Everything `podstore info` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// podstore's version.
    pub version: String,
    /// The graph root.
    pub graph_root: PathBuf,
    /// The run root.
    pub run_root: PathBuf,
    /// The driver in use (`overlay` or `vfs`).
    pub driver: String,
    /// The driver options in effect.
    pub driver_options: Vec<String>,
    /// The storage.conf that was read (`None`: built-in defaults).
    pub config_file: Option<PathBuf>,
    /// Number of layer records.
    pub layers: usize,
    /// Number of image records.
    pub images: usize,
    /// Number of container records.
    pub containers: usize,
    /// Number of containers whose root filesystem is mounted now.
    pub mounted_containers: usize,
}

impl Info {
    /// Reads the counts from `store`.
    pub fn gather(
        store: &Store,
        driver_options: &[String],
        config_file: Option<PathBuf>,
    ) -> Result<Info> {
        let layers = store.layers().context("reading the layer records")?;
        let images = store.images().context("reading the image records")?;
        let containers = store
            .containers()
            .context("reading the container records")?;
        let mut mounted_containers = 0;
        for container in &containers {
            if store.mount_count(&container.layer).unwrap_or(0) > 0 {
                mounted_containers += 1;
            }
        }
        Ok(Info {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            graph_root: store.graph_root().to_path_buf(),
            run_root: store.run_root().to_path_buf(),
            driver: store.driver_name().to_owned(),
            driver_options: driver_options.to_vec(),
            config_file,
            layers: layers.len(),
            images: images.len(),
            containers: containers.len(),
            mounted_containers,
        })
    }

    /// `info --format json`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "Version": self.version,
            "Store": {
                "GraphRoot": self.graph_root,
                "RunRoot": self.run_root,
                "Driver": self.driver,
                "DriverOptions": self.driver_options,
                "ConfigFile": self.config_file,
            },
            "Counts": {
                "Layers": self.layers,
                "Images": self.images,
                "Containers": self.containers,
                "MountedContainers": self.mounted_containers,
            },
            "Formats": {
                "ContainersStorage": CONTAINERS_STORAGE_VERSION,
                "ContainersImage": CONTAINERS_IMAGE_VERSION,
            },
        })
    }

    /// `info` as `key: value` lines.
    pub fn to_text(&self) -> String {
        let options = if self.driver_options.is_empty() {
            "(none)".to_owned()
        } else {
            self.driver_options.join(" ")
        };
        let config = self.config_file.as_ref().map_or_else(
            || "(none: built-in defaults)".to_owned(),
            |p| p.display().to_string(),
        );
        format!(
            "podstore version:   {}\n\
             graph root:         {}\n\
             run root:           {}\n\
             storage driver:     {}\n\
             driver options:     {options}\n\
             storage.conf:       {config}\n\
             layers:             {}\n\
             images:             {}\n\
             containers:         {} ({} mounted)\n\
             on-disk format:     containers/storage {CONTAINERS_STORAGE_VERSION}\n\
             image records:      containers/image {CONTAINERS_IMAGE_VERSION}\n",
            self.version,
            self.graph_root.display(),
            self.run_root.display(),
            self.driver,
            self.layers,
            self.images,
            self.containers,
            self.mounted_containers,
        )
    }
}

/// One image's disk use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUsage {
    /// The image ID.
    pub id: String,
    /// Its names.
    pub names: Vec<String>,
    /// Its layers, top first.
    pub layers: Vec<String>,
    /// Sum of its layers' sizes.
    pub size: u64,
    /// The part of `size` in layers other images also use.
    pub shared_size: u64,
    /// The part of `size` only this image uses (`size - shared_size`).
    pub unique_size: u64,
    /// How many containers are made from it.
    pub containers: usize,
}

/// One container's writable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    /// The container ID.
    pub id: String,
    /// Its names.
    pub names: Vec<String>,
    /// Its image's ID.
    pub image: String,
    /// Size of its writable layer.
    pub size: u64,
}

/// Everything `podstore df` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Per image, in the store's order.
    pub images: Vec<ImageUsage>,
    /// Per container, in the store's order.
    pub containers: Vec<ContainerUsage>,
    /// Layers some image uses: count and size, each counted once.
    pub image_layers: (usize, u64),
    /// Of those, layers two or more images use: count and size.
    pub shared_layers: (usize, u64),
    /// Containers' writable layers: count and size.
    pub container_layers: (usize, u64),
    /// Layers no image and no container uses (left by an interrupted operation, or made by
    /// another tool): count and size.
    pub other_layers: (usize, u64),
}

impl DiskUsage {
    /// Measures every layer of `store` once (apparent sizes of its own files on the driver).
    pub fn gather(store: &Store) -> Result<DiskUsage> {
        let layers = store.layers().context("reading the layer records")?;
        let images = store.images().context("reading the image records")?;
        let containers = store
            .containers()
            .context("reading the container records")?;
        let by_id: HashMap<&str, &Layer> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
        let mut sizes: HashMap<&str, u64> = HashMap::new();
        for layer in &layers {
            // A layer whose directory is gone (a broken store) counts as empty rather than
            // failing the whole report.
            let size = store.driver().size(&layer.id).unwrap_or(0);
            sizes.insert(layer.id.as_str(), size);
        }
        let size_of = |id: &str| sizes.get(id).copied().unwrap_or(0);

        let chains: Vec<Vec<String>> = images
            .iter()
            .map(|image| layer_chain(&image.layer, &by_id))
            .collect();
        let mut users: BTreeMap<&str, usize> = BTreeMap::new();
        for chain in &chains {
            for layer in chain.iter().collect::<BTreeSet<_>>() {
                *users.entry(layer.as_str()).or_default() += 1;
            }
        }
        let mut containers_of: HashMap<&str, usize> = HashMap::new();
        for container in &containers {
            *containers_of.entry(container.image.as_str()).or_default() += 1;
        }

        let image_usages = images
            .iter()
            .zip(&chains)
            .map(|(image, chain)| {
                let size: u64 = chain.iter().map(|l| size_of(l)).sum();
                let shared_size: u64 = chain
                    .iter()
                    .filter(|l| users.get(l.as_str()).copied().unwrap_or(0) > 1)
                    .map(|l| size_of(l))
                    .sum();
                ImageUsage {
                    id: image.id.clone(),
                    names: image.names.clone(),
                    layers: chain.clone(),
                    size,
                    shared_size,
                    unique_size: size - shared_size,
                    containers: containers_of.get(image.id.as_str()).copied().unwrap_or(0),
                }
            })
            .collect();
        let container_usages: Vec<ContainerUsage> = containers
            .iter()
            .map(|c| ContainerUsage {
                id: c.id.clone(),
                names: c.names.clone(),
                image: c.image.clone(),
                size: if c.layer.is_empty() {
                    0
                } else {
                    size_of(&c.layer)
                },
            })
            .collect();

        let count_and_size = |ids: &mut dyn Iterator<Item = &str>| {
            ids.fold((0, 0), |(n, bytes), id| (n + 1, bytes + size_of(id)))
        };
        let image_layers = count_and_size(&mut users.keys().copied());
        let shared_layers =
            count_and_size(&mut users.iter().filter(|(_, n)| **n > 1).map(|(id, _)| *id));
        let container_layer_ids: BTreeSet<&str> = containers
            .iter()
            .map(|c| c.layer.as_str())
            .filter(|l| !l.is_empty() && by_id.contains_key(l))
            .collect();
        let container_layers = count_and_size(&mut container_layer_ids.iter().copied());
        let other_layers = count_and_size(
            &mut layers
                .iter()
                .map(|l| l.id.as_str())
                .filter(|id| !users.contains_key(id) && !container_layer_ids.contains(id)),
        );
        Ok(DiskUsage {
            images: image_usages,
            containers: container_usages,
            image_layers,
            shared_layers,
            container_layers,
            other_layers,
        })
    }

    /// Every layer's bytes, each counted once.
    pub fn total(&self) -> u64 {
        self.image_layers.1 + self.container_layers.1 + self.other_layers.1
    }

    /// `df --format json`.
    pub fn to_json(&self) -> serde_json::Value {
        let pair = |(count, size): (usize, u64)| json!({ "Count": count, "Size": size });
        json!({
            "Images": self.images.iter().map(|i| json!({
                "ID": i.id,
                "Names": i.names,
                "Layers": i.layers,
                "Size": i.size,
                "SharedSize": i.shared_size,
                "UniqueSize": i.unique_size,
                "Containers": i.containers,
            })).collect::<Vec<_>>(),
            "Containers": self.containers.iter().map(|c| json!({
                "ID": c.id,
                "Names": c.names,
                "Image": c.image,
                "Size": c.size,
            })).collect::<Vec<_>>(),
            "Totals": {
                "ImageLayers": pair(self.image_layers),
                "SharedLayers": pair(self.shared_layers),
                "ContainerLayers": pair(self.container_layers),
                "OtherLayers": pair(self.other_layers),
                "Total": self.total(),
            },
        })
    }

    /// `df` as three tables: images, containers, totals.
    pub fn to_text(&self) -> String {
        let short = |id: &str| id.chars().take(12).collect::<String>();
        let names = |names: &[String]| {
            if names.is_empty() {
                "<none>".to_owned()
            } else {
                names.join(",")
            }
        };
        let image_rows: Vec<[String; 7]> = self
            .images
            .iter()
            .map(|i| {
                [
                    short(&i.id),
                    names(&i.names),
                    i.layers.len().to_string(),
                    human_size(i.size),
                    human_size(i.shared_size),
                    human_size(i.unique_size),
                    i.containers.to_string(),
                ]
            })
            .collect();
        let header = [
            "IMAGE ID",
            "NAMES",
            "LAYERS",
            "SIZE",
            "SHARED",
            "UNIQUE",
            "CONTAINERS",
        ]
        .map(str::to_owned);
        let mut out = aligned(&header, &image_rows);
        out.push('\n');
        let container_rows: Vec<[String; 4]> = self
            .containers
            .iter()
            .map(|c| {
                [
                    short(&c.id),
                    names(&c.names),
                    short(&c.image),
                    human_size(c.size),
                ]
            })
            .collect();
        let header = ["CONTAINER ID", "NAMES", "IMAGE ID", "WRITABLE"].map(str::to_owned);
        out.push_str(&aligned(&header, &container_rows));
        out.push('\n');
        let line = |label: &str, (count, size): (usize, u64)| {
            [label.to_owned(), count.to_string(), human_size(size)]
        };
        let totals = [
            line("image layers", self.image_layers),
            line("  shared by 2+ images", self.shared_layers),
            line("container layers", self.container_layers),
            line("other layers", self.other_layers),
            [
                "total".to_owned(),
                (self.image_layers.0 + self.container_layers.0 + self.other_layers.0).to_string(),
                human_size(self.total()),
            ],
        ];
        let header = ["TOTALS", "LAYERS", "SIZE"].map(str::to_owned);
        out.push_str(&aligned(&header, &totals));
        out
    }
}

/// The layer `top` and its ancestors, top first; stops at a missing parent or a cycle.
fn layer_chain(top: &str, by_id: &HashMap<&str, &Layer>) -> Vec<String> {
    let mut chain = Vec::new();
    let mut seen = BTreeSet::new();
    let mut next = top;
    while !next.is_empty() && seen.insert(next) {
        let Some(layer) = by_id.get(next) else { break };
        chain.push(layer.id.clone());
        next = layer.parent.as_str();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(id: &str, parent: &str) -> Layer {
        Layer {
            id: id.into(),
            parent: parent.into(),
            ..Layer::default()
        }
    }

    #[test]
    fn layer_chain_table() {
        let layers = [
            layer("a", ""),
            layer("b", "a"),
            layer("c", "b"),
            layer("loop1", "loop2"),
            layer("loop2", "loop1"),
            layer("orphan", "missing"),
        ];
        let by_id: HashMap<&str, &Layer> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
        for (top, expected) in [
            ("c", vec!["c", "b", "a"]),
            ("a", vec!["a"]),
            ("", vec![]),
            ("missing", vec![]),
            ("loop1", vec!["loop1", "loop2"]),
            ("orphan", vec!["orphan"]),
        ] {
            assert_eq!(layer_chain(top, &by_id), expected, "{top}");
        }
    }
}
