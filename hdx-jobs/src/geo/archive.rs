//! Archives: zipped shapefiles (`.zip`) and KMZ, unpacked into the job's folder before import.
//!
//! As the old service did (docs/hdx-contract.md §3.4), every entry lands in `<folder>/zip` under
//! its name with each character other than a letter, a digit or `.` turned into `_` (so folders
//! inside the archive flatten into one level), and the layer is the first `.json`, `.geojson` or
//! `.shp` entry (for KMZ: `doc.kml`, else the first `.kml`). On top of that, hostile archives are
//! refused before anything is written: entries with absolute paths, `..` components or symbolic
//! links (`UnsafeArchiveException`), more than `MAX_ARCHIVE_ENTRIES` entries or more than
//! `MAX_EXTRACTED_SIZE_MB` unpacked (`file-too-large`; the size is counted on the bytes really
//! written, whatever the archive declares). Two entries that clean to the same name are refused
//! too, so one cannot overwrite another.
//!
//! Before the zip reader parses anything, [`check_end_record`] reads the archive's end record
//! (and its ZIP64 form) and refuses an archive that declares more entries than allowed or a
//! central directory larger than such entries need: the reader builds its index of every entry
//! in memory, so a crafted count or size would otherwise decide how much memory it takes.
//! Unpacking runs in the import child (see [`super::child`]), under its resource limits.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::failure::Failure;

/// Limits on what an archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveLimits {
    /// Total bytes of all entries.
    pub max_bytes: u64,
    /// Number of entries (files and folders).
    pub max_entries: usize,
}

/// What the importer should open for a downloaded file: the file itself, or the layer file
/// found in the unpacked archive (in `<folder>/zip`).
pub fn layer_file(
    downloaded: &Path,
    folder: &Path,
    limits: ArchiveLimits,
) -> Result<PathBuf, Failure> {
    let extension = extension_of(downloaded);
    match extension.as_str() {
        "zip" => {
            let files = extract(downloaded, &folder.join("zip"), limits)?;
            first_with_extension(&files, &["json", "geojson", "shp"]).ok_or_else(|| {
                Failure::pushing_because(
                    "Problem during ogr2ogr import to postgis: the archive has no .json, \
                     .geojson or .shp file",
                )
            })
        }
        "kmz" => {
            let files = extract(downloaded, &folder.join("zip"), limits)?;
            files
                .iter()
                .find(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.eq_ignore_ascii_case("doc.kml"))
                })
                .cloned()
                .or_else(|| first_with_extension(&files, &["kml"]))
                .ok_or_else(|| {
                    Failure::pushing_because(
                        "Problem during ogr2ogr import to postgis: the KMZ has no .kml file",
                    )
                })
        }
        _ => Ok(downloaded.to_path_buf()),
    }
}

/// The lowercased extension of a path (`""` when none).
pub fn extension_of(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default()
}

fn first_with_extension(files: &[PathBuf], extensions: &[&str]) -> Option<PathBuf> {
    files
        .iter()
        .find(|f| extensions.contains(&extension_of(f).as_str()))
        .cloned()
}

/// The old entry-name rule (docs/hdx-contract.md §3.4): letters, digits and `.` kept, anything
/// else `_`.
pub fn sanitize_entry_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// True for names that would point outside the folder if used as paths.
fn is_unsafe_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    name.contains('\0')
        || name.starts_with('/')
        || name.starts_with('\\')
        || (bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic())
        || name.split(['/', '\\']).any(|part| part == "..")
}

fn bad_zip(message: impl std::fmt::Display) -> Failure {
    Failure::unknown("BadZipFile", format!("{message}"))
}

fn unsafe_archive(message: impl Into<String>) -> Failure {
    Failure::unknown("UnsafeArchiveException", message)
}

/// Largest central directory record of one entry that [`check_end_record`] budgets for: the
/// 46 fixed bytes plus a name, extra field and comment of up to 1 KiB together.
const CENTRAL_RECORD_BUDGET: u64 = 46 + 1024;

/// What an archive's end record declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndRecord {
    /// Entries in the central directory.
    pub entries: u64,
    /// Size of the central directory in bytes.
    pub directory_bytes: u64,
}

/// Reads the end-of-central-directory record (ZIP64 when the classic one overflows) from the
/// end of the file, without parsing the archive. `None` when there is none (not a zip).
pub fn read_end_record(file: &mut (impl Read + Seek)) -> std::io::Result<Option<EndRecord>> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    const ZIP64_LOCATOR: [u8; 4] = [0x50, 0x4b, 0x06, 0x07];
    const ZIP64_EOCD: [u8; 4] = [0x50, 0x4b, 0x06, 0x06];
    let length = file.seek(SeekFrom::End(0))?;
    // The record is 22 bytes plus a comment of at most 65,535 bytes.
    let tail_length = length.min(22 + 65_535);
    file.seek(SeekFrom::Start(length - tail_length))?;
    let mut tail = vec![0u8; tail_length as usize];
    file.read_exact(&mut tail)?;
    let Some(at) = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == EOCD)
    else {
        return Ok(None);
    };
    let u16_at = |b: &[u8], i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let u32_at =
        |b: &[u8], i: usize| u64::from(u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]));
    let u64_at = |b: &[u8], i: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(bytes)
    };
    let mut record = EndRecord {
        entries: u16_at(&tail, at + 10),
        directory_bytes: u32_at(&tail, at + 12),
    };
    let overflowed = record.entries == 0xffff || record.directory_bytes == 0xffff_ffff;
    if overflowed && at >= 20 && tail[at - 20..at - 16] == ZIP64_LOCATOR {
        let zip64_offset = u64_at(&tail, at - 20 + 8);
        if zip64_offset
            .checked_add(56)
            .is_some_and(|end| end <= length)
        {
            let mut zip64 = [0u8; 56];
            file.seek(SeekFrom::Start(zip64_offset))?;
            file.read_exact(&mut zip64)?;
            if zip64[..4] == ZIP64_EOCD {
                record = EndRecord {
                    entries: u64_at(&zip64, 32),
                    directory_bytes: u64_at(&zip64, 40),
                };
            }
        }
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(Some(record))
}

/// Refuses an archive whose end record declares more than `limits.max_entries` entries or a
/// central directory larger than that many entries need (`file-too-large`).
pub fn check_end_record(
    file: &mut (impl Read + Seek),
    limits: ArchiveLimits,
) -> Result<(), Failure> {
    let record = read_end_record(file)
        .map_err(|e| bad_zip(format!("cannot read the archive: {e}")))?
        .ok_or_else(|| bad_zip("File is not a zip file"))?;
    if record.entries > limits.max_entries as u64 {
        return Err(Failure::too_large(format!(
            "archive too large: {} entries (at most {})",
            record.entries, limits.max_entries
        )));
    }
    let budget = (limits.max_entries as u64).saturating_mul(CENTRAL_RECORD_BUDGET);
    if record.directory_bytes > budget {
        return Err(Failure::too_large(format!(
            "archive too large: a central directory of {} bytes for at most {} entries",
            record.directory_bytes, limits.max_entries
        )));
    }
    Ok(())
}

/// Unpacks `archive` into `dest` (created); returns the files written, in archive order.
pub fn extract(
    archive: &Path,
    dest: &Path,
    limits: ArchiveLimits,
) -> Result<Vec<PathBuf>, Failure> {
    let mut file =
        File::open(archive).map_err(|e| bad_zip(format!("cannot open the archive: {e}")))?;
    check_end_record(&mut file, limits)?;
    let mut zip = zip::ZipArchive::new(file).map_err(|_| bad_zip("File is not a zip file"))?;
    if zip.len() > limits.max_entries {
        return Err(Failure::too_large(format!(
            "archive too large: {} entries (at most {})",
            zip.len(),
            limits.max_entries
        )));
    }
    // Check every entry before writing anything.
    let mut declared: u64 = 0;
    let mut plan: Vec<(usize, String)> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for index in 0..zip.len() {
        let entry = zip.by_index_raw(index).map_err(bad_zip)?;
        let name = entry.name().map_err(bad_zip)?.into_owned();
        if is_unsafe_name(&name) {
            return Err(unsafe_archive(format!(
                "the archive has an entry outside its folder: {name:?}"
            )));
        }
        if entry.is_symlink() {
            return Err(unsafe_archive(format!(
                "the archive has a symbolic link: {name:?}"
            )));
        }
        if entry.encrypted() {
            return Err(bad_zip(format!(
                "encrypted entries are not supported: {name:?}"
            )));
        }
        declared = declared.saturating_add(entry.size());
        if entry.is_dir() {
            continue;
        }
        let clean = sanitize_entry_name(&name);
        if clean.is_empty() || clean == "." || clean == ".." {
            continue;
        }
        if !names.insert(clean.clone()) {
            return Err(unsafe_archive(format!(
                "two archive entries have the same name once cleaned: {clean:?}"
            )));
        }
        plan.push((index, clean));
    }
    if declared > limits.max_bytes {
        return Err(too_large_unpacked(limits));
    }
    std::fs::create_dir_all(dest).map_err(|e| {
        Failure::folder(format!(
            "A problem occured while creating folder {}: {e}",
            dest.display()
        ))
    })?;
    let mut written: u64 = 0;
    let mut files = Vec::with_capacity(plan.len());
    for (index, clean) in plan {
        let mut entry = zip.by_index(index).map_err(bad_zip)?;
        let path = dest.join(&clean);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Failure::folder(format!("cannot write {}: {e}", path.display())))?;
        let budget = limits.max_bytes - written;
        let mut limited = (&mut entry).take(budget.saturating_add(1));
        let copied = copy(&mut limited, &mut out)
            .map_err(|e| bad_zip(format!("cannot read the archive entry {clean:?}: {e}")))?;
        if copied > budget {
            return Err(too_large_unpacked(limits));
        }
        written += copied;
        files.push(path);
    }
    Ok(files)
}

fn too_large_unpacked(limits: ArchiveLimits) -> Failure {
    Failure::too_large(format!(
        "archive too large when unpacked (more than {} MB)",
        limits.max_bytes / (1024 * 1024)
    ))
}

fn copy(reader: &mut impl Read, writer: &mut impl Write) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buffer[..n])?;
        total += n as u64;
    }
    writer.flush()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// An end record alone: an "archive" declaring `entries` entries and a directory of
    /// `directory_bytes`, as a crafted zip would.
    fn end_record(entries: u16, directory_bytes: u32) -> Vec<u8> {
        let mut bytes = vec![0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0];
        bytes.extend_from_slice(&entries.to_le_bytes());
        bytes.extend_from_slice(&entries.to_le_bytes());
        bytes.extend_from_slice(&directory_bytes.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes
    }

    #[test]
    fn huge_declared_entry_counts_are_refused_before_parsing() {
        let limits = ArchiveLimits {
            max_bytes: 1 << 30,
            max_entries: 1000,
        };
        let failure = check_end_record(&mut Cursor::new(end_record(65_000, 100)), limits)
            .expect_err("too many entries");
        assert_eq!(failure.kind.as_str(), "file-too-large");
        assert!(
            failure.message.contains("65000 entries"),
            "{}",
            failure.message
        );
        let failure = check_end_record(&mut Cursor::new(end_record(10, 200_000_000)), limits)
            .expect_err("huge directory");
        assert_eq!(failure.kind.as_str(), "file-too-large");
        assert!(check_end_record(&mut Cursor::new(end_record(10, 1000)), limits).is_ok());
        let failure = check_end_record(&mut Cursor::new(b"not a zip".to_vec()), limits)
            .expect_err("not a zip");
        assert_eq!(failure.class, "BadZipFile");
    }

    /// A ZIP64 end record's count is read, not the classic record's 0xffff placeholder.
    #[test]
    fn zip64_counts_are_read() {
        let mut bytes = Vec::new();
        let mut zip64 = vec![0x50, 0x4b, 0x06, 0x06];
        zip64.extend_from_slice(&44u64.to_le_bytes());
        zip64.extend_from_slice(&[0u8; 4 + 8 + 8]);
        zip64.extend_from_slice(&5_000_000u64.to_le_bytes());
        zip64.extend_from_slice(&100u64.to_le_bytes());
        zip64.extend_from_slice(&0u64.to_le_bytes());
        assert_eq!(zip64.len(), 56);
        bytes.extend_from_slice(&zip64);
        let mut locator = vec![0x50, 0x4b, 0x06, 0x07, 0, 0, 0, 0];
        locator.extend_from_slice(&0u64.to_le_bytes());
        locator.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&locator);
        bytes.extend_from_slice(&end_record(0xffff, 0xffff_ffff));
        let record = read_end_record(&mut Cursor::new(bytes))
            .expect("read")
            .expect("record");
        assert_eq!(record.entries, 5_000_000);
    }

    #[test]
    fn names_are_cleaned_as_before_and_traversal_is_spotted() {
        assert_eq!(
            sanitize_entry_name("data/roads v2.shp"),
            "data_roads_v2.shp"
        );
        assert_eq!(sanitize_entry_name("../../x.shp"), ".._.._x.shp");
        for bad in [
            "../x.shp",
            "a/../../x",
            "/etc/passwd",
            "\\evil",
            "C:\\x",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(is_unsafe_name(bad), "{bad}");
        }
        for fine in ["a/b.shp", "a..b.shp", "...", "dir/"] {
            assert!(!is_unsafe_name(fine), "{fine}");
        }
    }
}
