//! Length- and CRC-framed records in an append-only file, and durable file replacement.
//!
//! Owns the on-disk framing and the scan that tells a torn tail (the last write did not finish:
//! safe to cut) from corruption in the middle (records after the damage are intact: not safe).
//! Must not know what the records mean; the log store decides what may be cut.
//!
//! Frame: `len: u32 LE | crc32(len bytes ++ payload): u32 LE | payload`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

const HEADER: usize = 8;
/// Largest record accepted; a length above this is treated as damage, not an allocation.
pub const MAX_RECORD: usize = 64 << 20;

/// Frames `payload` for appending.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("records are far below 4 GiB");
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn checksum(len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// What a scan of a record file found.
#[derive(Debug)]
pub struct Scan {
    /// Payloads of the intact records before any damage, in order.
    pub records: Vec<Vec<u8>>,
    /// Byte length of the intact prefix.
    pub valid_len: u64,
    /// Set when the file has damage after `valid_len`.
    pub damage: Option<Damage>,
}

/// Damage found in a record file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the first bad record.
    pub offset: u64,
    /// What is wrong with it.
    pub what: String,
    /// Intact records found after the bad one. Zero means a torn tail (an unfinished last
    /// write); more means corruption in the middle of the file.
    pub intact_after: usize,
}

enum Parse<'a> {
    Ok(&'a [u8], usize),
    /// Not enough bytes for the header or the payload.
    Short(String),
    /// Complete but wrong; `usize` is the record's claimed total size.
    Bad(String, usize),
}

fn parse_at(buf: &[u8], pos: usize) -> Parse<'_> {
    let rest = &buf[pos..];
    if rest.len() < HEADER {
        return Parse::Short(format!("{} stray bytes where a record header should be", rest.len()));
    }
    let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    let total = HEADER + len as usize;
    if len as usize > MAX_RECORD {
        return Parse::Short(format!("record length {len} is implausible"));
    }
    if rest.len() < total {
        return Parse::Short(format!("record of {len} bytes is cut off after {} bytes", rest.len() - HEADER));
    }
    let payload = &rest[HEADER..total];
    if checksum(len, payload) != crc {
        return Parse::Bad("checksum mismatch".into(), total);
    }
    Parse::Ok(payload, total)
}

/// Reads every record of `buf`, stopping at the first damage and then counting intact records
/// after it (skipping the damaged one when its length is readable).
pub fn scan(buf: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        match parse_at(buf, pos) {
            Parse::Ok(payload, total) => {
                records.push(payload.to_vec());
                pos += total;
            }
            Parse::Short(what) => {
                let damage = Damage { offset: pos as u64, what, intact_after: 0 };
                return Scan { records, valid_len: pos as u64, damage: Some(damage) };
            }
            Parse::Bad(what, total) => {
                let intact_after = count_intact(buf, pos + total);
                let damage = Damage { offset: pos as u64, what, intact_after };
                return Scan { records, valid_len: pos as u64, damage: Some(damage) };
            }
        }
    }
    Scan { records, valid_len: pos as u64, damage: None }
}

fn count_intact(buf: &[u8], mut pos: usize) -> usize {
    let mut n = 0;
    while pos < buf.len() {
        match parse_at(buf, pos) {
            Parse::Ok(_, total) => {
                n += 1;
                pos += total;
            }
            _ => break,
        }
    }
    n
}

/// Appends framed records and makes them durable before returning.
pub fn append_durable(file: &mut File, payloads: &[Vec<u8>]) -> io::Result<()> {
    let mut buf = Vec::new();
    for p in payloads {
        buf.extend_from_slice(&frame(p));
    }
    file.write_all(&buf)?;
    file.sync_data()
}

/// Replaces `path` with `content` so that a crash leaves either the old or the new file:
/// write a temporary file, fsync it, rename it over `path`, fsync the directory.
pub fn replace_durable(path: &Path, content: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a directory's entries (creations, renames) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of(records: &[&[u8]]) -> Vec<u8> {
        records.iter().flat_map(|r| frame(r)).collect()
    }

    #[test]
    fn intact_file_reads_back_every_record() {
        let buf = file_of(&[b"one", b"", b"three"]);
        let s = scan(&buf);
        assert_eq!(s.records, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert_eq!(s.valid_len, buf.len() as u64);
        assert!(s.damage.is_none());
    }

    #[test]
    fn cut_off_last_record_is_a_torn_tail() {
        let mut buf = file_of(&[b"one", b"two"]);
        let full = buf.len();
        buf.truncate(full - 2);
        let s = scan(&buf);
        assert_eq!(s.records, vec![b"one".to_vec()]);
        let d = s.damage.expect("damage");
        assert_eq!(d.intact_after, 0);
        assert_eq!(d.offset, s.valid_len);
        assert!(d.what.contains("cut off"), "{}", d.what);
    }

    #[test]
    fn flipped_bit_in_last_record_is_damage_with_nothing_after() {
        let mut buf = file_of(&[b"one", b"two"]);
        let last = buf.len() - 1;
        buf[last] ^= 0x10;
        let d = scan(&buf).damage.expect("damage");
        assert_eq!((d.what.as_str(), d.intact_after), ("checksum mismatch", 0));
    }

    #[test]
    fn flipped_bit_in_the_middle_is_reported_with_the_intact_records_after_it() {
        let mut buf = file_of(&[b"one", b"two", b"three", b"four"]);
        buf[HEADER + 3 + HEADER] ^= 0x01; // first payload byte of "two"
        let s = scan(&buf);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.damage.expect("damage").intact_after, 2);
    }

    #[test]
    fn replace_durable_leaves_only_the_new_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        replace_durable(&p, b"a").expect("write");
        replace_durable(&p, b"bb").expect("rewrite");
        assert_eq!(fs::read(&p).expect("read"), b"bb");
        assert!(!p.with_extension("tmp").exists());
    }
}
