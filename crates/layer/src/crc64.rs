//! CRC-64 with the ISO polynomial, bit-reflected, exactly as Go's `hash/crc64` with its `ISO`
//! table (the checksum tar-split stores for every file payload), computed slicing-by-16 (16
//! table lookups per 16 bytes, no serial dependency between them: ~1.5x slicing-by-8).

/// The reflected ISO polynomial (x^64 + x^4 + x^3 + x + 1), as Go's `crc64.ISO`.
const ISO_POLY_REFLECTED: u64 = 0xD800_0000_0000_0000;

/// Bytes consumed per step of the sliced loop (one table per byte).
const SLICES: usize = 16;

const fn make_tables() -> [[u64; 256]; SLICES] {
    let mut tables = [[0u64; 256]; SLICES];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ ISO_POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < SLICES {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

static TABLES: [[u64; 256]; SLICES] = make_tables();

/// A running CRC-64/ISO.
#[derive(Debug, Clone, Copy, Default)]
pub struct Crc64Iso {
    state: u64,
}

impl Crc64Iso {
    /// A fresh checksum (of zero bytes).
    pub fn new() -> Crc64Iso {
        Crc64Iso { state: 0 }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        let t = &TABLES;
        let mut crc = !self.state;
        let mut chunks = data.chunks_exact(SLICES);
        for chunk in &mut chunks {
            let mut low = [0u8; 8];
            low.copy_from_slice(&chunk[..8]);
            let crc_low = crc ^ u64::from_le_bytes(low);
            let high = &chunk[8..];
            crc = t[15][(crc_low & 0xff) as usize]
                ^ t[14][((crc_low >> 8) & 0xff) as usize]
                ^ t[13][((crc_low >> 16) & 0xff) as usize]
                ^ t[12][((crc_low >> 24) & 0xff) as usize]
                ^ t[11][((crc_low >> 32) & 0xff) as usize]
                ^ t[10][((crc_low >> 40) & 0xff) as usize]
                ^ t[9][((crc_low >> 48) & 0xff) as usize]
                ^ t[8][(crc_low >> 56) as usize]
                ^ t[7][usize::from(high[0])]
                ^ t[6][usize::from(high[1])]
                ^ t[5][usize::from(high[2])]
                ^ t[4][usize::from(high[3])]
                ^ t[3][usize::from(high[4])]
                ^ t[2][usize::from(high[5])]
                ^ t[1][usize::from(high[6])]
                ^ t[0][usize::from(high[7])];
        }
        for &byte in chunks.remainder() {
            crc = t[0][((crc ^ u64::from(byte)) & 0xff) as usize] ^ (crc >> 8);
        }
        self.state = !crc;
    }

    /// The checksum so far.
    pub fn value(&self) -> u64 {
        self.state
    }

    /// The checksum as tar-split stores it: 8 bytes, big-endian.
    pub fn to_be_bytes(&self) -> [u8; 8] {
        self.state.to_be_bytes()
    }
}

/// CRC-64/ISO of one buffer.
pub fn crc64_iso(data: &[u8]) -> u64 {
    let mut crc = Crc64Iso::new();
    crc.update(data);
    crc.value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytewise(data: &[u8]) -> u64 {
        let mut crc = !0u64;
        for &b in data {
            crc = TABLES[0][((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
        !crc
    }

    #[test]
    fn known_values() {
        let table: &[(&[u8], u64)] = &[
            (b"", 0),
            (b"123456789", 0xb909_56c7_75a4_1001),
            // the spec's example: "hello\n" has payload YUw+7uLYEAA=
            (
                b"hello\n",
                u64::from_be_bytes([0x61, 0x4c, 0x3e, 0xee, 0xe2, 0xd8, 0x10, 0x00]),
            ),
        ];
        for (input, expected) in table {
            assert_eq!(crc64_iso(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn sliced_equals_bytewise_and_incremental() {
        let data: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let whole = crc64_iso(&data);
        assert_eq!(whole, bytewise(&data));
        // every remainder length and alignment around the 16-byte step
        for start in 0..17 {
            for len in 0..70 {
                let piece = &data[start..start + len];
                assert_eq!(crc64_iso(piece), bytewise(piece), "{len} bytes at {start}");
            }
        }
        for split in [0, 1, 7, 8, 9, 15, 16, 17, 31, 4095, 9999] {
            let mut crc = Crc64Iso::new();
            crc.update(&data[..split]);
            crc.update(&data[split..]);
            assert_eq!(crc.value(), whole, "split at {split}");
        }
    }
}
