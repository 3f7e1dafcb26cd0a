//! Archives: zipped shapefiles (`.zip`) and KMZ, unpacked into the job's folder before import.
//!
//! As the contract says, every entry lands in `<folder>/zip` under its name with each character
//! other than a letter, a digit or `.` turned into `_` (so folders inside the archive flatten
//! into one level), and the layer is the first `.json`, `.geojson` or `.shp` entry (for KMZ:
//! `doc.kml`, else the first `.kml`). On top of that, hostile archives are refused before
//! anything is written: entries with absolute paths, `..` components or symbolic links
//! (`UnsafeArchiveException`), more than `MAX_ARCHIVE_ENTRIES` entries or more than
//! `MAX_EXTRACTED_SIZE_MB` unpacked (`file-too-large`; the size is counted on the bytes really
//! written, whatever the archive declares). Two entries that clean to the same name are refused
//! too, so one cannot overwrite another.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::failure::Failure;

/// Limits on what an archive may unpack to.
#[derive(Debug, Clone, Copy)]
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

/// The contract's entry-name rule: letters, digits and `.` kept, anything else `_`.
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

/// Unpacks `archive` into `dest` (created); returns the files written, in archive order.
pub fn extract(
    archive: &Path,
    dest: &Path,
    limits: ArchiveLimits,
) -> Result<Vec<PathBuf>, Failure> {
    let file = File::open(archive).map_err(|e| bad_zip(format!("cannot open the archive: {e}")))?;
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
