//! tar-split, containers/storage's record of a layer tar's non-content bytes (spec §2.7):
//! the JSON-lines writer the applier feeds while unpacking, and [`reassemble`], which rebuilds
//! the exact original tar from those lines and the unpacked files (used for `Diff`).

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rustix::fs::{Mode, OFlags, ResolveFlags, openat2};

use crate::crc64::Crc64Iso;

/// Writes tar-split JSON lines (`{"type":…,"payload":…,"position":…}`), field order and
/// escaping as Go's `encoding/json` produces them.
pub struct TarSplitWriter<W: Write> {
    out: W,
    position: u64,
    line: Vec<u8>,
}

impl<W: Write> TarSplitWriter<W> {
    /// Writes lines to `out` (uncompressed; the caller gzips).
    pub fn new(out: W) -> TarSplitWriter<W> {
        TarSplitWriter {
            out,
            position: 0,
            line: Vec::with_capacity(1024),
        }
    }

    /// A type-2 entry: raw bytes written back verbatim.
    pub fn segment(&mut self, raw: &[u8]) -> io::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":2,\"payload\":\"");
        push_base64(&mut self.line, raw);
        self.line.extend_from_slice(b"\",\"position\":");
        self.finish_line()
    }

    /// A type-1 entry: a file's name, size and CRC-64 (`None` for size 0).
    pub fn file(&mut self, name: &[u8], size: i64, crc: Option<[u8; 8]>) -> io::Result<()> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":1");
        match std::str::from_utf8(name) {
            Ok(text) if !text.is_empty() => {
                self.line.extend_from_slice(b",\"name\":");
                push_go_json_string(&mut self.line, text);
            }
            Ok(_) => {}
            Err(_) => {
                self.line.extend_from_slice(b",\"name_raw\":\"");
                push_base64(&mut self.line, name);
                self.line.push(b'"');
            }
        }
        if size != 0 {
            self.line
                .extend_from_slice(format!(",\"size\":{size}").as_bytes());
        }
        match crc {
            Some(crc) => {
                self.line.extend_from_slice(b",\"payload\":\"");
                push_base64(&mut self.line, &crc);
                self.line.extend_from_slice(b"\",\"position\":");
            }
            None => self
                .line
                .extend_from_slice(b",\"payload\":null,\"position\":"),
        }
        self.finish_line()
    }

    fn finish_line(&mut self) -> io::Result<()> {
        self.line
            .extend_from_slice(self.position.to_string().as_bytes());
        self.line.extend_from_slice(b"}\n");
        self.position += 1;
        self.out.write_all(&self.line)
    }

    /// Flushes and returns the writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

fn push_base64(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    out.resize(start + data.len().div_ceil(3) * 4, 0);
    let written = BASE64.encode_slice(data, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
}

/// Go's `encoding/json` string encoding (HTML-safe escaping, `\u2028`/`\u2029` escaped).
fn push_go_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for ch in text.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let v = c as u32;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(v >> 4) as usize]);
                out.push(HEX[(v & 0xf) as usize]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Rebuilding a tar from tar-split failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarSplitError {
    /// A line is not a valid tar-split entry.
    #[error("tar-split line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// A file named by tar-split is in none of the lookup directories.
    #[error("tar-split: file {name:?} not found in {dirs:?}")]
    FileMissing {
        /// The entry name.
        name: String,
        /// Where it was looked up.
        dirs: Vec<PathBuf>,
    },
    /// A file's content does not match the recorded CRC-64 or size.
    #[error("tar-split: file integrity checksum failed for {name:?} (at {path})")]
    Checksum {
        /// The entry name.
        name: String,
        /// The file that was read.
        path: PathBuf,
    },
    /// Reading the tar-split, a lookup directory or a file failed.
    #[error("tar-split: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the rebuilt tar failed.
    #[error("tar-split: writing the rebuilt tar: {0}")]
    Write(#[source] io::Error),
}

#[derive(serde::Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    payload: Option<String>,
}

/// Rebuilds the original tar from tar-split JSON lines (uncompressed) and the unpacked files,
/// looked up in `lookup_dirs` in order (the layer's own directory first, as
/// [`crate::Driver::lookup_dirs`] returns them). Every file's CRC-64 and size are checked.
/// Returns the number of bytes written.
pub fn reassemble(
    lookup_dirs: &[PathBuf],
    tar_split: impl BufRead,
    out: &mut dyn Write,
) -> Result<u64, TarSplitError> {
    let mut dirs: Vec<(OwnedFd, &Path)> = Vec::with_capacity(lookup_dirs.len());
    for dir in lookup_dirs {
        let fd = rustix::fs::open(
            dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| TarSplitError::Io {
            op: "open lookup dir",
            path: dir.clone(),
            source: e.into(),
        })?;
        dirs.push((fd, dir.as_path()));
    }
    let mut written: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    for (index, line) in tar_split.split(b'\n').enumerate() {
        let line_no = index as u64 + 1;
        let line = line.map_err(|e| TarSplitError::Io {
            op: "read",
            path: PathBuf::from("<tar-split>"),
            source: e,
        })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let bad = |reason: String| TarSplitError::BadLine {
            line: line_no,
            reason,
        };
        let entry: RawEntry = serde_json::from_slice(&line).map_err(|e| bad(e.to_string()))?;
        let payload = match &entry.payload {
            Some(text) => BASE64
                .decode(text)
                .map_err(|e| bad(format!("payload: {e}")))?,
            None => Vec::new(),
        };
        match entry.kind {
            2 => {
                out.write_all(&payload).map_err(TarSplitError::Write)?;
                written += payload.len() as u64;
            }
            1 => {
                if entry.size == 0 {
                    continue;
                }
                let name: Vec<u8> = match (&entry.name_raw, &entry.name) {
                    (Some(raw), _) if !raw.is_empty() => BASE64
                        .decode(raw)
                        .map_err(|e| bad(format!("name_raw: {e}")))?,
                    (_, Some(name)) => name.clone().into_bytes(),
                    _ => return Err(bad("file entry without a name".into())),
                };
                let display = String::from_utf8_lossy(&name).into_owned();
                let (mut file, path) =
                    open_in_dirs(&dirs, &name).ok_or_else(|| TarSplitError::FileMissing {
                        name: display.clone(),
                        dirs: lookup_dirs.to_vec(),
                    })?;
                let mut crc = Crc64Iso::new();
                let mut copied: u64 = 0;
                loop {
                    let n = match file.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            return Err(TarSplitError::Io {
                                op: "read",
                                path,
                                source: e,
                            });
                        }
                    };
                    crc.update(&buf[..n]);
                    out.write_all(&buf[..n]).map_err(TarSplitError::Write)?;
                    copied += n as u64;
                }
                written += copied;
                if copied != entry.size as u64 || payload != crc.to_be_bytes() {
                    return Err(TarSplitError::Checksum {
                        name: display,
                        path,
                    });
                }
            }
            other => return Err(bad(format!("unknown entry type {other}"))),
        }
    }
    out.flush().map_err(TarSplitError::Write)?;
    Ok(written)
}

fn open_in_dirs(dirs: &[(OwnedFd, &Path)], name: &[u8]) -> Option<(File, PathBuf)> {
    if name.contains(&0) {
        return None;
    }
    let relative = name.strip_prefix(b"/").unwrap_or(name);
    let relative = if relative.is_empty() {
        &b"."[..]
    } else {
        relative
    };
    let relative = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(relative);
    for (fd, dir) in dirs {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        if let Ok(file) = openat2(fd, relative, flags, Mode::empty(), resolve) {
            let file = File::from(file);
            if file.metadata().map(|m| m.is_file()).unwrap_or(false) {
                return Some((file, dir.join(relative)));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: impl FnOnce(&mut TarSplitWriter<&mut Vec<u8>>)) -> String {
        let mut out = Vec::new();
        let mut w = TarSplitWriter::new(&mut out);
        f(&mut w);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_match_go() {
        let crc = crate::crc64::Crc64Iso::new();
        let mut hello = crc;
        hello.update(b"hello\n");
        let table: Vec<(String, &str)> = vec![
            (
                lines(|w| w.file(b"etc/hello", 6, Some(hello.to_be_bytes())).unwrap()),
                "{\"type\":1,\"name\":\"etc/hello\",\"size\":6,\"payload\":\"YUw+7uLYEAA=\",\"position\":0}\n",
            ),
            (
                lines(|w| w.file(b"etc/", 0, None).unwrap()),
                "{\"type\":1,\"name\":\"etc/\",\"payload\":null,\"position\":0}\n",
            ),
            (
                lines(|w| w.segment(b"").unwrap()),
                "{\"type\":2,\"payload\":\"\",\"position\":0}\n",
            ),
            (
                lines(|w| {
                    w.segment(b"ab").unwrap();
                    w.file(b"a<b>&\"\\\n\x01\xe2\x80\xa8", 0, None).unwrap();
                }),
                "{\"type\":2,\"payload\":\"YWI=\",\"position\":0}\n{\"type\":1,\"name\":\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001\\u2028\",\"payload\":null,\"position\":1}\n",
            ),
            (
                lines(|w| w.file(b"bad\xff", 0, None).unwrap()),
                "{\"type\":1,\"name_raw\":\"YmFk/w==\",\"payload\":null,\"position\":0}\n",
            ),
        ];
        for (got, expected) in table {
            assert_eq!(got, expected);
        }
    }
}
