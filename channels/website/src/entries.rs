//! The adapter's own record of published pages (`{output_dir}/.entries.json`) and atomic file writes.
//!
//! The adapter must not know the database, yet the index page and the feeds list many
//! announcements, so it keeps what it published in one JSON file beside the pages. Every
//! file is replaced by write-to-temp, fsync, rename: a crash leaves the old file or the new
//! one, never half of one.
//!
//! Room to grow without a rewrite:
//! - an update in place (CAP `Update`, a correction) is an upsert of the same `id` with new
//!   content: `published_at` stays, `updated_at` moves, the page file keeps its name and the
//!   feeds keep the entry's `urn:uuid:` id while its `updated` changes;
//! - language variants go in [`Entry::variants`], one page each (`a/{id}.{lang}.html`),
//!   linked from every version with `hreflang`; the main entry stays the one in the feeds.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use noroshi_channel_core::Priority;
use serde::{Deserialize, Serialize};

use crate::config::MAX_FEED_ENTRIES;
use crate::render::PageUnit;

/// File name of the entry index inside `output_dir`.
pub const ENTRIES_FILE: &str = ".entries.json";

/// Prefix of the temporary files; anything with it is a leftover of a crash.
pub(crate) const TEMP_PREFIX: &str = ".noroshi-tmp-";

const INDEX_VERSION: u32 = 1;

/// One published announcement as the listings need it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub title: String,
    pub body: String,
    pub link: Option<String>,
    pub priority: Priority,
    pub lang: String,
    pub tags: Vec<String>,
    pub exercise: bool,
    /// First publication; never moves, even when the page is updated.
    pub published_at: DateTime<Utc>,
    /// Last significant change (Atom `updated`).
    pub updated_at: DateTime<Utc>,
    /// Other-language versions of the page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
    /// Images with their alternative text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<crate::render::PageImage>,
}

/// A translation of an entry, published as its own page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// BCP 47 tag (`en`, `zh-Hans`, `ja-x-easy`); the page's `hreflang`.
    pub lang: String,
    pub title: String,
    pub body: String,
    /// Path relative to `output_dir`, e.g. `a/{id}.en.html`.
    pub path: String,
}

impl Entry {
    pub(crate) fn from_unit(unit: &PageUnit, updated_at: DateTime<Utc>) -> Entry {
        Entry {
            id: unit.id.clone(),
            title: unit.title.clone(),
            body: unit.body.clone(),
            link: unit.link.clone(),
            priority: unit.priority,
            lang: unit.lang.clone(),
            tags: unit.tags.clone(),
            exercise: unit.exercise,
            published_at: unit.published_at,
            updated_at,
            variants: unit
                .variants
                .iter()
                .map(|v| Variant {
                    lang: v.lang.clone(),
                    title: v.title.clone(),
                    body: v.body.clone(),
                    path: crate::render::variant_path(&unit.id, &v.lang),
                })
                .collect(),
            images: unit.images.clone(),
        }
    }

    /// Same content as the unit: a redelivery, which must change nothing on disk.
    pub(crate) fn same_content(&self, unit: &PageUnit) -> bool {
        self.title == unit.title
            && self.body == unit.body
            && self.link == unit.link
            && self.priority == unit.priority
            && self.lang == unit.lang
            && self.tags == unit.tags
            && self.exercise == unit.exercise
            && self.images == unit.images
            && self.variants.len() == unit.variants.len()
            && self
                .variants
                .iter()
                .zip(&unit.variants)
                .all(|(a, b)| a.lang == b.lang && a.title == b.title && a.body == b.body)
    }
}

/// The whole entry index, newest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EntryIndex {
    pub version: u32,
    pub entries: Vec<Entry>,
}

impl EntryIndex {
    /// Reads `{dir}/.entries.json`; a missing file is an empty index.
    pub fn load(dir: &Path) -> io::Result<EntryIndex> {
        let path = dir.join(ENTRIES_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(EntryIndex {
                    version: INDEX_VERSION,
                    entries: Vec::new(),
                })
            }
            Err(e) => return Err(e),
        };
        let mut index: EntryIndex = serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is unreadable ({e}); repair or remove it (the pages stay)",
                    path.display()
                ),
            )
        })?;
        if index.version > INDEX_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} has version {}, newer than this build understands",
                    path.display(),
                    index.version
                ),
            ));
        }
        index.sort();
        Ok(index)
    }

    /// Inserts or replaces the entry for `unit.id`. Returns the entry as stored.
    ///
    /// Same content again (a retry, a redelivery after a crash) changes nothing, so every
    /// file written from the index comes out byte for byte the same. New content for a
    /// known id is an update in place: the first publication time stays.
    pub fn upsert(&mut self, unit: &PageUnit, now: DateTime<Utc>) -> Entry {
        if let Some(existing) = self.entries.iter_mut().find(|e| e.id == unit.id) {
            if !existing.same_content(unit) {
                let published_at = existing.published_at;
                // `updated` must not go back before publication, whatever the clock says.
                *existing = Entry::from_unit(unit, now.max(published_at));
                existing.published_at = published_at;
            }
            let entry = existing.clone();
            self.sort();
            return entry;
        }
        let entry = Entry::from_unit(unit, unit.published_at);
        self.entries.push(entry.clone());
        self.sort();
        // Only the newest entries are ever listed; older pages stay on disk, unlisted.
        self.entries.truncate(MAX_FEED_ENTRIES);
        entry
    }

    /// Newest first; ties by id, which for UUIDv7 is creation order.
    fn sort(&mut self) {
        self.entries.sort_by(|a, b| {
            b.published_at
                .cmp(&a.published_at)
                .then_with(|| b.id.cmp(&a.id))
        });
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The newest `n` entries, newest first.
    pub fn newest(&self, n: usize) -> &[Entry] {
        &self.entries[..n.min(self.entries.len())]
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("entries serialize");
        bytes.push(b'\n');
        bytes
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same directory (so the
/// rename stays on one file system), fsync, rename over the target, fsync the directory so
/// the rename itself survives a power loss. Readers see the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(&dir)?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    // Temp files are created 0600; the web server (maybe another user) must read pages.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))?;
    }
    temp.persist(path).map_err(|e| e.error)?;
    sync_dir(&dir)
}

/// Writes `path` only if its bytes differ: a redelivery leaves files (and their mtimes, so
/// HTTP caches and `Last-Modified`) untouched.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> io::Result<bool> {
    match fs::read(path) {
        Ok(current) if current == bytes => Ok(false),
        Ok(_) => write_atomic(path, bytes).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_atomic(path, bytes).map(|()| true),
        Err(e) => Err(e),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories cannot be opened for fsync on Windows; the rename is still atomic.
    Ok(())
}

/// Removes temporary files a crash left behind in `dir`. Call only while holding the
/// write lock, or a live write's temp file could be removed under it.
pub fn remove_stale_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && entry.file_type()?.is_file()
        {
            fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}
