//! The archive's object format: one header line (format, compression, SHA-256 and length of
//! the original bytes), then the compressed body. The checksum covers the original file, so a
//! flipped byte anywhere — header, body, compression — is caught on fetch.
//!
//! Bytes in, bytes out, or through a reader or writer the caller hands in. Must not open files.

use std::io::{Read, Write};

/// How object bodies are compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// zstd (level 3): the default, fast and small.
    #[default]
    Zstd,
    /// gzip (level 6, pure Rust miniz_oxide).
    Gzip,
    /// Stored as is.
    None,
}

impl Compression {
    /// Parses `zstd`, `gzip` or `none`.
    pub fn parse(v: &str) -> Result<Compression, String> {
        match v.trim() {
            "zstd" => Ok(Compression::Zstd),
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            other => Err(format!("{other:?} must be zstd, gzip or none")),
        }
    }

    /// The name written in headers and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

const MAGIC: &str = "pgquorum-archive/1";

/// What an object's header says about the file it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Compression of the body.
    pub compression: Compression,
    /// SHA-256 of the original file, lower-case hex.
    pub sha256: String,
    /// Length of the original file.
    pub len: u64,
}

/// Why an object could not be turned back into its file: it is damaged or not ours.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Corrupt(pub String);

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data))
}

/// A digest in lower-case hex.
pub fn hex(d: ring::digest::Digest) -> String {
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies `src` into `sink` in 256 KiB pieces; returns the SHA-256 (hex) and length of what
/// passed.
fn copy_hashed(mut src: impl Read, sink: &mut dyn Write) -> std::io::Result<(String, u64)> {
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let (mut len, mut buf) = (0u64, vec![0u8; 256 << 10]);
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        len += n as u64;
        sink.write_all(&buf[..n])?;
    }
    sink.flush()?;
    Ok((hex(sha.finish()), len))
}

/// Packs `data` into an object: header line, then the compressed body.
pub fn encode(data: &[u8], compression: Compression) -> std::io::Result<Vec<u8>> {
    encode_from(data, compression)
}

/// The zstd encoder for WAL: level 3 with a 512 KiB window (`windowLog` 19) instead of the 2 MiB
/// level 3 picks for a 16 MiB input. WAL repeats itself within a few pages, so pgbench segments
/// came out the same size (3,342,677 against 3,355,730 bytes for one, 506,440 against 507,481
/// for another, `zstd -3 --zstd=wlog=19`), and each compression holds about 1.5 MiB less while
/// it runs (up to `archive.parallel` run at once). Any zstd decoder reads it.
fn wal_zstd<W: Write>(out: W) -> std::io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
    enc.window_log(19)?;
    Ok(enc)
}

/// Room left before the body for the header, written once the checksum is known.
const HEADER_ROOM: usize = 128;

/// Packs what `src` yields into an object, reading it in 256 KiB pieces: only the compressed
/// object is ever held whole (a 16 MiB WAL segment is not read into memory first).
pub fn encode_from(src: impl Read, compression: Compression) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0u8; HEADER_ROOM];
    let (hex, len) = {
        let mut sink: Box<dyn Write + '_> = match compression {
            Compression::None => Box::new(&mut out),
            Compression::Zstd => Box::new(wal_zstd(&mut out)?.auto_finish()),
            Compression::Gzip => {
                Box::new(flate2::write::GzEncoder::new(&mut out, flate2::Compression::new(6)))
            }
        };
        copy_hashed(src, &mut sink)?
    };
    let header = format!("{MAGIC} {} {hex} {len}\n", compression.name());
    assert!(header.len() <= HEADER_ROOM, "the header fits the room kept for it");
    let start = HEADER_ROOM - header.len();
    out[start..HEADER_ROOM].copy_from_slice(header.as_bytes());
    out.drain(..start);
    Ok(out)
}

/// SHA-256 (hex) and length of what `src` yields, read in 256 KiB pieces.
pub fn sha256_from(src: impl Read) -> std::io::Result<(String, u64)> {
    copy_hashed(src, &mut std::io::sink())
}

/// Longest header line [`header`] reads, newline included: `Store::get_head` of this many
/// bytes is enough to read an object's header.
pub const HEADER_MAX: usize = 256;

/// Reads an object's header (without the body); `Err` when it is not a pgquorum object.
pub fn header(object: &[u8]) -> Result<(Header, usize), Corrupt> {
    let end =
        object.iter().take(HEADER_MAX).position(|&b| b == b'\n').ok_or_else(|| {
            Corrupt("no pgquorum archive header (damaged, or not written by pgquorum)".into())
        })?;
    let line = std::str::from_utf8(&object[..end]).map_err(|_| Corrupt("header is not text".into()))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let [magic, comp, sha, len] = parts[..] else {
        return Err(Corrupt(format!("malformed header {line:?}")));
    };
    if magic != MAGIC {
        return Err(Corrupt(format!("unknown format {magic:?} (expected {MAGIC})")));
    }
    let compression = Compression::parse(comp).map_err(|e| Corrupt(format!("header compression {e}")))?;
    let len = len.parse().map_err(|_| Corrupt(format!("header length {len:?} is not a number")))?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Corrupt(format!("header checksum {sha:?} is not a SHA-256")));
    }
    Ok((Header { compression, sha256: sha.to_string(), len }, end + 1))
}

/// Why an object could not be written out as its original file.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The object is damaged or not ours.
    #[error("{0}")]
    Corrupt(#[from] Corrupt),
    /// Writing the file failed.
    #[error("{0}")]
    Write(std::io::Error),
}

/// A sink that remembers whether it failed, to tell its errors from those of the reader
/// copied into it.
struct Sink<'a> {
    inner: &'a mut dyn Write,
    failed: bool,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// Unpacks an object into `out` in 256 KiB pieces (a 16 MiB WAL segment is never held whole),
/// verifying length and checksum; on `Err`, what `out` received must be thrown away.
pub fn decode_to(object: &[u8], out: &mut dyn Write) -> Result<(), DecodeError> {
    let (h, start) = header(object)?;
    let body = &object[start..];
    let src: Box<dyn Read + '_> = match h.compression {
        Compression::None => Box::new(body),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(body)
                .map_err(|e| Corrupt(format!("zstd body does not decompress: {e}")))?,
        ),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(body)),
    };
    let mut sink = Sink { inner: out, failed: false };
    let (sum, len) = copy_hashed(src.take(h.len + 1), &mut sink).map_err(|e| {
        if sink.failed {
            DecodeError::Write(e)
        } else {
            Corrupt(format!("{} body does not decompress: {e}", h.compression.name())).into()
        }
    })?;
    if len != h.len {
        return Err(Corrupt(format!("length {len} differs from the header's {}", h.len)).into());
    }
    if sum != h.sha256 {
        return Err(Corrupt(format!("checksum {sum} differs from the header's {}", h.sha256)).into());
    }
    Ok(())
}

/// Unpacks an object into the original bytes, verifying length and checksum (the tests' way
/// in; the agent unpacks into files with [`decode_to`]).
#[cfg(test)]
fn decode(object: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let mut out = Vec::new();
    decode_to(object, &mut out).map_err(|e| match e {
        DecodeError::Corrupt(c) => c,
        DecodeError::Write(e) => Corrupt(format!("writing to memory: {e}")),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect()
    }

    /// Records the largest single write, and fails once `fail_after` bytes were taken.
    struct Probe {
        total: usize,
        largest: usize,
        fail_after: usize,
    }

    impl Write for Probe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.total + buf.len() > self.fail_after {
                return Err(std::io::Error::other("disk full"));
            }
            (self.total, self.largest) = (self.total + buf.len(), self.largest.max(buf.len()));
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_segment_is_unpacked_in_pieces_and_a_failed_write_is_not_called_damage() {
        let data: Vec<u8> = (0..16usize << 20).map(|i| (i % 251) as u8).collect();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let obj = encode(&data, c).expect("encode");
            let mut probe = Probe { total: 0, largest: 0, fail_after: usize::MAX };
            decode_to(&obj, &mut probe).expect("decode");
            assert_eq!(probe.total, data.len(), "{c:?}");
            assert!(probe.largest <= 256 << 10, "{c:?}: a write of {} bytes", probe.largest);
            let mut full = Probe { total: 0, largest: 0, fail_after: 1 << 20 };
            match decode_to(&obj, &mut full) {
                Err(DecodeError::Write(e)) => assert!(e.to_string().contains("disk full"), "{c:?}: {e}"),
                other => panic!("{c:?}: expected a write error, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_compression_round_trips_and_shrinks_repetitive_data() {
        let data = sample();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let obj = encode(&data, c).expect("encode");
            if c != Compression::None {
                assert!(obj.len() < data.len() / 4, "{c:?} did not compress: {}", obj.len());
            }
            assert_eq!(header(&obj).expect("header").0.compression, c);
            assert_eq!(decode(&obj).expect("decode"), data, "{c:?}");
        }
    }

    #[test]
    fn wal_is_compressed_with_a_512_kib_window() {
        // A segment-sized input, so zstd would pick its 2 MiB window for level 3 on its own.
        let data: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let obj = encode(&data, Compression::Zstd).expect("encode");
        let (_, start) = header(&obj).expect("header");
        let frame = &obj[start..];
        assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
        // Frame header descriptor (RFC 8878): unless its Single_Segment_flag is set, the window
        // descriptor follows it; the descriptor's exponent is windowLog - 10.
        assert_eq!(frame[4] & 0x20, 0, "single-segment frame: no window descriptor");
        let window_log = 10 + (frame[5] >> 3);
        assert_eq!(window_log, 19, "WAL compressed with a {} KiB window", 1u32 << (window_log - 10));
        assert_eq!(decode(&obj).expect("decode"), data);
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected() {
        let data = sample();
        for c in [Compression::Zstd, Compression::Gzip, Compression::None] {
            let obj = encode(&data, c).expect("encode");
            let (_, start) = header(&obj).expect("header");
            for at in [start + 1, start + (obj.len() - start) / 2, obj.len() - 1, 30] {
                let mut bad = obj.clone();
                bad[at] ^= 0x20;
                assert!(decode(&bad).is_err(), "{c:?}: flip at {at} of {} went unnoticed", obj.len());
            }
        }
    }

    #[test]
    fn foreign_objects_are_refused_with_a_reason() {
        let e = decode(b"\x1f\x8b some gzip without our header").expect_err("foreign");
        assert!(e.0.contains("header"), "{e}");
        let e = decode(b"other-format/1 zstd 00 1\nxx").expect_err("foreign");
        assert!(e.0.contains("unknown format"), "{e}");
    }
}
