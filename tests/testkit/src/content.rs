//! Deterministic content generators for fixture files: a seeded PRNG (splitmix64), random
//! bytes, log-like text and base64 text, each reproducible from a name.

use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// The seed every fixture generator derives from (changing it changes every digest).
pub const SEED: &str = "podstore-testkit-v1";

/// splitmix64: tiny, fast and good enough to make bytes gzip cannot compress.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    /// A generator seeded from `SEED/name`.
    pub fn named(name: &str) -> Self {
        let hash = Sha256::digest(format!("{SEED}/{name}").as_bytes());
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&hash[..8]);
        Prng(u64::from_le_bytes(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound.max(1)
    }

    /// A log-uniform size in `min..=max`.
    pub fn log_uniform(&mut self, min: u64, max: u64) -> u64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let lo = (min.max(1) as f64).ln();
        let top = (max.max(min) as f64).ln();
        let value = (lo + unit * (top - lo)).exp() as u64;
        value.clamp(min, max)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.fill(&mut out);
        out
    }
}

/// Exactly `remaining` random bytes from a named generator, as a reader.
#[derive(Debug)]
pub struct RandomReader {
    prng: Prng,
    remaining: u64,
}

impl RandomReader {
    /// `len` bytes seeded by `name`.
    pub fn new(name: &str, len: u64) -> Self {
        RandomReader {
            prng: Prng::named(name),
            remaining: len,
        }
    }
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        // Whole 8-byte words keep the stream identical whatever the caller's buffer size.
        let n = if n >= 8 { n - n % 8 } else { n };
        let buf = &mut buf[..n];
        if n % 8 == 0 {
            self.prng.fill(buf);
        } else {
            // Only the very last read of a stream whose length is not a multiple of 8.
            let word = self.prng.next_u64().to_le_bytes();
            buf.copy_from_slice(&word[..n]);
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "container",
    "image",
    "layer",
    "storage",
    "overlay",
    "mount",
    "digest",
    "manifest",
    "registry",
    "blob",
    "config",
    "sandbox",
    "pod",
    "runtime",
    "kernel",
    "cgroup",
    "namespace",
    "snapshot",
    "pull",
    "push",
];
const LEVELS: &[&str] = &["DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR"];

/// Exactly `remaining` bytes of log-like text (compressible, like real logs), as a reader.
#[derive(Debug)]
pub struct TextReader {
    prng: Prng,
    remaining: u64,
    clock: u64,
    line: Vec<u8>,
    pos: usize,
}

impl TextReader {
    /// `len` bytes of text seeded by `name`.
    pub fn new(name: &str, len: u64) -> Self {
        TextReader {
            prng: Prng::named(name),
            remaining: len,
            clock: 1_577_836_800,
            line: Vec::new(),
            pos: 0,
        }
    }

    fn next_line(&mut self) {
        let p = &mut self.prng;
        self.clock += p.below(3);
        let mut word = || WORDS[p.below(WORDS.len() as u64) as usize];
        let (w1, w2, w3, w4, w5) = (word(), word(), word(), word(), word());
        let level = LEVELS[self.prng.below(LEVELS.len() as u64) as usize];
        let line = format!(
            "{}.{:06} {:<5} component={} req={:08x} msg=\"{} {} {} {}\" took={}ms\n",
            self.clock,
            self.prng.below(1_000_000),
            level,
            w1,
            self.prng.below(1 << 32),
            w2,
            w3,
            w4,
            w5,
            self.prng.below(5000)
        );
        self.line = line.into_bytes();
        self.pos = 0;
    }
}

impl Read for TextReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() && self.remaining > 0 {
            if self.pos == self.line.len() {
                self.next_line();
            }
            let n = (self.line.len() - self.pos)
                .min(buf.len() - done)
                .min(self.remaining as usize);
            buf[done..done + n].copy_from_slice(&self.line[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
            self.remaining -= n as u64;
        }
        Ok(done)
    }
}

/// `len` bytes of log-like text seeded by `name`.
pub fn text(name: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    // Reading from an in-memory generator cannot fail.
    let _ = TextReader::new(name, len as u64).read_to_end(&mut out);
    out
}

/// `base64 -w 76` of `len` random bytes seeded by `name` (trailing newline included).
pub fn base64_text(name: &str, len: usize) -> Vec<u8> {
    use base64::Engine as _;
    let raw = Prng::named(name).bytes(len);
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 76 + 1);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_give_the_same_bytes_whatever_the_buffer_size() {
        let whole = {
            let mut v = Vec::new();
            RandomReader::new("x", 1003).read_to_end(&mut v).unwrap();
            v
        };
        assert_eq!(whole.len(), 1003);
        let mut small = Vec::new();
        let mut r = RandomReader::new("x", 1003);
        let mut buf = [0u8; 13];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            small.extend_from_slice(&buf[..n]);
        }
        assert_eq!(whole, small);
        assert_eq!(text("t", 5000).len(), 5000);
        assert_eq!(text("t", 5000), text("t", 5000));
        assert_ne!(Prng::named("a").next_u64(), Prng::named("b").next_u64());
    }

    #[test]
    fn log_uniform_stays_in_range() {
        let mut p = Prng::named("sizes");
        for _ in 0..1000 {
            let v = p.log_uniform(16, 32768);
            assert!((16..=32768).contains(&v), "{v}");
        }
    }
}
