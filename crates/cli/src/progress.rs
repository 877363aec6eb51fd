//! Pull progress on stderr: per-layer indicatif bars (download, then apply) when stderr is a
//! terminal, one plain line per layer step otherwise, nothing in quiet mode.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use podstore_image::PullEvent;
use podstore_registry::ProgressState;

/// How pull progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Progress bars (stderr is a terminal).
    Bars,
    /// One line per layer step on stderr.
    Plain,
    /// Nothing.
    Quiet,
}

/// One layer of the manifest being pulled.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// The blob digest (`sha256:…`).
    pub digest: String,
    /// The blob size from the manifest.
    pub size: u64,
}

/// The layers listed by an image manifest (`layers[].digest/size`), in manifest order; empty
/// when the manifest cannot be read (progress is then reported by digest only).
pub fn manifest_layers(manifest: &[u8]) -> Vec<LayerInfo> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(manifest) else {
        return Vec::new();
    };
    let Some(layers) = doc.get("layers").and_then(|l| l.as_array()) else {
        return Vec::new();
    };
    layers
        .iter()
        .map(|l| LayerInfo {
            digest: l
                .get("digest")
                .and_then(|d| d.as_str())
                .unwrap_or_default()
                .to_owned(),
            size: l
                .get("size")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0),
        })
        .collect()
}

/// The first 12 hex digits of a digest, for display.
fn short(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.get(..12).unwrap_or(hex)
}

/// Turns pull events into bars or lines.
pub struct ProgressReporter {
    mode: ProgressMode,
    layers: Vec<LayerInfo>,
    bars: Vec<ProgressBar>,
    _multi: Option<MultiProgress>,
}

impl ProgressReporter {
    /// A reporter for a pull of an image with these layers.
    pub fn new(mode: ProgressMode, layers: Vec<LayerInfo>) -> ProgressReporter {
        let mut bars = Vec::new();
        let mut multi = None;
        if mode == ProgressMode::Bars {
            let m = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix} {msg:<12} [{bar:30}] {decimal_bytes:>10}/{decimal_total_bytes:<10}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            for layer in &layers {
                let bar = m.add(ProgressBar::new(layer.size));
                bar.set_style(style.clone());
                bar.set_prefix(format!("layer {}", short(&layer.digest)));
                bar.set_message("waiting");
                bars.push(bar);
            }
            multi = Some(m);
        }
        ProgressReporter {
            mode,
            layers,
            bars,
            _multi: multi,
        }
    }

    fn indexes_of(&self, digest: &str) -> Vec<usize> {
        (0..self.layers.len())
            .filter(|i| self.layers[*i].digest == digest)
            .collect()
    }

    fn label(&self, index: usize) -> String {
        match self.layers.get(index) {
            Some(l) => format!("{}/{} {}", index + 1, self.layers.len(), l.digest),
            None => format!("{}", index + 1),
        }
    }

    /// Shows one event.
    pub fn handle(&self, event: &PullEvent) {
        match self.mode {
            ProgressMode::Quiet => {}
            ProgressMode::Plain => self.line(event),
            ProgressMode::Bars => self.draw(event),
        }
    }

    fn line(&self, event: &PullEvent) {
        match event {
            PullEvent::Download(p) => {
                let what = match p.state {
                    ProgressState::Started if p.done == 0 => "Downloading",
                    ProgressState::Started => "Resuming",
                    ProgressState::Resuming => "Resuming",
                    ProgressState::Restarted => "Restarting",
                    ProgressState::Committed => "Downloaded",
                    ProgressState::AlreadyPresent => "Already downloaded",
                    ProgressState::Downloading => return,
                };
                let total = p.total.map(|t| format!(" of {t}")).unwrap_or_default();
                eprintln!("{what} blob {} ({} bytes{total})", p.digest, p.done);
            }
            PullEvent::LayerReused { index, .. } => {
                eprintln!("Layer {} already exists", self.label(*index));
            }
            PullEvent::LayerApplied { index, .. } => {
                eprintln!("Applied layer {}", self.label(*index));
            }
            _ => {}
        }
    }

    fn draw(&self, event: &PullEvent) {
        match event {
            PullEvent::Download(p) => {
                for i in self.indexes_of(&p.digest.to_string()) {
                    let bar = &self.bars[i];
                    if let Some(total) = p.total {
                        bar.set_length(total);
                    }
                    bar.set_position(p.done);
                    match p.state {
                        ProgressState::Committed | ProgressState::AlreadyPresent => {
                            bar.set_message("applying");
                        }
                        ProgressState::Resuming | ProgressState::Restarted => {
                            bar.set_message("resuming");
                        }
                        ProgressState::Started | ProgressState::Downloading => {
                            bar.set_message("downloading");
                        }
                    }
                }
            }
            PullEvent::LayerReused { index, .. } => {
                if let Some(bar) = self.bars.get(*index) {
                    bar.finish_with_message("exists");
                }
            }
            PullEvent::LayerApplied { index, .. } => {
                if let Some(bar) = self.bars.get(*index) {
                    if let Some(len) = bar.length() {
                        bar.set_position(len);
                    }
                    bar.finish_with_message("applied");
                }
            }
            _ => {}
        }
    }

    /// Ends the display (bars left drawn as they are).
    pub fn finish(&self) {
        for bar in &self.bars {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_layers_table() {
        type Case<'a> = (&'a [u8], Vec<(&'a str, u64)>);
        let cases: [Case; 4] = [
            (
                br#"{"layers":[{"digest":"sha256:aa","size":3},{"digest":"sha256:bb","size":5}]}"#,
                vec![("sha256:aa", 3), ("sha256:bb", 5)],
            ),
            (br#"{"layers":[]}"#, vec![]),
            (br#"{"manifests":[]}"#, vec![]),
            (b"not json", vec![]),
        ];
        for (manifest, expected) in cases {
            let got: Vec<(String, u64)> = manifest_layers(manifest)
                .into_iter()
                .map(|l| (l.digest, l.size))
                .collect();
            let expected: Vec<(String, u64)> = expected
                .into_iter()
                .map(|(d, s)| (d.to_owned(), s))
                .collect();
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn short_digest() {
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short("sha256:01"), "01");
    }
}
