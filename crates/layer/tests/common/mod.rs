//! Test helpers: a raw tar writer (ustar, pax records, GNU long names, hostile headers) that
//! gives exact control over every byte, compression helpers, and a tree snapshot (names,
//! types, modes, owners, xattrs, contents, link counts) to compare unpacked layers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Header flavour.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Format {
    /// ustar; long names and xattrs go into pax `x` records.
    Pax,
    /// GNU; long names go into `././@LongLink` `L`/`K` entries.
    Gnu,
}

/// One entry to write.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: Vec<u8>,
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub mtime_pax: Option<String>,
    pub data: Vec<u8>,
    /// Declared size (defaults to data length).
    pub size: Option<u64>,
    pub link: Vec<u8>,
    pub dev: (u32, u32),
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(name: &str, typeflag: u8, mode: u32) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            typeflag,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_577_836_800,
            mtime_pax: None,
            data: Vec::new(),
            size: None,
            link: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        }
    }
    pub fn file(name: &str, data: &[u8]) -> Entry {
        let mut e = Entry::new(name, b'0', 0o644);
        e.data = data.to_vec();
        e
    }
    pub fn dir(name: &str) -> Entry {
        Entry::new(name, b'5', 0o755)
    }
    pub fn symlink(name: &str, target: &str) -> Entry {
        let mut e = Entry::new(name, b'2', 0o777);
        e.link = target.as_bytes().to_vec();
        e
    }
    pub fn hardlink(name: &str, target: &str) -> Entry {
        let mut e = Entry::new(name, b'1', 0o644);
        e.link = target.as_bytes().to_vec();
        e
    }
    pub fn fifo(name: &str) -> Entry {
        Entry::new(name, b'6', 0o644)
    }
    pub fn chardev(name: &str, major: u32, minor: u32) -> Entry {
        let mut e = Entry::new(name, b'3', 0o666);
        e.dev = (major, minor);
        e
    }
    pub fn blockdev(name: &str, major: u32, minor: u32) -> Entry {
        let mut e = Entry::new(name, b'4', 0o660);
        e.dev = (major, minor);
        e
    }
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn xattr(mut self, key: &str, value: &[u8]) -> Entry {
        self.xattrs.push((key.to_owned(), value.to_vec()));
        self
    }
    pub fn pax_mtime(mut self, text: &str) -> Entry {
        self.mtime_pax = Some(text.to_owned());
        self
    }
    pub fn declared_size(mut self, size: u64) -> Entry {
        self.size = Some(size);
        self
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    let bytes = text.as_bytes();
    if bytes.len() > width {
        // base-256
        field.fill(0);
        field[0] = 0x80;
        let be = value.to_be_bytes();
        let n = field.len();
        field[n - 8..].copy_from_slice(&be);
        field[0] |= 0x80;
        return;
    }
    field[..width].copy_from_slice(bytes);
    field[width] = 0;
}

/// Builds a raw 512-byte header block.
pub fn header_block(
    format: Format,
    name: &[u8],
    e: &Entry,
    typeflag: u8,
    size: u64,
    link: &[u8],
) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = name.len().min(100);
    b[..n].copy_from_slice(&name[..n]);
    octal(&mut b[100..108], u64::from(e.mode));
    octal(&mut b[108..116], e.uid);
    octal(&mut b[116..124], e.gid);
    octal(&mut b[124..136], size);
    octal(&mut b[136..148], e.mtime);
    b[156] = typeflag;
    let l = link.len().min(100);
    b[157..157 + l].copy_from_slice(&link[..l]);
    match format {
        Format::Pax => {
            b[257..263].copy_from_slice(b"ustar\0");
            b[263..265].copy_from_slice(b"00");
        }
        Format::Gnu => {
            b[257..263].copy_from_slice(b"ustar ");
            b[263..265].copy_from_slice(b" \0");
        }
    }
    b[265..269].copy_from_slice(b"root");
    b[297..301].copy_from_slice(b"root");
    octal(&mut b[329..337], u64::from(e.dev.0));
    octal(&mut b[337..345], u64::from(e.dev.1));
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let text = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(text.as_bytes());
    b
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3;
    let mut len = body_len + 1;
    loop {
        let total = body_len + len.to_string().len();
        if total == len {
            break;
        }
        len = total;
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// Writes a tar stream entry by entry.
pub struct TarWriter {
    pub out: Vec<u8>,
    pub format: Format,
}

impl TarWriter {
    pub fn new(format: Format) -> TarWriter {
        TarWriter {
            out: Vec::new(),
            format,
        }
    }

    /// Raw bytes, verbatim (hostile streams).
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    pub fn add(&mut self, e: Entry) -> &mut Self {
        let size = e.size.unwrap_or(e.data.len() as u64);
        let mut name = e.name.clone();
        let mut link = e.link.clone();
        let mut records = Vec::new();
        if self.format == Format::Pax {
            if name.len() > 100 {
                records.extend(pax_record("path", &name));
                name.truncate(100);
            }
            if link.len() > 100 {
                records.extend(pax_record("linkpath", &link));
                link.truncate(100);
            }
        }
        if let Some(m) = &e.mtime_pax {
            records.extend(pax_record("mtime", m.as_bytes()));
        }
        for (k, v) in &e.xattrs {
            records.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        if !records.is_empty() {
            let mut pax_name = b"PaxHeaders/".to_vec();
            pax_name.extend_from_slice(&name[..name.len().min(80)]);
            let h = Entry::new("", b'x', 0o644);
            self.out.extend_from_slice(&header_block(
                Format::Pax,
                &pax_name,
                &h,
                b'x',
                records.len() as u64,
                b"",
            ));
            self.out.extend_from_slice(&records);
            pad(&mut self.out);
        }
        if self.format == Format::Gnu {
            for (flag, value) in [(b'K', &mut link), (b'L', &mut name)] {
                if value.len() > 100 {
                    let mut data = value.clone();
                    data.push(0);
                    let h = Entry::new("", flag, 0o644);
                    self.out.extend_from_slice(&header_block(
                        Format::Gnu,
                        b"././@LongLink",
                        &h,
                        flag,
                        data.len() as u64,
                        b"",
                    ));
                    self.out.extend_from_slice(&data);
                    pad(&mut self.out);
                    value.truncate(100);
                }
            }
        }
        self.out.extend_from_slice(&header_block(
            self.format,
            &name,
            &e,
            e.typeflag,
            size,
            &link,
        ));
        self.out.extend_from_slice(&e.data);
        pad(&mut self.out);
        self
    }

    /// End-of-archive blocks, padded to a 10240-byte record like GNU tar.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend_from_slice(&[0u8; 1024]);
        let rem = out.len() % 10240;
        if rem != 0 {
            out.resize(out.len() + 10240 - rem, 0);
        }
        out
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

pub fn sha256(data: &[u8]) -> String {
    podstore_reference::Digest::sha256_of(data).to_string()
}

/// What a path looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Fifo,
    Char(u64),
    Block(u64),
    Other,
}

/// One node of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub mtime: (i64, i64),
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Snapshot of a tree (paths relative to `root`, root itself excluded). Xattrs listed are all
/// but `security.selinux`.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File(std::fs::read(&path).unwrap())
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink(
                std::fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            )
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::Char(meta.rdev())
        } else if ft.is_block_device() {
            Kind::Block(meta.rdev())
        } else {
            Kind::Other
        };
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        out.insert(
            rel,
            Node {
                kind: kind.clone(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                nlink: meta.nlink(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                xattrs: xattrs(&path),
            },
        );
        if kind == Kind::Dir {
            walk(root, &path, out);
        }
    }
}

pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let mut out = BTreeMap::new();
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return out;
    };
    for key in names[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let key_str = String::from_utf8_lossy(key).into_owned();
        if key_str == "security.selinux" {
            continue;
        }
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(path, OsStr::from_bytes(key), &mut value[..]).unwrap();
        value.truncate(len);
        out.insert(key_str, value);
    }
    out
}

pub fn shm_tempdir() -> tempfile::TempDir {
    podstore_testkit::peers::shm_tempdir("podstore-layer-")
}
