//! A streaming tar reader that keeps the exact bytes tar-split needs: it parses ustar, pax
//! (`x`/`g`) and GNU (`L`/`K`) headers like Go's `archive/tar`, digests every byte of the
//! (uncompressed) stream, and collects the non-content bytes (headers, extension records,
//! padding, end-of-archive blocks) as "raw" bytes the caller turns into tar-split segments.

use std::io::{self, Read};

use podstore_reference::Digest;

use crate::digest_thread::BackgroundDigester;

use crate::crc64::Crc64Iso;

const BLOCK: usize = 512;
/// Largest PAX/GNU long-name payload accepted (Go's `maxSpecialFileSize`).
const MAX_SPECIAL_FILE: u64 = 1 << 20;
const BUFFER_SIZE: usize = 1 << 20;
/// Bytes accepted after the end-of-archive marker. Writers pad to their record size (GNU tar
/// 10 KiB by default, at most a few MiB with large blocking factors); anything larger is a
/// decompression bomb hiding behind a valid archive (it would only be hashed and stored in the
/// tar-split, but without a bound it costs unbounded time and tar-split space).
pub const MAX_TRAILING_BYTES: u64 = 16 << 20;

/// Key/value records (pax records, xattrs).
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// A malformed or unsupported tar stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TarError {
    /// The stream ended inside a header or an entry's data.
    #[error("tar stream truncated at byte {offset} (in {context})")]
    Truncated {
        /// Uncompressed offset where the stream ended.
        offset: u64,
        /// What was being read (entry name or "header").
        context: String,
    },
    /// A header block is invalid.
    #[error("invalid tar header at byte {offset}: {reason}")]
    BadHeader {
        /// Uncompressed offset of the header block.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the (decompressed) stream failed.
    #[error("reading the layer stream at byte {offset}: {source}")]
    Read {
        /// Uncompressed offset.
        offset: u64,
        /// The underlying error (decompression errors arrive here).
        #[source]
        source: io::Error,
    },
    /// More than [`MAX_TRAILING_BYTES`] follow the end-of-archive marker.
    #[error(
        "more than {limit} bytes follow the end of the tar archive (at byte {offset}): refusing a possible decompression bomb"
    )]
    TrailingData {
        /// Uncompressed offset of the end of the archive.
        offset: u64,
        /// The limit that was exceeded.
        limit: u64,
    },
}

/// The kind of a tar entry after Go's normalisation (`'\0'` becomes file or directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// `0`, `\0` (without trailing slash).
    Regular,
    /// `1`.
    HardLink,
    /// `2`.
    Symlink,
    /// `3`.
    CharDevice,
    /// `4`.
    BlockDevice,
    /// `5`, or `\0` with a trailing slash.
    Directory,
    /// `6`.
    Fifo,
    /// `g`: a pax global header, returned as an entry (as Go does) and otherwise ignored.
    GlobalHeader,
    /// Anything else (contiguous files, GNU sparse, volume headers...): refused by the applier.
    Other(u8),
}

/// One tar header, with pax and GNU extensions merged in.
#[derive(Debug, Clone)]
pub struct Header {
    /// The effective name, exactly as in the tar (not cleaned).
    pub name: Vec<u8>,
    /// The effective link target.
    pub linkname: Vec<u8>,
    /// The entry type.
    pub kind: EntryKind,
    /// Permission and setuid/setgid/sticky bits.
    pub mode: u32,
    /// Owner.
    pub uid: i64,
    /// Group.
    pub gid: i64,
    /// Declared size of the entry's data.
    pub size: i64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Access time from pax, if any.
    pub atime: Option<(i64, u32)>,
    /// Device major number.
    pub devmajor: u32,
    /// Device minor number.
    pub devminor: u32,
    /// `SCHILY.xattr.*` records, in order.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whether a `GNU.sparse.*` pax record marked the entry sparse.
    pub sparse: bool,
}

/// Streaming reader over an uncompressed tar.
pub struct TarStream<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Bytes consumed from the stream so far.
    offset: u64,
    digester: BackgroundDigester,
    raw: Vec<u8>,
    /// Data bytes of the current entry not yet read.
    remaining: u64,
    /// Padding after the current entry's data.
    padding: u64,
    crc: Crc64Iso,
    current_name: Vec<u8>,
}

impl<R: Read> TarStream<R> {
    /// Reads a tar from `inner`.
    pub fn new(inner: R) -> TarStream<R> {
        TarStream {
            inner,
            buf: vec![0u8; BUFFER_SIZE].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            offset: 0,
            digester: BackgroundDigester::sha256(),
            raw: Vec::with_capacity(4 * BLOCK),
            remaining: 0,
            padding: 0,
            crc: Crc64Iso::new(),
            current_name: Vec::new(),
        }
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Refills the buffer; returns false at end of stream.
    fn fill(&mut self) -> Result<bool, TarError> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.eof {
            return Ok(false);
        }
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    self.pos = 0;
                    self.len = 0;
                    return Ok(false);
                }
                Ok(n) => {
                    self.digester.update(&self.buf[..n]);
                    self.pos = 0;
                    self.len = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(TarError::Read {
                        offset: self.offset,
                        source,
                    });
                }
            }
        }
    }

    /// Reads exactly `out.len()` bytes as raw (non-content) bytes; returns how many were
    /// available before end of stream.
    fn read_raw(&mut self, out: &mut [u8]) -> Result<usize, TarError> {
        let mut done = 0;
        while done < out.len() {
            if !self.fill()? {
                break;
            }
            let n = (self.len - self.pos).min(out.len() - done);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.raw
                .extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
            self.offset += n as u64;
        }
        Ok(done)
    }

    /// Skips `count` bytes as raw bytes.
    fn skip_raw(&mut self, mut count: u64, context: &[u8]) -> Result<(), TarError> {
        while count > 0 {
            if !self.fill()? {
                return Err(self.truncated(context));
            }
            let n = ((self.len - self.pos) as u64).min(count) as usize;
            self.raw
                .extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            count -= n as u64;
        }
        Ok(())
    }

    fn truncated(&self, context: &[u8]) -> TarError {
        TarError::Truncated {
            offset: self.offset,
            context: String::from_utf8_lossy(context).into_owned(),
        }
    }

    /// Takes the raw bytes collected since the last call.
    pub fn take_raw(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.raw)
    }

    /// The next chunk of the current entry's data (empty at its end). The CRC-64 of the data
    /// is kept; see [`TarStream::data_crc`].
    pub fn data_chunk(&mut self) -> Result<&[u8], TarError> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        if !self.fill()? {
            let name = self.current_name.clone();
            return Err(self.truncated(&name));
        }
        let n = ((self.len - self.pos) as u64).min(self.remaining) as usize;
        let start = self.pos;
        self.pos += n;
        self.offset += n as u64;
        self.remaining -= n as u64;
        let chunk = &self.buf[start..start + n];
        self.crc.update(chunk);
        Ok(chunk)
    }

    /// Reads and discards the rest of the current entry's data (still checksummed).
    pub fn skip_data(&mut self) -> Result<(), TarError> {
        while !self.data_chunk()?.is_empty() {}
        Ok(())
    }

    /// CRC-64/ISO of the current entry's data read so far.
    pub fn data_crc(&self) -> Crc64Iso {
        self.crc
    }

    /// Reads a whole special file (pax record block, GNU long name) as raw bytes.
    fn read_special(&mut self, size: i64, context: &[u8]) -> Result<Vec<u8>, TarError> {
        let header_offset = self.offset - BLOCK as u64;
        if size < 0 || size as u64 > MAX_SPECIAL_FILE {
            return Err(TarError::BadHeader {
                offset: header_offset,
                reason: format!("extension header of {size} bytes (limit {MAX_SPECIAL_FILE})"),
            });
        }
        let mut data = vec![0u8; size as usize];
        let got = self.read_raw(&mut data)?;
        if got < data.len() {
            return Err(self.truncated(context));
        }
        let pad = padding_of(size as u64);
        self.skip_raw(pad, context)?;
        Ok(data)
    }

    /// Advances to the next header (draining the current entry's data and padding). Returns
    /// `None` at the end of the archive; the raw bytes then hold the end-of-archive blocks.
    pub fn next_header(&mut self) -> Result<Option<Header>, TarError> {
        self.skip_data()?;
        let padding = self.padding;
        self.padding = 0;
        let name = std::mem::take(&mut self.current_name);
        self.skip_raw(padding, &name)?;
        self.crc = Crc64Iso::new();

        let mut pax: Option<Vec<(Vec<u8>, Vec<u8>)>> = None;
        let mut gnu_long_name: Option<Vec<u8>> = None;
        let mut gnu_long_link: Option<Vec<u8>> = None;
        loop {
            let header_offset = self.offset;
            let mut block = [0u8; BLOCK];
            let got = self.read_raw(&mut block)?;
            if got == 0 {
                return Ok(None);
            }
            if got < BLOCK {
                return Err(self.truncated(b"header"));
            }
            if block.iter().all(|&b| b == 0) {
                let got = self.read_raw(&mut block)?;
                if got == 0 {
                    return Ok(None);
                }
                if got < BLOCK {
                    return Err(self.truncated(b"end-of-archive block"));
                }
                if block.iter().all(|&b| b == 0) {
                    return Ok(None);
                }
                return Err(TarError::BadHeader {
                    offset: header_offset,
                    reason: "a zero block followed by a non-zero block".into(),
                });
            }
            let mut header = parse_block(&block, header_offset)?;
            match block[156] {
                b'x' | b'g' => {
                    let data = self.read_special(header.size, &header.name)?;
                    let records = parse_pax(&data, header_offset)?;
                    if block[156] == b'g' {
                        let mut global = header;
                        global.kind = EntryKind::GlobalHeader;
                        global.size = 0;
                        global.uid = 0;
                        global.gid = 0;
                        global.mode = 0;
                        global.linkname.clear();
                        global.xattrs = xattrs_of(&records);
                        self.current_name = global.name.clone();
                        return Ok(Some(global));
                    }
                    pax = Some(records);
                }
                b'L' | b'K' => {
                    let data = self.read_special(header.size, &header.name)?;
                    let value = until_nul(&data).to_vec();
                    if block[156] == b'L' {
                        gnu_long_name = Some(value);
                    } else {
                        gnu_long_link = Some(value);
                    }
                }
                _ => {
                    if let Some(records) = &pax {
                        merge_pax(&mut header, records, header_offset)?;
                    }
                    if let Some(name) = gnu_long_name {
                        header.name = name;
                    }
                    if let Some(link) = gnu_long_link {
                        header.linkname = link;
                    }
                    if block[156] == 0 {
                        header.kind = if header.name.ends_with(b"/") {
                            EntryKind::Directory
                        } else {
                            EntryKind::Regular
                        };
                    }
                    if header.size < 0 {
                        return Err(TarError::BadHeader {
                            offset: header_offset,
                            reason: format!("negative size {}", header.size),
                        });
                    }
                    let data_len = match header.kind {
                        EntryKind::Regular | EntryKind::Other(_) => header.size as u64,
                        _ => 0,
                    };
                    self.remaining = data_len;
                    self.padding = padding_of(data_len);
                    self.current_name = header.name.clone();
                    return Ok(Some(header));
                }
            }
        }
    }

    /// After the end of the archive: reads whatever follows, in chunks of at most 1 MiB, into
    /// `sink` (as tar-split does), then returns the stream's digest and length. More than
    /// [`MAX_TRAILING_BYTES`] after the end of the archive is [`TarError::TrailingData`].
    pub fn finish(
        mut self,
        mut sink: impl FnMut(&[u8]) -> Result<(), io::Error>,
    ) -> Result<Result<(Digest, u64, R), io::Error>, TarError> {
        let mut chunk: Vec<u8> = Vec::new();
        let end_of_archive = self.offset;
        loop {
            if !self.fill()? {
                break;
            }
            if self.offset - end_of_archive > MAX_TRAILING_BYTES {
                return Err(TarError::TrailingData {
                    offset: end_of_archive,
                    limit: MAX_TRAILING_BYTES,
                });
            }
            let n = (self.len - self.pos).min(BUFFER_SIZE - chunk.len());
            chunk.extend_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            self.offset += n as u64;
            if chunk.len() == BUFFER_SIZE {
                if let Err(e) = sink(&chunk) {
                    return Ok(Err(e));
                }
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            if let Err(e) = sink(&chunk) {
                return Ok(Err(e));
            }
        }
        if let Err(e) = sink(&[]) {
            return Ok(Err(e));
        }
        let offset = self.offset;
        match self.digester.finish() {
            Some(digest) => Ok(Ok((digest, offset, self.inner))),
            None => Ok(Err(io::Error::other("the digest thread failed"))),
        }
    }
}

fn padding_of(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

fn until_nul(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

/// Parses a numeric field: octal (space/NUL padded) or GNU base-256.
fn parse_numeric(field: &[u8], what: &str, offset: u64) -> Result<i64, TarError> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            // base-256, two's complement; the first byte's top bit is the marker
            let negative = first & 0x40 != 0;
            let inv: u8 = if negative { 0xff } else { 0 };
            let mut value: u64 = 0;
            for (i, &byte) in field.iter().enumerate() {
                let mut b = byte ^ inv;
                if i == 0 {
                    b &= 0x7f;
                }
                if value >> 56 != 0 {
                    return Err(TarError::BadHeader {
                        offset,
                        reason: format!("{what}: base-256 number overflows"),
                    });
                }
                value = (value << 8) | u64::from(b);
            }
            if value >> 63 != 0 {
                return Err(TarError::BadHeader {
                    offset,
                    reason: format!("{what}: base-256 number overflows"),
                });
            }
            return Ok(if negative {
                !(value as i64)
            } else {
                value as i64
            });
        }
    }
    let trimmed = trim(field);
    if trimmed.is_empty() {
        return Ok(0);
    }
    let mut value: i64 = 0;
    for &b in trimmed {
        if !(b'0'..=b'7').contains(&b) {
            return Err(TarError::BadHeader {
                offset,
                reason: format!(
                    "{what}: invalid octal field {:?}",
                    String::from_utf8_lossy(field)
                ),
            });
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(i64::from(b - b'0')))
            .ok_or_else(|| TarError::BadHeader {
                offset,
                reason: format!("{what}: octal number overflows"),
            })?;
    }
    Ok(value)
}

fn trim(field: &[u8]) -> &[u8] {
    let is_pad = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !is_pad(b)).unwrap_or(field.len());
    let end = field
        .iter()
        .rposition(|b| !is_pad(b))
        .map_or(start, |e| e + 1);
    &field[start..end.max(start)]
}

fn parse_block(block: &[u8; BLOCK], offset: u64) -> Result<Header, TarError> {
    let stored = parse_numeric(&block[148..156], "checksum", offset)?;
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    if stored != unsigned && stored != signed {
        return Err(TarError::BadHeader {
            offset,
            reason: format!("checksum {stored:o} does not match {unsigned:o}"),
        });
    }
    let magic = &block[257..263];
    let version = &block[263..265];
    let ustar = magic == b"ustar\0" && version == b"00";
    let gnu = magic == b"ustar " && version == b" \0";
    let star = ustar && &block[508..512] == b"tar\0";
    let mut name = until_nul(&block[0..100]).to_vec();
    if ustar {
        let prefix = if star {
            until_nul(&block[345..476])
        } else {
            until_nul(&block[345..500])
        };
        if !prefix.is_empty() {
            let mut full = prefix.to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
    }
    let (devmajor, devminor) = if ustar || gnu {
        (
            parse_numeric(&block[329..337], "devmajor", offset)?,
            parse_numeric(&block[337..345], "devminor", offset)?,
        )
    } else {
        (0, 0)
    };
    let typeflag = block[156];
    let kind = match typeflag {
        b'0' | 0 => EntryKind::Regular,
        b'1' => EntryKind::HardLink,
        b'2' => EntryKind::Symlink,
        b'3' => EntryKind::CharDevice,
        b'4' => EntryKind::BlockDevice,
        b'5' => EntryKind::Directory,
        b'6' => EntryKind::Fifo,
        b'g' => EntryKind::GlobalHeader,
        other => EntryKind::Other(other),
    };
    let to_u32 = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| TarError::BadHeader {
            offset,
            reason: format!("{what} {v} out of range"),
        })
    };
    Ok(Header {
        name,
        linkname: until_nul(&block[157..257]).to_vec(),
        kind,
        mode: (parse_numeric(&block[100..108], "mode", offset)? & 0o7777) as u32,
        uid: parse_numeric(&block[108..116], "uid", offset)?,
        gid: parse_numeric(&block[116..124], "gid", offset)?,
        size: parse_numeric(&block[124..136], "size", offset)?,
        mtime: (parse_numeric(&block[136..148], "mtime", offset)?, 0),
        atime: None,
        devmajor: to_u32(devmajor, "devmajor")?,
        devminor: to_u32(devminor, "devminor")?,
        xattrs: Vec::new(),
        sparse: false,
    })
}

/// Parses pax records `"<len> <key>=<value>\n"`.
fn parse_pax(data: &[u8], offset: u64) -> Result<Records, TarError> {
    let bad = |reason: &str| TarError::BadHeader {
        offset,
        reason: format!("pax record: {reason}"),
    };
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // Go tolerates trailing NUL padding after the records
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("no length"))?;
        let len_text = std::str::from_utf8(&rest[..space]).map_err(|_| bad("bad length"))?;
        let len: usize = len_text.parse().map_err(|_| bad("bad length"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("bad length"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("no '='"))?;
        records.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(records)
}

fn xattrs_of(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    records
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(b"SCHILY.xattr.")
                .map(|name| (name.to_vec(), v.clone()))
        })
        .collect()
}

fn parse_pax_int(value: &[u8], key: &str, offset: u64) -> Result<i64, TarError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| TarError::BadHeader {
            offset,
            reason: format!(
                "pax {key}: invalid number {:?}",
                String::from_utf8_lossy(value)
            ),
        })
}

/// Parses a pax time (`seconds[.fraction]`, possibly negative) into seconds and nanoseconds.
fn parse_pax_time(value: &[u8], key: &str, offset: u64) -> Result<(i64, u32), TarError> {
    let bad = || TarError::BadHeader {
        offset,
        reason: format!(
            "pax {key}: invalid time {:?}",
            String::from_utf8_lossy(value)
        ),
    };
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (secs_text, frac_text) = match text.split_once('.') {
        Some((s, f)) => (s, f),
        None => (text, ""),
    };
    let negative = secs_text.starts_with('-');
    let secs: i64 = secs_text.parse().map_err(|_| bad())?;
    if !frac_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let mut nanos: u32 = 0;
    for (i, b) in frac_text.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if negative && nanos > 0 {
        // "-1.5" is 1.5 seconds before the epoch: -2 s + 0.5 s
        Ok((secs - 1, 1_000_000_000 - nanos))
    } else {
        Ok((secs, nanos))
    }
}

fn merge_pax(
    header: &mut Header,
    records: &[(Vec<u8>, Vec<u8>)],
    offset: u64,
) -> Result<(), TarError> {
    for (key, value) in records {
        match key.as_slice() {
            b"path" => header.name = value.clone(),
            b"linkpath" => header.linkname = value.clone(),
            b"uid" => header.uid = parse_pax_int(value, "uid", offset)?,
            b"gid" => header.gid = parse_pax_int(value, "gid", offset)?,
            b"size" => header.size = parse_pax_int(value, "size", offset)?,
            b"mtime" => header.mtime = parse_pax_time(value, "mtime", offset)?,
            b"atime" => header.atime = Some(parse_pax_time(value, "atime", offset)?),
            k if k.starts_with(b"SCHILY.xattr.") => {
                header
                    .xattrs
                    .push((k[b"SCHILY.xattr.".len()..].to_vec(), value.clone()));
            }
            k if k.starts_with(b"GNU.sparse.") => header.sparse = true,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        let table: &[(&[u8], Option<i64>)] = &[
            (b"0000644\0", Some(0o644)),
            (b"  755 \0", Some(0o755)),
            (b"\0\0\0\0", Some(0)),
            (b"", Some(0)),
            (b"00000000012\0", Some(10)),
            (b"0009", None),
            (&[0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], Some(1 << 32)),
            (&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe], Some(-2)),
            (
                &[
                    0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                None,
            ),
        ];
        for (field, expected) in table {
            let got = parse_numeric(field, "test", 0).ok();
            assert_eq!(got, *expected, "field {field:?}");
        }
    }

    #[test]
    fn pax_times() {
        let table: &[(&str, Option<(i64, u32)>)] = &[
            ("1234567890", Some((1234567890, 0))),
            ("1234567890.123456789", Some((1234567890, 123456789))),
            ("1234567890.5", Some((1234567890, 500000000))),
            ("1234567890.1234567891", Some((1234567890, 123456789))),
            ("-1.5", Some((-2, 500000000))),
            ("abc", None),
            ("1.x", None),
        ];
        for (text, expected) in table {
            assert_eq!(
                parse_pax_time(text.as_bytes(), "mtime", 0).ok(),
                *expected,
                "{text}"
            );
        }
    }

    #[test]
    fn pax_records() {
        let data = b"30 mtime=1234567890.123456789\n21 path=some/long/nm\n";
        let records = parse_pax(data, 0).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1], (b"path".to_vec(), b"some/long/nm".to_vec()));
        for bad in [&b"5 a=b\n"[..], b"x a=b\n", b"7 ab\n", b"100 a=b\n"] {
            assert!(parse_pax(bad, 0).is_err(), "{bad:?}");
        }
    }
}
