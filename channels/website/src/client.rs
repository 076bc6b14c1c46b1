//! The website channel: publishing a page, the index and both feeds under `output_dir`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use noroshi_channel_core::{
    Announcement, Channel, DeliveryContext, DeliveryError, DeliveryUnit, Limits, Receipt,
    RenderError, Rendering,
};
use tokio::sync::Mutex;

use crate::config::{Config, Site};
use crate::entries::{
    remove_stale_temp_files, write_if_changed, EntryIndex, ENTRIES_FILE, TEMP_PREFIX,
};
use crate::error::{bad_unit, io_error};
use crate::feed;
use crate::page;
use crate::render::{self, is_safe_id, page_path, page_url, PageUnit};

/// Where "now" comes from; tests replace it to make updates observable.
pub use noroshi_channel_core::Clock;

/// What one delivery did on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// A new page.
    Created,
    /// An existing page with new content, rewritten in place under the same name.
    Updated,
    /// The same content again (a retry or a redelivery): no file changed.
    Unchanged,
}

impl Published {
    fn note(self) -> &'static str {
        match self {
            Published::Created => "page published",
            Published::Updated => "page updated in place",
            Published::Unchanged => "page already published with this content; nothing changed",
        }
    }
}

/// The website channel adapter.
pub struct Website {
    site: Site,
    output_dir: PathBuf,
    feed_entries: usize,
    /// A drill's draft folder under `output_dir`; kept for the disaster issue, which
    /// routes exercise deliveries there.
    exercise_target: Option<String>,
    clock: Clock,
    /// One publisher at a time: every delivery rewrites the shared index and feeds, so two
    /// at once would each write a listing missing the other's entry. Only this process is
    /// serialised; instances sharing one `output_dir` would need a file lock as well.
    lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Website {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Website")
            .field("output_dir", &self.output_dir)
            .field("base_url", &self.site.base_url)
            .field("feed_entries", &self.feed_entries)
            .finish_non_exhaustive()
    }
}

impl Website {
    /// Builds the adapter without validating `config` (see [`crate::build`]).
    pub fn new(config: &Config) -> Website {
        Website {
            site: Site::from_config(config),
            output_dir: config.output_dir.clone(),
            feed_entries: config
                .feed_entries
                .clamp(1, crate::config::MAX_FEED_ENTRIES),
            exercise_target: config.exercise_target.clone(),
            clock: noroshi_channel_core::system_clock(),
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// Replaces the clock that stamps in-place updates.
    pub fn with_clock(mut self, clock: Clock) -> Website {
        self.clock = clock;
        self
    }

    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// The configured drill folder name, if any.
    pub fn exercise_target(&self) -> Option<&str> {
        self.exercise_target.as_deref()
    }

    /// The public address of an announcement's page on this site.
    pub fn page_url(&self, id: &str) -> String {
        page_url(&self.site.base_url, id)
    }

    /// Publishes one unit and reports what changed on disk.
    pub async fn publish(&self, unit: &DeliveryUnit) -> Result<Published, DeliveryError> {
        let unit: PageUnit = serde_json::from_value(unit.payload.clone()).map_err(bad_unit)?;
        if !is_safe_id(&unit.id) {
            return Err(bad_unit("the id is not a safe file name"));
        }
        // A drill with a draft folder is published there, as a site of its own (its own
        // index and feeds), never in the public listings.
        let (site, dir) = match (&self.exercise_target, unit.exercise) {
            (Some(folder), true) => {
                let mut site = self.site.clone();
                site.base_url = format!("{}{folder}/", site.base_url);
                site.atom_url = format!("{}feed.atom", site.base_url);
                site.rss_url = format!("{}feed.rss", site.base_url);
                (site, self.output_dir.join(folder))
            }
            _ => (self.site.clone(), self.output_dir.clone()),
        };
        let job = Job {
            site,
            dir,
            feed_entries: self.feed_entries,
            now: (self.clock)(),
        };
        // The guard moves into the blocking task: if this future is dropped mid-write the
        // lock is held until the files are done, not released under a running writer.
        let guard = self.lock.clone().lock_owned().await;
        let id = unit.id.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            job.publish(&unit)
        })
        .await
        .map_err(|e| DeliveryError::transient(format!("the publishing task failed: {e}")))?
        .map_err(|e| io_error("could not publish the page", &e))?;
        tracing::info!(id = %id, outcome = ?outcome, "Published website page");
        Ok(outcome)
    }
}

/// One write job, owned so it can run on the blocking pool.
struct Job {
    site: Site,
    dir: PathBuf,
    feed_entries: usize,
    now: DateTime<Utc>,
}

impl Job {
    fn publish(&self, unit: &PageUnit) -> io::Result<Published> {
        fs::create_dir_all(self.dir.join("a"))?;
        // Several daemons may share one output directory (instances on one PostgreSQL with a
        // shared volume): the entry index is read, changed and written under an exclusive
        // lock on `.lock`, which the OS releases if the process dies.
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(".lock"))?;
        lock.lock()?;
        let mut index = EntryIndex::load(&self.dir)?;
        let before = index.get(&unit.id).cloned();
        let entry = index.upsert(unit, self.now);
        let outcome = match before {
            None => Published::Created,
            Some(before) if before == entry => Published::Unchanged,
            Some(_) => Published::Updated,
        };
        // Page first, then the record of it, then the listings that link to it: a crash in
        // between leaves at worst a page not yet listed, and the queue's redelivery (the
        // delivery was not recorded as sent) finishes the job.
        let html = page::render_page(&self.site, &entry).map_err(template_error)?;
        write_if_changed(&self.dir.join(page_path(&entry.id)), html.as_bytes())?;
        for variant in &entry.variants {
            let html =
                page::render_variant_page(&self.site, &entry, variant).map_err(template_error)?;
            write_if_changed(&self.dir.join(&variant.path), html.as_bytes())?;
        }
        if let Some(cap) = &unit.cap {
            crate::cap_feed::publish(&self.site, &self.dir, cap, &page_path(&entry.id), self.now)?;
        }
        write_if_changed(&self.dir.join(ENTRIES_FILE), &index.to_json())?;
        self.write_listings(&index)?;
        Ok(outcome)
    }

    /// `index.html`, `feed.atom`, `feed.rss` from the entry index.
    fn write_listings(&self, index: &EntryIndex) -> io::Result<()> {
        let newest = index.newest(self.feed_entries);
        let html = page::render_index(&self.site, newest).map_err(template_error)?;
        write_if_changed(&self.dir.join("index.html"), html.as_bytes())?;
        write_if_changed(
            &self.dir.join("feed.atom"),
            &feed::atom(&self.site, newest, self.now)?,
        )?;
        write_if_changed(
            &self.dir.join("feed.rss"),
            &feed::rss(&self.site, newest, self.now)?,
        )?;
        Ok(())
    }

    /// Drops expired alerts from `cap/alerts.atom`.
    fn prune_alerts(&self) -> io::Result<()> {
        crate::cap_feed::prune(&self.site, &self.dir, self.now)
    }

    /// Makes `output_dir` exist and proves it writable; clears a crash's temp files; writes
    /// the index and feeds if they are missing, so their addresses work before the first
    /// announcement.
    fn check(&self) -> io::Result<()> {
        let pages = self.dir.join("a");
        fs::create_dir_all(&pages)?;
        for dir in [&self.dir, &pages] {
            remove_stale_temp_files(dir)?;
            // Dropped at once; creating it is the proof that files can be written here.
            let mut probe = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(dir)?;
            io::Write::write_all(&mut probe, b"probe")?;
        }
        let index = EntryIndex::load(&self.dir)?;
        let missing = ["index.html", "feed.atom", "feed.rss"]
            .iter()
            .any(|name| !self.dir.join(name).exists());
        if missing {
            self.write_listings(&index)?;
        }
        Ok(())
    }
}

fn template_error(e: minijinja::Error) -> io::Error {
    // A template bug, not the author's text: no retry will fix it.
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("template error: {e:#}"),
    )
}

#[async_trait]
impl Channel for Website {
    fn name(&self) -> &str {
        "website"
    }

    fn render(&self, announcement: &Announcement) -> Result<Rendering, RenderError> {
        render::render(announcement)
    }

    fn limits(&self) -> Limits {
        // Local file writes, serialised by the lock: more workers would only queue on it.
        Limits {
            rate_per_second: 20.0,
            burst: 20,
            concurrency: 2,
        }
    }

    async fn deliver(
        &self,
        unit: &DeliveryUnit,
        _ctx: &DeliveryContext,
    ) -> Result<Receipt, DeliveryError> {
        let id = unit
            .payload
            .get("id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let outcome = self.publish(unit).await?;
        Ok(Receipt {
            remote_id: Some(self.page_url(&id)),
            already_sent: false,
            note: Some(outcome.note().to_string()),
        })
    }

    /// Publishing is idempotent (deterministic file names, upsert by id), so resending is
    /// always safe; this only spares the rewrite when the page is already there.
    async fn reconcile(
        &self,
        unit: &DeliveryUnit,
        _ctx: &DeliveryContext,
    ) -> Result<Option<Receipt>, DeliveryError> {
        let unit: PageUnit = serde_json::from_value(unit.payload.clone()).map_err(bad_unit)?;
        if !is_safe_id(&unit.id) {
            return Err(bad_unit("the id is not a safe file name"));
        }
        let dir = self.output_dir.clone();
        let id = unit.id.clone();
        let page_id = unit.id.clone();
        let found = tokio::task::spawn_blocking(move || -> io::Result<bool> {
            let index = EntryIndex::load(&dir)?;
            let Some(entry) = index.get(&id) else {
                return Ok(false);
            };
            Ok(entry.same_content(&unit) && dir.join(page_path(&id)).is_file())
        })
        .await
        .map_err(|e| DeliveryError::transient(format!("the reconcile task failed: {e}")))?
        .map_err(|e| io_error("could not read the entry index", &e))?;
        Ok(found.then(|| Receipt {
            remote_id: Some(self.page_url(&page_id)),
            already_sent: true,
            note: Some("page already published".to_string()),
        }))
    }

    /// Expired alerts leave the CAP feed even when nothing new is published.
    fn refresh_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(60))
    }

    async fn refresh(&self) -> Result<(), DeliveryError> {
        let job = Job {
            site: self.site.clone(),
            dir: self.output_dir.clone(),
            feed_entries: self.feed_entries,
            now: (self.clock)(),
        };
        let guard = self.lock.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            job.prune_alerts()
        })
        .await
        .map_err(|e| DeliveryError::transient(format!("the refresh task failed: {e}")))?
        .map_err(|e| io_error("could not refresh the CAP alert feed", &e))
    }

    async fn healthcheck(&self) -> Result<(), DeliveryError> {
        let job = Job {
            site: self.site.clone(),
            dir: self.output_dir.clone(),
            feed_entries: self.feed_entries,
            now: (self.clock)(),
        };
        let guard = self.lock.clone().lock_owned().await;
        let dir = self.output_dir.display().to_string();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            job.check()
        })
        .await
        .map_err(|e| DeliveryError::transient(format!("the healthcheck task failed: {e}")))?
        .map_err(|e| io_error(&format!("website output_dir {dir} failed the check"), &e))
    }
}
