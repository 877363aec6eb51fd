//! Blob downloads into a [`BlobSink`]: streamed through a fixed buffer, hashed on the fly,
//! size- and digest-verified before commit, resumed with `Range` after a dropped connection
//! (206 + `Content-Range` checked; a 200 restarts from zero), watched by the stall timeout, and
//! reported as progress events on a tokio channel.

use std::time::{Duration, Instant};

use podstore_reference::{Digest, Verifier};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio::sync::mpsc;

use crate::client::{
    BodyWatch, Held, RegistryClient, Subject, Watched, error_chain, validate_repository,
};
use crate::error::{RegistryError, Result};
use crate::sink::{BlobIngest, BlobSink, SinkBegin, SinkError};

/// What to download: a digest and, when known, the size from its descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size from the descriptor, if known.
    pub size: Option<u64>,
}

/// What happened to a blob, as sent on the progress channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// The download started (at `done` bytes, non-zero when resuming a partial ingest).
    Started,
    /// More bytes arrived.
    Downloading,
    /// The connection dropped; resuming at `done` with a `Range` request.
    Resuming,
    /// The server ignored the `Range` request; starting again from zero.
    Restarted,
    /// Verified and committed.
    Committed,
    /// The sink already had the blob; nothing was downloaded.
    AlreadyPresent,
}

/// One progress event for one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    /// The blob.
    pub digest: Digest,
    /// Bytes held so far.
    pub done: u64,
    /// Total size, when known.
    pub total: Option<u64>,
    /// What happened.
    pub state: ProgressState,
}

/// The result of [`RegistryClient::pull_blob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledBlob {
    /// The blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Whether the sink already had it (nothing was downloaded).
    pub already_present: bool,
    /// How many times an interrupted body was resumed with `Range`.
    pub resumes: u32,
}

/// Where a blob is fetched from.
enum BlobSource {
    /// `/v2/<repository>/blobs/<digest>` with the registry's authentication.
    Registry,
    /// An external URL from the descriptor, fetched without credentials.
    External(reqwest::Url),
}

/// Minimum progress (bytes since the last reconnection) that allows another reconnection.
const RESUME_PROGRESS: u64 = 1024 * 1024;
/// After this long since the last reconnection, another is allowed regardless of progress.
const RESUME_INTERVAL: Duration = Duration::from_secs(60);

struct Progress<'a> {
    tx: Option<&'a mpsc::Sender<ProgressEvent>>,
    digest: &'a Digest,
    total: Option<u64>,
}

impl Progress<'_> {
    fn send(&self, done: u64, state: ProgressState) {
        if let Some(tx) = self.tx {
            // Progress is advisory: a full channel drops intermediate events, never blocks.
            let _ = tx.try_send(ProgressEvent {
                digest: self.digest.clone(),
                done,
                total: self.total,
                state,
            });
        }
    }
}

/// The ingest plus the fixed write buffer, moved into blocking tasks for the actual writes.
struct Writer<W: BlobIngest> {
    ingest: Option<W>,
    buffer: Vec<u8>,
    capacity: usize,
    digest: Digest,
}

impl<W: BlobIngest> Writer<W> {
    fn store_err(&self, message: String) -> RegistryError {
        RegistryError::Store {
            digest: self.digest.clone(),
            message,
        }
    }

    /// Writes the buffered bytes to the ingest on the blocking pool.
    async fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let Some(mut ingest) = self.ingest.take() else {
            return Err(self.store_err("ingest already finished".to_owned()));
        };
        let mut buffer = std::mem::take(&mut self.buffer);
        let joined = tokio::task::spawn_blocking(move || {
            let r = ingest.write_all(&buffer);
            buffer.clear();
            (ingest, buffer, r)
        })
        .await;
        match joined {
            Ok((ingest, buffer, r)) => {
                self.ingest = Some(ingest);
                self.buffer = buffer;
                r.map_err(|e| self.store_err(format!("writing: {e}")))
            }
            Err(e) => Err(self.store_err(format!("writer task failed: {e}"))),
        }
    }

    async fn push(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let room = self.capacity - self.buffer.len();
            let take = room.min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() >= self.capacity {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn restart(&mut self) -> Result<()> {
        self.buffer.clear();
        let Some(mut ingest) = self.ingest.take() else {
            return Err(self.store_err("ingest already finished".to_owned()));
        };
        let joined = tokio::task::spawn_blocking(move || {
            let r = ingest.restart();
            (ingest, r)
        })
        .await;
        match joined {
            Ok((ingest, r)) => {
                self.ingest = Some(ingest);
                r.map_err(|e| self.store_err(format!("restarting: {e}")))
            }
            Err(e) => Err(self.store_err(format!("writer task failed: {e}"))),
        }
    }

    /// Removes the ingest: used when the data failed verification.
    async fn abort(&mut self) {
        self.buffer.clear();
        if let Some(ingest) = self.ingest.take() {
            let _ = tokio::task::spawn_blocking(move || ingest.abort()).await;
        }
    }

    async fn commit(&mut self) -> std::result::Result<u64, Result<SinkError>> {
        if let Err(e) = self.flush().await {
            return Err(Err(e));
        }
        let Some(ingest) = self.ingest.take() else {
            return Err(Err(self.store_err("ingest already finished".to_owned())));
        };
        match tokio::task::spawn_blocking(move || ingest.commit()).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(Ok(e)),
            Err(e) => Err(Err(self.store_err(format!("commit task failed: {e}")))),
        }
    }
}

impl<W: BlobIngest> Drop for Writer<W> {
    fn drop(&mut self) {
        // Keep what was received for a later resume: write the buffered tail synchronously.
        if let Some(mut ingest) = self.ingest.take() {
            if !self.buffer.is_empty() {
                let _ = ingest.write_all(&self.buffer);
            }
            drop(ingest);
        }
    }
}

/// Parses `Content-Range: bytes first-last/total|*`.
fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if last < first {
        return None;
    }
    Some((first, last, total))
}

impl RegistryClient {
    /// Downloads `blob` from `repository` into `sink`, verifying size and digest before it is
    /// committed. Resumes an interrupted body with `Range` (and a partial ingest the sink kept from
    /// an earlier attempt); sends progress events on `progress` if given. Data that fails
    /// verification is aborted, never committed.
    pub async fn pull_blob<S: BlobSink>(
        &self,
        repository: &str,
        blob: &BlobRef,
        sink: &S,
        progress: Option<&mpsc::Sender<ProgressEvent>>,
    ) -> Result<PulledBlob> {
        self.download(repository, blob, sink, progress, &BlobSource::Registry)
            .await
    }

    /// Like [`RegistryClient::pull_blob`], but tries the descriptor's external `urls` first
    /// (foreign / non-distributable layers), in order and **without credentials**: URLs that do
    /// not parse or are not http/https are skipped; if none was usable the registry is used; if
    /// some were tried and all failed the error lists them and the registry is not tried.
    pub async fn pull_blob_with_urls<S: BlobSink>(
        &self,
        repository: &str,
        blob: &BlobRef,
        urls: &[String],
        sink: &S,
        progress: Option<&mpsc::Sender<ProgressEvent>>,
    ) -> Result<PulledBlob> {
        let mut failures = Vec::new();
        for text in urls {
            let Ok(url) = reqwest::Url::parse(text) else {
                continue;
            };
            if !matches!(url.scheme(), "http" | "https") {
                continue;
            }
            match self
                .download(repository, blob, sink, progress, &BlobSource::External(url))
                .await
            {
                Ok(pulled) => return Ok(pulled),
                Err(
                    e @ (RegistryError::DigestMismatch { .. }
                    | RegistryError::SizeMismatch { .. }
                    | RegistryError::Store { .. }),
                ) => return Err(e),
                Err(e) => failures.push(format!("{text}: {e}")),
            }
        }
        if !failures.is_empty() {
            return Err(RegistryError::ExternalUrlsFailed {
                digest: blob.digest.clone(),
                errors: failures,
            });
        }
        self.download(repository, blob, sink, progress, &BlobSource::Registry)
            .await
    }

    async fn download<S: BlobSink>(
        &self,
        repository: &str,
        blob: &BlobRef,
        sink: &S,
        progress: Option<&mpsc::Sender<ProgressEvent>>,
        source: &BlobSource,
    ) -> Result<PulledBlob> {
        validate_repository(repository)?;
        let digest = &blob.digest;
        let store_err = |e: SinkError| RegistryError::Store {
            digest: digest.clone(),
            message: e.to_string(),
        };
        let progress = Progress {
            tx: progress,
            digest,
            total: blob.size,
        };
        let begun = {
            let (sink, d, size) = (sink.clone(), digest.clone(), blob.size);
            // `begin` may wait for a concurrent writer of the same blob: keep it off the runtime.
            tokio::task::spawn_blocking(move || sink.begin(&d, size))
                .await
                .map_err(|e| RegistryError::Store {
                    digest: digest.clone(),
                    message: format!("begin task failed: {e}"),
                })?
        };
        let ingest = match begun.map_err(store_err)? {
            SinkBegin::Present(size) => {
                progress.send(size, ProgressState::AlreadyPresent);
                return Ok(PulledBlob {
                    digest: digest.clone(),
                    size,
                    already_present: true,
                    resumes: 0,
                });
            }
            SinkBegin::Write(w) => w,
        };
        let mut offset = ingest.offset();
        // Bytes already in a partial ingest cannot be rehashed here; the sink verifies at commit.
        let mut verifier: Option<Verifier> = (offset == 0).then(|| digest.verifier());
        let mut writer = Writer {
            ingest: Some(ingest),
            buffer: Vec::with_capacity(self.options.write_buffer_size.max(4096)),
            capacity: self.options.write_buffer_size.max(4096),
            digest: digest.clone(),
        };
        progress.send(offset, ProgressState::Started);
        let mut resumes = 0u32;
        let mut last_reconnect: Option<(Instant, u64)> = None;
        let suffix = format!("blobs/{digest}");
        loop {
            let mut extra = HeaderMap::new();
            if offset > 0 {
                let range = HeaderValue::from_str(&format!("bytes={offset}-"))
                    .map_err(|e| writer.store_err(e.to_string()))?;
                extra.insert(header::RANGE, range);
            }
            let held: Held = match source {
                BlobSource::Registry => self.get(repository, &suffix, extra).await?,
                BlobSource::External(url) => self.get_external(url.clone(), extra).await?,
            };
            let status = held.response.status();
            match status {
                StatusCode::OK => {
                    if offset > 0 {
                        tracing::info!(%digest, offset, "server ignored Range: restarting the blob from zero");
                        writer.restart().await?;
                        offset = 0;
                        verifier = Some(digest.verifier());
                        progress.send(0, ProgressState::Restarted);
                    }
                    if let (Some(expected), Some(announced)) =
                        (blob.size, held.response.content_length())
                    {
                        if expected != announced {
                            writer.abort().await;
                            return Err(RegistryError::SizeMismatch {
                                registry: self.registry().to_owned(),
                                repository: repository.to_owned(),
                                digest: digest.clone(),
                                expected,
                                actual: announced,
                            });
                        }
                    }
                }
                StatusCode::PARTIAL_CONTENT if offset > 0 => {
                    let values: Vec<&HeaderValue> = held
                        .response
                        .headers()
                        .get_all(header::CONTENT_RANGE)
                        .iter()
                        .collect();
                    let parsed = match values.as_slice() {
                        [one] => one.to_str().ok().and_then(parse_content_range),
                        _ => None,
                    };
                    let ok = match parsed {
                        Some((first, last, total)) => {
                            first == offset
                                && total.is_none_or(|t| last.checked_add(1) == Some(t))
                                && match (total, blob.size) {
                                    (Some(t), Some(s)) => t == s,
                                    _ => true,
                                }
                        }
                        None => false,
                    };
                    if !ok {
                        return Err(RegistryError::ResumeFailed {
                            registry: self.registry().to_owned(),
                            repository: repository.to_owned(),
                            digest: digest.clone(),
                            offset,
                            reason: format!("bad Content-Range {values:?} in a 206 answer"),
                        });
                    }
                }
                _ => {
                    return Err(self
                        .status_error(held, repository, Subject::Blob(digest))
                        .await);
                }
            }
            let mut response = held.response;
            let mut watch = BodyWatch::new(&self.options);
            let body_error = loop {
                let chunk = match watch.next(response.chunk()).await {
                    Watched::Failed(e) => break Some(e),
                    Watched::Chunk(None) => break None,
                    Watched::Chunk(Some(c)) => c,
                    stalled => {
                        writer.flush().await?;
                        return Err(stalled.into_error(
                            self.registry(),
                            repository,
                            &digest.to_string(),
                            offset,
                            self.options.stall_timeout,
                        ));
                    }
                };
                offset += chunk.len() as u64;
                if let Some(expected) = blob.size {
                    if offset > expected {
                        writer.abort().await;
                        return Err(RegistryError::SizeMismatch {
                            registry: self.registry().to_owned(),
                            repository: repository.to_owned(),
                            digest: digest.clone(),
                            expected,
                            actual: offset,
                        });
                    }
                }
                if let Some(v) = verifier.as_mut() {
                    v.update(&chunk);
                }
                writer.push(&chunk).await?;
                progress.send(offset, ProgressState::Downloading);
            };
            let Some(error) = body_error else {
                break;
            };
            // The body broke off: resume with Range if the rules allow it.
            writer.flush().await?;
            let now = Instant::now();
            let allowed = match last_reconnect {
                None => true,
                Some((at, from)) => {
                    offset - from >= RESUME_PROGRESS || now.duration_since(at) >= RESUME_INTERVAL
                }
            };
            if !allowed {
                return Err(RegistryError::ResumeFailed {
                    registry: self.registry().to_owned(),
                    repository: repository.to_owned(),
                    digest: digest.clone(),
                    offset,
                    reason: format!(
                        "connection broke again without progress: {}",
                        error_chain(&error)
                    ),
                });
            }
            tracing::info!(%digest, offset, error = %error_chain(&error), "blob body interrupted; resuming");
            progress.send(offset, ProgressState::Resuming);
            tokio::time::sleep(self.options.resume_delay).await;
            last_reconnect = Some((Instant::now(), offset));
            resumes += 1;
        }
        if let Some(expected) = blob.size {
            if offset != expected {
                writer.abort().await;
                return Err(RegistryError::SizeMismatch {
                    registry: self.registry().to_owned(),
                    repository: repository.to_owned(),
                    digest: digest.clone(),
                    expected,
                    actual: offset,
                });
            }
        }
        if let Some(v) = verifier {
            if let Err(m) = v.verify() {
                writer.abort().await;
                return Err(RegistryError::DigestMismatch {
                    registry: self.registry().to_owned(),
                    repository: repository.to_owned(),
                    what: "blob",
                    expected: m.expected,
                    actual: m.actual,
                });
            }
        }
        let size = match writer.commit().await {
            Ok(n) => n,
            Err(Err(e)) => return Err(e),
            Err(Ok(SinkError::DigestMismatch { expected, actual })) => {
                return Err(RegistryError::DigestMismatch {
                    registry: self.registry().to_owned(),
                    repository: repository.to_owned(),
                    what: "blob",
                    expected,
                    actual,
                });
            }
            Err(Ok(SinkError::SizeMismatch {
                expected, actual, ..
            })) => {
                return Err(RegistryError::SizeMismatch {
                    registry: self.registry().to_owned(),
                    repository: repository.to_owned(),
                    digest: digest.clone(),
                    expected,
                    actual,
                });
            }
            Err(Ok(e)) => return Err(store_err(e)),
        };
        progress.send(size, ProgressState::Committed);
        Ok(PulledBlob {
            digest: digest.clone(),
            size,
            already_present: false,
            resumes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_table() {
        let cases = [
            ("bytes 100-199/200", Some((100, 199, Some(200)))),
            ("bytes 0-0/*", Some((0, 0, None))),
            ("bytes 5-4/10", None),
            ("bytes */200", None),
            ("items 0-1/2", None),
            ("bytes 1-x/2", None),
            ("bytes 0-18446744073709551615/*", Some((0, u64::MAX, None))),
        ];
        for (input, want) in cases {
            assert_eq!(parse_content_range(input), want, "{input}");
        }
    }
}
