//! Content digests (`algorithm:hex`) as OCI and containers/image define them, and streaming
//! hashers and verifiers over ring's SHA-2 (assembly: about 2× sha2's portable code on CPUs
//! without SHA-NI, and blob verification bounds the pull speed).
//!
//! Only the registered algorithms sha256, sha384 and sha512 are accepted; the hex part must be
//! lowercase and exactly as long as the algorithm's output.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// A registered digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the canonical algorithm of OCI images.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as written before the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }

    /// Looks an algorithm up by name; `None` when it is not registered.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// A fresh streaming hasher for this algorithm.
    pub fn digester(self) -> Digester {
        Digester::new(self)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// There is no `:` separating algorithm and hex.
    #[error("invalid digest {input:?}: missing ':' between algorithm and encoded part")]
    MissingSeparator {
        /// The offending input.
        input: String,
    },
    /// The algorithm part is well-formed but not one podstore supports.
    #[error("invalid digest {input:?}: unsupported digest algorithm {algorithm:?}")]
    UnsupportedAlgorithm {
        /// The offending input.
        input: String,
        /// The algorithm named by the input.
        algorithm: String,
    },
    /// The algorithm part does not follow the OCI grammar.
    #[error("invalid digest {input:?}: malformed algorithm {algorithm:?}")]
    MalformedAlgorithm {
        /// The offending input.
        input: String,
        /// The algorithm named by the input.
        algorithm: String,
    },
    /// The hex part has the wrong length for the algorithm.
    #[error("invalid digest {input:?}: {algorithm} needs {expected} hex characters, found {found}")]
    BadLength {
        /// The offending input.
        input: String,
        /// The algorithm named by the input.
        algorithm: Algorithm,
        /// The length the algorithm requires.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// The hex part holds a character outside `[0-9a-f]` (upper case is refused too).
    #[error("invalid digest {input:?}: encoded part must be lowercase hex")]
    BadHex {
        /// The offending input.
        input: String,
    },
}

/// A validated content digest such as `sha256:e3b0c442…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses and validates `algorithm:hex`.
    pub fn parse(input: &str) -> Result<Digest, DigestError> {
        let Some((alg, hex)) = input.split_once(':') else {
            return Err(DigestError::MissingSeparator {
                input: input.to_owned(),
            });
        };
        let algorithm = match Algorithm::from_name(alg) {
            Some(a) => a,
            None if is_algorithm_grammar(alg) => {
                return Err(DigestError::UnsupportedAlgorithm {
                    input: input.to_owned(),
                    algorithm: alg.to_owned(),
                });
            }
            None => {
                return Err(DigestError::MalformedAlgorithm {
                    input: input.to_owned(),
                    algorithm: alg.to_owned(),
                });
            }
        };
        Digest::from_hex(algorithm, hex).map_err(|e| match e {
            DigestError::BadLength {
                algorithm,
                expected,
                found,
                ..
            } => DigestError::BadLength {
                input: input.to_owned(),
                algorithm,
                expected,
                found,
            },
            _ => DigestError::BadHex {
                input: input.to_owned(),
            },
        })
    }

    /// Builds a digest from an algorithm and its hex encoding, validating the hex.
    pub fn from_hex(algorithm: Algorithm, hex: &str) -> Result<Digest, DigestError> {
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::BadLength {
                input: format!("{algorithm}:{hex}"),
                algorithm,
                expected: algorithm.hex_len(),
                found: hex.len(),
            });
        }
        if !is_lower_hex(hex) {
            return Err(DigestError::BadHex {
                input: format!("{algorithm}:{hex}"),
            });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The digest of `data` under `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut d = algorithm.digester();
        d.update(data);
        d.finish()
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding (what containers/storage calls `Hex()` or `Encoded()`).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A streaming verifier that checks data against this digest.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            expected: self.clone(),
            digester: self.algorithm.digester(),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// OCI algorithm grammar: `[a-z0-9]+([+._-][a-z0-9]+)*`.
fn is_algorithm_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.split(['+', '.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// A streaming hasher producing a [`Digest`]. Also usable as an [`io::Write`] sink.
pub struct Digester {
    algorithm: Algorithm,
    context: ring::digest::Context,
    bytes: u64,
}

impl Digester {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Digester {
        let ring_algorithm = match algorithm {
            Algorithm::Sha256 => &ring::digest::SHA256,
            Algorithm::Sha384 => &ring::digest::SHA384,
            Algorithm::Sha512 => &ring::digest::SHA512,
        };
        Digester {
            algorithm,
            context: ring::digest::Context::new(ring_algorithm),
            bytes: 0,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.context.update(data);
    }

    /// Number of bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The algorithm being computed.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Finishes and returns the digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest {
            algorithm: self.algorithm,
            hex: hex::encode(self.context.finish()),
        }
    }
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digester")
            .field("algorithm", &self.algorithm())
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Write for Digester {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Data did not hash to the digest it was expected to have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("digest mismatch: expected {expected}, got {actual} ({bytes} bytes read)")]
pub struct DigestMismatch {
    /// The digest the data should have had.
    pub expected: Digest,
    /// The digest it actually had.
    pub actual: Digest,
    /// How many bytes were hashed.
    pub bytes: u64,
}

/// Checks a stream of bytes against an expected digest.
#[derive(Debug)]
pub struct Verifier {
    expected: Digest,
    digester: Digester,
}

impl Verifier {
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.digester.update(data);
    }

    /// Number of bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.digester.bytes()
    }

    /// The digest the data must have.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// Finishes: `Ok` with the digest when it matches, else the mismatch with both values.
    pub fn verify(self) -> Result<Digest, DigestMismatch> {
        let bytes = self.digester.bytes();
        let actual = self.digester.finish();
        if actual == self.expected {
            Ok(actual)
        } else {
            Err(DigestMismatch {
                expected: self.expected,
                actual,
                bytes,
            })
        }
    }
}

/// A reader that hashes everything read through it.
#[derive(Debug)]
pub struct DigestingReader<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> DigestingReader<R> {
    /// Wraps `inner`, hashing with `algorithm`.
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        DigestingReader {
            inner,
            digester: algorithm.digester(),
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.digester.bytes()
    }

    /// The digest of what was read, and the inner reader.
    pub fn finish(self) -> (Digest, R) {
        (self.digester.finish(), self.inner)
    }
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_table() {
        let ok = [
            EMPTY_SHA256,
            "sha384:38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b",
            "sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
        ];
        for s in ok {
            let d = Digest::parse(s).unwrap();
            assert_eq!(d.to_string(), s);
        }
        type ErrorCheck = fn(&DigestError) -> bool;
        let bad: [(&str, ErrorCheck); 7] = [
            ("sha256", |e| {
                matches!(e, DigestError::MissingSeparator { .. })
            }),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", |e| {
                matches!(e, DigestError::UnsupportedAlgorithm { .. })
            }),
            ("SHA256:e3b0", |e| {
                matches!(e, DigestError::MalformedAlgorithm { .. })
            }),
            (":e3b0", |e| {
                matches!(e, DigestError::MalformedAlgorithm { .. })
            }),
            ("sha256:e3b0", |e| {
                matches!(
                    e,
                    DigestError::BadLength {
                        expected: 64,
                        found: 4,
                        ..
                    }
                )
            }),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                |e| matches!(e, DigestError::BadHex { .. }),
            ),
            (
                "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                |e| matches!(e, DigestError::BadHex { .. }),
            ),
        ];
        for (s, check) in bad {
            let e = Digest::parse(s).unwrap_err();
            assert!(check(&e), "{s}: unexpected error {e:?}");
            assert!(e.to_string().contains(s), "error must name the input: {e}");
        }
    }

    #[test]
    fn hashes_and_verifies() {
        assert_eq!(Digest::sha256_of(b"").to_string(), EMPTY_SHA256);
        let expected = Digest::sha256_of(b"hello");
        let mut v = expected.verifier();
        v.update(b"hel");
        v.update(b"lo");
        assert_eq!(v.verify().unwrap(), expected);
        let mut v = expected.verifier();
        v.update(b"hellO");
        let err = v.verify().unwrap_err();
        assert_eq!(err.expected, expected);
        assert_eq!(err.actual, Digest::sha256_of(b"hellO"));
        assert_eq!(err.bytes, 5);
    }

    /// FIPS 180-2 test vectors ("abc" and the 448-bit message), fed whole and split at odd
    /// boundaries, for every registered algorithm.
    #[test]
    fn known_answer_vectors() {
        const LONG: &[u8] = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        let table: &[(Algorithm, &[u8], &str)] = &[
            (
                Algorithm::Sha256,
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                Algorithm::Sha256,
                LONG,
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (
                Algorithm::Sha384,
                b"abc",
                "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
                 8086072ba1e7cc2358baeca134c825a7",
            ),
            (
                Algorithm::Sha512,
                b"abc",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                 2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
        ];
        for &(algorithm, data, hex) in table {
            assert_eq!(Digest::of(algorithm, data).hex(), hex, "{algorithm} whole");
            let mut d = algorithm.digester();
            for piece in data.chunks(7) {
                d.update(piece);
            }
            assert_eq!(d.algorithm(), algorithm);
            assert_eq!(d.bytes(), data.len() as u64);
            assert_eq!(d.finish().hex(), hex, "{algorithm} in pieces");
        }
    }

    #[test]
    fn digesting_reader_counts() {
        let mut r = DigestingReader::new(&b"abcdef"[..], Algorithm::Sha512);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.bytes_read(), 6);
        let (d, _) = r.finish();
        assert_eq!(d, Digest::of(Algorithm::Sha512, b"abcdef"));
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::parse(EMPTY_SHA256).unwrap();
        let j = serde_json_like(&d);
        assert_eq!(j, format!("\"{EMPTY_SHA256}\""));
    }

    fn serde_json_like(d: &Digest) -> String {
        // toml's serializer is a dependency already; a bare string value round-trips through it.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct W {
            d: Digest,
        }
        let s = toml::to_string(&W { d: d.clone() }).unwrap();
        let back: W = toml::from_str(&s).unwrap();
        assert_eq!(&back.d, d);
        format!("\"{}\"", back.d)
    }
}
