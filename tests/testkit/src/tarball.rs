//! A deterministic tar writer for building layer tarballs byte for byte.
//!
//! It owns the on-the-wire tar encoding the fixtures need: ustar headers, PAX extended headers
//! (`path`, `linkpath`, sub-second `mtime`, `SCHILY.xattr.*`), GNU `././@LongLink` names and
//! link targets, and GNU tar's end-of-archive padding to a 10240-byte record. Nothing is read
//! from the filesystem: every field (mode, owner, mtime) is given by the caller, so the same
//! entries always give the same bytes. Tests may use it to craft their own layers (including
//! hostile ones: the writer does not judge paths).

use std::io::{self, Write};

/// The tar dialect used for the headers of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TarFormat {
    /// POSIX pax: ustar headers plus `x` extended headers when a field does not fit.
    Pax,
    /// GNU: `ustar  ` magic plus `././@LongLink` (`L`/`K`) entries for long names.
    Gnu,
}

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEntryKind {
    /// A regular file with its content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to the given target (stored verbatim).
    Symlink(String),
    /// A hard link to an earlier member of the archive (its name as stored in the archive).
    Hardlink(String),
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

/// One member of a tar archive, with every header field chosen by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Member name as stored (for example `etc/passwd`, `./etc/`, `data/.wh.file`).
    /// Directories conventionally end in `/`; [`TarEntry::dir`] adds it.
    pub path: String,
    /// What the member is.
    pub kind: TarEntryKind,
    /// Permission bits including setuid/setgid/sticky (`0o4755`...), without file-type bits.
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Sub-second part of the mtime in nanoseconds; non-zero adds a PAX `mtime` record.
    pub mtime_nanos: u32,
    /// Extended attributes (`user.*`, `security.capability`...), written as
    /// `SCHILY.xattr.<name>` PAX records (PAX format only; ignored for GNU).
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// The mtime every fixture entry gets unless it says otherwise: 2020-01-01T00:00:00Z.
pub const FIXTURE_MTIME: u64 = 1_577_836_800;

impl TarEntry {
    fn new(path: impl Into<String>, kind: TarEntryKind, mode: u32) -> Self {
        TarEntry {
            path: path.into(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: FIXTURE_MTIME,
            mtime_nanos: 0,
            xattrs: Vec::new(),
        }
    }

    /// A regular file owned by root with mode `mode`.
    pub fn file(path: impl Into<String>, mode: u32, content: impl Into<Vec<u8>>) -> Self {
        Self::new(path, TarEntryKind::File(content.into()), mode)
    }

    /// A directory owned by root; a trailing `/` is added to the name if missing.
    pub fn dir(path: impl Into<String>, mode: u32) -> Self {
        let mut path = path.into();
        if !path.ends_with('/') {
            path.push('/');
        }
        Self::new(path, TarEntryKind::Dir, mode)
    }

    /// A symlink (mode 0777) to `target`.
    pub fn symlink(path: impl Into<String>, target: impl Into<String>) -> Self {
        Self::new(path, TarEntryKind::Symlink(target.into()), 0o777)
    }

    /// A hard link to the earlier member `target` (give the mode and owner of the target).
    pub fn hardlink(path: impl Into<String>, target: impl Into<String>, mode: u32) -> Self {
        Self::new(path, TarEntryKind::Hardlink(target.into()), mode)
    }

    /// A named pipe.
    pub fn fifo(path: impl Into<String>, mode: u32) -> Self {
        Self::new(path, TarEntryKind::Fifo, mode)
    }

    /// A character device `major:minor`.
    pub fn char_device(path: impl Into<String>, mode: u32, major: u32, minor: u32) -> Self {
        Self::new(path, TarEntryKind::CharDevice { major, minor }, mode)
    }

    /// An overlay-style whiteout file (`.wh.<name>`, empty, mode 0644) for `dir/name`.
    pub fn whiteout(dir: &str, name: &str) -> Self {
        let dir = dir.trim_end_matches('/');
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        Self::file(path, 0o644, Vec::new())
    }

    /// An opaque-directory marker (`dir/.wh..wh..opq`).
    pub fn opaque(dir: &str) -> Self {
        Self::file(
            format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            0o644,
            Vec::new(),
        )
    }

    /// Sets the numeric owner.
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the modification time.
    pub fn mtime(mut self, secs: u64, nanos: u32) -> Self {
        self.mtime = secs;
        self.mtime_nanos = nanos;
        self
    }

    /// Adds an extended attribute.
    pub fn xattr(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.xattrs.push((name.into(), value.into()));
        self
    }

    fn typeflag(&self) -> u8 {
        match self.kind {
            TarEntryKind::File(_) => b'0',
            TarEntryKind::Hardlink(_) => b'1',
            TarEntryKind::Symlink(_) => b'2',
            TarEntryKind::CharDevice { .. } => b'3',
            TarEntryKind::BlockDevice { .. } => b'4',
            TarEntryKind::Dir => b'5',
            TarEntryKind::Fifo => b'6',
        }
    }

    fn link_name(&self) -> &str {
        match &self.kind {
            TarEntryKind::Symlink(t) | TarEntryKind::Hardlink(t) => t,
            _ => "",
        }
    }

    fn content(&self) -> &[u8] {
        match &self.kind {
            TarEntryKind::File(c) => c,
            _ => &[],
        }
    }

    fn device(&self) -> (u32, u32) {
        match self.kind {
            TarEntryKind::CharDevice { major, minor }
            | TarEntryKind::BlockDevice { major, minor } => (major, minor),
            _ => (0, 0),
        }
    }
}

const BLOCK: usize = 512;
const RECORD: u64 = 10240;

/// Writes tar members to `W` in the order given, then GNU-style end-of-archive padding.
///
/// ```
/// use podstore_testkit::tarball::{TarBuilder, TarEntry, TarFormat};
/// let mut tar = TarBuilder::new(Vec::new(), TarFormat::Pax);
/// tar.append(&TarEntry::dir("etc", 0o755)).unwrap();
/// tar.append(&TarEntry::file("etc/hostname", 0o644, b"box\n".to_vec())).unwrap();
/// let bytes = tar.finish().unwrap();
/// assert_eq!(bytes.len() % 10240, 0);
/// ```
#[derive(Debug)]
pub struct TarBuilder<W: Write> {
    out: W,
    format: TarFormat,
    written: u64,
}

impl<W: Write> TarBuilder<W> {
    /// A builder writing `format` headers into `out`.
    pub fn new(out: W, format: TarFormat) -> Self {
        TarBuilder {
            out,
            format,
            written: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn put_padded(&mut self, data: &[u8]) -> io::Result<()> {
        self.put(data)?;
        let rem = data.len() % BLOCK;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Appends one member (and any PAX or LongLink header it needs).
    pub fn append(&mut self, entry: &TarEntry) -> io::Result<()> {
        let name = entry.path.as_bytes();
        let link = entry.link_name().as_bytes();
        match self.format {
            TarFormat::Gnu => {
                if link.len() > 100 {
                    self.long_link(b'K', link)?;
                }
                if name.len() > 100 {
                    self.long_link(b'L', name)?;
                }
            }
            TarFormat::Pax => {
                let mut records = Vec::new();
                if name.len() > 100 || !name.is_ascii() {
                    pax_record(&mut records, "path", name);
                }
                if link.len() > 100 || !link.is_ascii() {
                    pax_record(&mut records, "linkpath", link);
                }
                if entry.mtime_nanos != 0 {
                    let value = format!("{}.{:09}", entry.mtime, entry.mtime_nanos);
                    pax_record(&mut records, "mtime", value.as_bytes());
                }
                for (key, value) in &entry.xattrs {
                    pax_record(&mut records, &format!("SCHILY.xattr.{key}"), value);
                }
                if !records.is_empty() {
                    let base = entry.path.trim_end_matches('/');
                    let base = base.rsplit('/').next().unwrap_or(base);
                    let mut pax_name = format!("PaxHeaders/{base}").into_bytes();
                    pax_name.truncate(100);
                    let header = self.header(
                        &pax_name,
                        b"",
                        b'x',
                        0o644,
                        (0, 0),
                        entry.mtime,
                        records.len() as u64,
                        (0, 0),
                    );
                    self.put(&header)?;
                    self.put_padded(&records)?;
                }
            }
        }
        let content = entry.content();
        let header = self.header(
            &name[..name.len().min(100)],
            &link[..link.len().min(100)],
            entry.typeflag(),
            entry.mode,
            (entry.uid, entry.gid),
            entry.mtime,
            content.len() as u64,
            entry.device(),
        );
        self.put(&header)?;
        self.put_padded(content)
    }

    /// Appends a regular file whose content is streamed from `reader` (exactly `size` bytes),
    /// for large fixture files that should not sit in memory.
    pub fn append_file_from(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        reader: &mut impl io::Read,
    ) -> io::Result<()> {
        let entry = TarEntry::file(path, mode, Vec::new());
        if path.len() > 100 || !path.is_ascii() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("streamed tar member name too long or not ASCII: {path}"),
            ));
        }
        let header = self.header(
            path.as_bytes(),
            b"",
            b'0',
            entry.mode,
            (0, 0),
            entry.mtime,
            size,
            (0, 0),
        );
        self.put(&header)?;
        let copied = io::copy(&mut io::Read::take(reader, size), &mut CountingWrite(self))?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{path}: reader gave {copied} of {size} bytes"),
            ));
        }
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.put(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    fn long_link(&mut self, typeflag: u8, value: &[u8]) -> io::Result<()> {
        let mut data = value.to_vec();
        data.push(0);
        let header = self.header(
            b"././@LongLink",
            b"",
            typeflag,
            0o644,
            (0, 0),
            0,
            data.len() as u64,
            (0, 0),
        );
        self.put(&header)?;
        self.put_padded(&data)
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &self,
        name: &[u8],
        link: &[u8],
        typeflag: u8,
        mode: u32,
        (uid, gid): (u32, u32),
        mtime: u64,
        size: u64,
        (major, minor): (u32, u32),
    ) -> [u8; BLOCK] {
        let mut h = [0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        octal(&mut h[100..108], u64::from(mode & 0o7777));
        octal(&mut h[108..116], u64::from(uid));
        octal(&mut h[116..124], u64::from(gid));
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], mtime);
        h[156] = typeflag;
        h[157..157 + link.len()].copy_from_slice(link);
        match self.format {
            TarFormat::Pax => {
                h[257..263].copy_from_slice(b"ustar\0");
                h[263..265].copy_from_slice(b"00");
            }
            TarFormat::Gnu => {
                h[257..263].copy_from_slice(b"ustar ");
                h[263..265].copy_from_slice(b" \0");
            }
        }
        if matches!(typeflag, b'3' | b'4') || self.format == TarFormat::Pax {
            octal(&mut h[329..337], u64::from(major));
            octal(&mut h[337..345], u64::from(minor));
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        let chk = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(chk.as_bytes());
        h
    }

    /// Writes the two zero blocks and pads to a 10240-byte record (as GNU tar does), then
    /// returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[0u8; 2 * BLOCK])?;
        let rem = self.written % RECORD;
        if rem != 0 {
            let pad = vec![0u8; (RECORD - rem) as usize];
            self.put(&pad)?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

struct CountingWrite<'a, W: Write>(&'a mut TarBuilder<W>);

impl<W: Write> Write for CountingWrite<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.put(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.out.flush()
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    let bytes = text.as_bytes();
    // A value too large for the field keeps its low digits; fixtures never get there.
    let start = bytes.len().saturating_sub(width);
    field[..width].copy_from_slice(&bytes[start..]);
    field[width] = 0;
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "<len> <key>=<value>\n" where <len> counts the whole record including its own digits.
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(format!("{len} {key}=").as_bytes());
    out.extend_from_slice(value);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        for (key, value_len) in [("path", 5usize), ("path", 93), ("path", 94), ("mtime", 995)] {
            let mut out = Vec::new();
            pax_record(&mut out, key, &vec![b'a'; value_len]);
            let text = String::from_utf8(out.clone()).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(
                len.parse::<usize>().unwrap(),
                out.len(),
                "{key} {value_len}"
            );
        }
    }

    #[test]
    fn empty_archive_is_one_record_of_zeros() {
        let bytes = TarBuilder::new(Vec::new(), TarFormat::Pax)
            .finish()
            .unwrap();
        assert_eq!(bytes.len(), 10240);
        assert!(bytes.iter().all(|&b| b == 0));
    }
}
