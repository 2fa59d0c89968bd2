//! Reports made on a schedule (`[[reports]]` in the config) and the outputs they leave in the
//! block store, under `reports/{tenant}/{name}/{time}.{format}`, which
//! `GET /api/v1/reports` lists.

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;

use super::schedule::Schedule;
use super::{Format, ReportError, run};
use crate::config::ScheduledReport;
use crate::query::QueryEngine;
use crate::storage::{Storage, StorageError};
use crate::tenant::SINGLE_TENANT;

/// The prefix of every report output in the store.
pub const PREFIX: &str = "reports";

/// A `[[reports]]` entry, checked.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub tenant: String,
    pub schedule: Schedule,
    pub formats: Vec<Format>,
    pub options: super::ReportOptions,
}

impl Entry {
    /// Checks a config entry: its name, schedule, formats and options.
    pub fn from_config(entry: &ScheduledReport) -> Result<Self, ReportError> {
        let bad = |m: String| ReportError::BadOptions(format!("[[reports]] {:?}: {m}", entry.name));
        if entry.name.is_empty()
            || !entry
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                "a report name is letters, digits, - and _ (it names a folder)".into(),
            ));
        }
        let schedule = Schedule::parse(&entry.schedule).map_err(|e| bad(e.to_string()))?;
        let formats = entry
            .formats
            .iter()
            .map(|f| {
                Format::from_name(f)
                    .ok_or_else(|| bad(format!("unknown format {f:?}: use json, md or html")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Options are checked now, relative to any instant, so a bad entry stops the start.
        entry
            .options
            .resolve(crate::time::now_ns())
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            name: entry.name.clone(),
            tenant: entry.tenant.clone().unwrap_or_else(|| SINGLE_TENANT.into()),
            schedule,
            formats,
            options: entry.options.clone(),
        })
    }

    /// Makes the report as of `now_ns` and writes each of its formats; returns their paths.
    pub async fn run_once(
        &self,
        engine: &QueryEngine,
        storage: &Storage,
        now_ns: i64,
    ) -> Result<Vec<String>, ReportError> {
        let report = run(engine, &self.tenant, &self.options, now_ns).await?;
        let stamp = chrono::DateTime::from_timestamp_nanos(now_ns).format("%Y%m%dT%H%M%SZ");
        let mut written = Vec::new();
        for format in &self.formats {
            let path = Path::from(format!(
                "{PREFIX}/{}/{}/{stamp}.{}",
                self.tenant,
                self.name,
                format.extension()
            ));
            let body = format.render(&report)?;
            storage
                .store()
                .put(&path, body.into_bytes().into())
                .await
                .map_err(|e| ReportError::BadOptions(format!("writing {path}: {e}")))?;
            written.push(path.to_string());
        }
        Ok(written)
    }
}

/// Runs every entry at its schedule until `stop` resolves. A failed run is logged and the
/// entry runs again at its next time.
pub async fn run_schedules(
    entries: Vec<Entry>,
    engine: QueryEngine,
    storage: Storage,
    stop: impl std::future::Future<Output = ()>,
) {
    if entries.is_empty() {
        return;
    }
    tokio::pin!(stop);
    let mut next: Vec<Option<i64>> = entries
        .iter()
        .map(|e| e.schedule.next_after(crate::time::now_ns()))
        .collect();
    loop {
        let Some(due) = next.iter().flatten().min().copied() else {
            return;
        };
        let wait = std::time::Duration::from_nanos(
            u64::try_from(due - crate::time::now_ns()).unwrap_or(0),
        );
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
        for (entry, at) in entries.iter().zip(next.iter_mut()) {
            if *at != Some(due) {
                continue;
            }
            match entry.run_once(&engine, &storage, due).await {
                Ok(paths) => {
                    tracing::info!(report = %entry.name, ?paths, "scheduled report written")
                }
                Err(e) => {
                    tracing::error!(report = %entry.name, error = %e, "scheduled report failed")
                }
            }
            *at = entry.schedule.next_after(due);
        }
    }
}

/// One stored report output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredReport {
    /// The `[[reports]]` name.
    pub name: String,
    /// The file, e.g. `20240501T100000Z.html`; `GET /api/v1/reports/{name}/{file}` reads it.
    pub file: String,
    pub bytes: u64,
    /// When it was written, RFC 3339.
    pub written_at: String,
}

/// The stored outputs of `tenant`'s scheduled reports, newest first.
pub async fn list(storage: &Storage, tenant: &str) -> Result<Vec<StoredReport>, StorageError> {
    let prefix = Path::from(format!("{PREFIX}/{tenant}"));
    let objects: Vec<_> = storage.store().list(Some(&prefix)).try_collect().await?;
    let mut out: Vec<StoredReport> = objects
        .into_iter()
        .filter_map(|o| {
            let parts: Vec<String> = o.location.parts().map(|p| p.as_ref().to_string()).collect();
            let [_, _, name, file] = parts.as_slice() else {
                return None;
            };
            Some(StoredReport {
                name: name.clone(),
                file: file.clone(),
                bytes: o.size,
                written_at: o.last_modified.to_rfc3339(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.file.cmp(&a.file).then_with(|| a.name.cmp(&b.name)));
    Ok(out)
}

/// The bytes of one stored output; `None` when there is no such output.
pub async fn read(
    storage: &Storage,
    tenant: &str,
    name: &str,
    file: &str,
) -> Result<Option<Vec<u8>>, StorageError> {
    let safe = |s: &str| !s.is_empty() && !s.contains('/') && s != "." && s != "..";
    if !safe(name) || !safe(file) {
        return Ok(None);
    }
    let path = Path::from(format!("{PREFIX}/{tenant}/{name}/{file}"));
    match storage.store().get(&path).await {
        Ok(found) => Ok(Some(found.bytes().await?.to_vec())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
