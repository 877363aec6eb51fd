//! How results are printed: human-readable sizes and ages, the `images` table (REPOSITORY,
//! TAG, IMAGE ID, CREATED, SIZE), the `ps` rows (JSON and table: ID, NAMES, IMAGE, POD, CRIO,
//! CREATED), aligned tables, and the destination name podman gives an `oci:` layout pull.

use podstore_image::ImageResult;
use podstore_metadata::{Container, GoTime};
use podstore_runtime::RuntimeContainerMetadata;

/// One `ps` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    /// The full container ID.
    pub id: String,
    /// The container's names.
    pub names: Vec<String>,
    /// The full image ID ("" when none).
    pub image: String,
    /// The pod name from the CRI-O metadata ("" when none).
    pub pod_name: String,
    /// The pod ID from the CRI-O metadata ("" when none).
    pub pod_id: String,
    /// Whether the metadata is CRI-O's (names a pod name and a pod ID).
    pub crio: bool,
    /// When the container record was created.
    pub created: GoTime,
}

/// The `ps` rows; metadata that does not decode counts as not CRI-O's.
pub fn container_rows(containers: &[Container]) -> Vec<ContainerRow> {
    containers
        .iter()
        .map(|c| {
            let metadata = RuntimeContainerMetadata::from_json(&c.metadata).ok();
            let crio = metadata
                .as_ref()
                .is_some_and(RuntimeContainerMetadata::is_crio_container);
            let metadata = metadata.unwrap_or_default();
            ContainerRow {
                id: c.id.clone(),
                names: c.names.clone(),
                image: c.image.clone(),
                pod_name: metadata.pod_name,
                pod_id: metadata.pod_id,
                crio,
                created: c.created,
            }
        })
        .collect()
}

/// `ps --format json`: an array of objects with the keys ID, Names, Image, PodName, PodID,
/// Crio and Created (RFC 3339, as in `containers.json`).
pub fn container_json(rows: &[ContainerRow]) -> serde_json::Value {
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "ID": r.id,
                "Names": r.names,
                "Image": r.image,
                "PodName": r.pod_name,
                "PodID": r.pod_id,
                "Crio": r.crio,
                "Created": r.created.to_string(),
            })
        })
        .collect()
}

/// The `ps` table: ID (12), NAMES (comma-separated), IMAGE (12), POD, CRIO, CREATED (age
/// at `now`).
pub fn container_table(rows: &[ContainerRow], now: GoTime) -> String {
    let header = ["ID", "NAMES", "IMAGE", "POD", "CRIO", "CREATED"].map(str::to_owned);
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.id.chars().take(12).collect(),
                r.names.join(","),
                r.image.chars().take(12).collect(),
                r.pod_name.clone(),
                if r.crio { "yes" } else { "no" }.to_owned(),
                human_age(r.created, now),
            ]
        })
        .collect();
    aligned(&header, &cells)
}

/// Rows of cells, header first, left-aligned, columns separated by at least three spaces.
pub fn aligned<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> String {
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A size in decimal units with three significant digits, as podman prints it
/// (`512 B`, `4.27 MB`, `1.2 GB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    // Precision loss above 2^53 bytes is irrelevant for three significant digits.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value >= 99.95 {
        0
    } else if value >= 9.995 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.digits$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text} {}", UNITS[unit])
}

/// How long before `now` `then` was, in podman's words (go-units' `HumanDuration` + " ago"):
/// `Less than a second ago`, `5 seconds ago`, `About a minute ago`, `3 minutes ago`,
/// `About an hour ago`, `5 hours ago`, `3 days ago`, `2 weeks ago`, `4 months ago`,
/// `6 years ago`. A time in the future reads `Less than a second ago`, as podman's does; a
/// zero time reads `-`.
pub fn human_age(then: GoTime, now: GoTime) -> String {
    if then.is_zero() {
        return "-".to_owned();
    }
    let seconds = now.unix_seconds().saturating_sub(then.unix_seconds());
    let text = match seconds {
        ..1 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        2..60 => format!("{seconds} seconds"),
        60..120 => "About a minute".to_owned(),
        120..3600 => format!("{} minutes", seconds / 60),
        3600..7200 => "About an hour".to_owned(),
        // go-units: hours below 48, days below two weeks, weeks below two months (60 days),
        // months below two years, then years
        7200..172_800 => format!("{} hours", seconds / 3600),
        172_800..1_209_600 => format!("{} days", seconds / 86_400),
        1_209_600..5_184_000 => format!("{} weeks", seconds / 604_800),
        5_184_000..63_072_000 => format!("{} months", seconds / 2_592_000),
        _ => format!("{} years", seconds / 31_536_000),
    };
    format!("{text} ago")
}

/// When an image was created: its OCI config's `created`, else the store record's time.
pub fn image_created(image: &ImageResult, record_created: Option<GoTime>) -> Option<GoTime> {
    image
        .oci_config
        .as_ref()
        .and_then(|config| config.created().as_deref())
        .and_then(GoTime::parse)
        .or(record_created)
}

/// Splits a stored name into repository and tag (`<none>` when it has none).
pub fn split_repository_tag(name: &str) -> (String, String) {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => (
            name[..last_slash + i].to_owned(),
            name[last_slash + i + 1..].to_owned(),
        ),
        None => (name.to_owned(), "<none>".to_owned()),
    }
}

/// The rows of the `images` table: one per tag, or one `<none>` row for an untagged image
/// (its repository is `<PreviousName>` when it has one, as podman shows dangling images).
/// `created` gives each image's creation time (by index), ages are taken at `now`.
pub fn image_rows(
    images: &[ImageResult],
    created: &[Option<GoTime>],
    now: GoTime,
) -> Vec<[String; 5]> {
    let mut rows = Vec::new();
    for (index, image) in images.iter().enumerate() {
        let id: String = image.id.chars().take(12).collect();
        let size = image.size.map_or_else(|| "-".to_owned(), human_size);
        let age = created
            .get(index)
            .copied()
            .flatten()
            .map_or_else(|| "-".to_owned(), |t| human_age(t, now));
        if image.repo_tags.is_empty() {
            let repository = if image.previous_name.is_empty() {
                "<none>".to_owned()
            } else {
                image.previous_name.clone()
            };
            rows.push([repository, "<none>".to_owned(), id, age, size]);
            continue;
        }
        for tag in &image.repo_tags {
            let (repository, tag) = split_repository_tag(tag);
            rows.push([repository, tag, id.clone(), age.clone(), size.clone()]);
        }
    }
    rows
}

/// The `images` table, header included, columns separated by at least three spaces.
pub fn image_table(images: &[ImageResult], created: &[Option<GoTime>], now: GoTime) -> String {
    let header = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"].map(str::to_owned);
    aligned(&header, &image_rows(images, created, now))
}

/// The name podman records for `oci:PATH:NAME` (`localhost/NAME`, `:latest` added when it has
/// no tag or digest); `None` for other sources or a layout reference without a name.
pub fn oci_destination_name(source: &str) -> Option<String> {
    let within = source.strip_prefix("oci:")?;
    let (_, name) = within.split_once(':')?;
    if name.is_empty() {
        return None;
    }
    let first = name.split('/').next().unwrap_or(name);
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_domain {
        name.to_owned()
    } else {
        format!("localhost/{name}")
    };
    let last = full.rsplit('/').next().unwrap_or(&full);
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    Some(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_rows_table() {
        let crio = r#"{"pod-name":"web","pod-id":"p1","name":"app"}"#;
        for (metadata, pod_name, crio_cell) in [
            (crio, "web", "yes"),
            (r#"{"pod-name":"web"}"#, "web", "no"),
            ("", "", "no"),
            ("{}", "", "no"),
            ("not json", "", "no"),
        ] {
            let container = Container {
                id: "0123456789abcdef".into(),
                names: vec!["a".into(), "b".into()],
                image: "fedcba9876543210".into(),
                metadata: metadata.into(),
                ..Container::default()
            };
            let rows = container_rows(&[container]);
            assert_eq!(rows[0].pod_name, pod_name, "{metadata}");
            let table = container_table(&rows, GoTime::now_utc());
            let lines: Vec<&str> = table.lines().collect();
            assert_eq!(
                lines[0].split_whitespace().collect::<Vec<_>>(),
                ["ID", "NAMES", "IMAGE", "POD", "CRIO", "CREATED"]
            );
            let mut expected = vec!["0123456789ab", "a,b", "fedcba987654"];
            if !pod_name.is_empty() {
                expected.push(pod_name);
            }
            expected.push(crio_cell);
            // a zero creation time shows as "-"
            expected.push("-");
            assert_eq!(
                lines[1].split_whitespace().collect::<Vec<_>>(),
                expected,
                "{metadata}"
            );
            let json = container_json(&rows);
            assert_eq!(json[0]["Crio"], crio_cell == "yes", "{metadata}");
            assert_eq!(json[0]["ID"], "0123456789abcdef");
        }
    }

    #[test]
    fn human_age_table() {
        let now = GoTime::from_unix(1_700_000_000, 0);
        for (seconds_ago, expected) in [
            (-5, "Less than a second ago"),
            (0, "Less than a second ago"),
            (1, "1 second ago"),
            (59, "59 seconds ago"),
            (60, "About a minute ago"),
            (119, "About a minute ago"),
            (180, "3 minutes ago"),
            (3599, "59 minutes ago"),
            (3600, "About an hour ago"),
            (7200, "2 hours ago"),
            (47 * 3600, "47 hours ago"),
            (48 * 3600, "2 days ago"),
            (13 * 86_400, "13 days ago"),
            (14 * 86_400, "2 weeks ago"),
            (59 * 86_400, "8 weeks ago"),
            (60 * 86_400, "2 months ago"),
            (729 * 86_400, "24 months ago"),
            (730 * 86_400, "2 years ago"),
        ] {
            let then = GoTime::from_unix(1_700_000_000 - seconds_ago, 0);
            assert_eq!(human_age(then, now), expected, "{seconds_ago}");
        }
        assert_eq!(human_age(GoTime::default(), now), "-");
    }

    #[test]
    fn human_size_table() {
        for (bytes, expected) in [
            (0, "0 B"),
            (512, "512 B"),
            (999, "999 B"),
            (1000, "1 kB"),
            (1234, "1.23 kB"),
            (4_270_000, "4.27 MB"),
            (12_345_678, "12.3 MB"),
            (123_456_789, "123 MB"),
            (999_600, "1 MB"),
            (1_200_000_000, "1.2 GB"),
        ] {
            assert_eq!(human_size(bytes), expected, "{bytes}");
        }
    }

    #[test]
    fn repository_tag_table() {
        for (name, repository, tag) in [
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
                "latest",
            ),
            (
                "127.0.0.1:5000/testkit/busybox:zstd",
                "127.0.0.1:5000/testkit/busybox",
                "zstd",
            ),
            ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox", "<none>"),
            ("busybox", "busybox", "<none>"),
        ] {
            assert_eq!(
                split_repository_tag(name),
                (repository.to_owned(), tag.to_owned()),
                "{name}"
            );
        }
    }

    #[test]
    fn oci_destination_name_table() {
        for (source, expected) in [
            ("oci:/srv/layout:busybox", Some("localhost/busybox:latest")),
            (
                "oci:/srv/layout:busybox:1.36",
                Some("localhost/busybox:1.36"),
            ),
            (
                "oci:/srv/layout:quay.io/podman/hello",
                Some("quay.io/podman/hello:latest"),
            ),
            ("oci:/srv/layout:team/app:v1", Some("localhost/team/app:v1")),
            ("oci:/srv/layout", None),
            ("oci:/srv/layout:", None),
            ("docker://busybox", None),
        ] {
            assert_eq!(
                oci_destination_name(source).as_deref(),
                expected,
                "{source}"
            );
        }
    }
}
