//! Diesel migration folders: what `generate` writes and what `--check` compares. A folder, once
//! written, is never rewritten (it may have run in production); advancing `stage` only adds the
//! next folders. Every file carries a checksum of its body so an edit by hand is told apart from
//! a folder that is merely stale.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::plan::{Extract, SourceRef, Swap};
use crate::spec::Stage;
use crate::sql::{self, fnv1a, PhaseSql};

/// One migration folder as zmig would write it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFolder {
    pub stage: Stage,
    /// `<name>_<phase>`: what follows the version in the folder name.
    pub suffix: String,
    /// `(file name, contents)`, in writing order.
    pub files: Vec<(String, String)>,
}

/// Diesel 2.3 migration versions, `YYYY-MM-DD-HHMMSS-NNNN`, handed out in order: every folder
/// written in one run gets the run's timestamp and the next `NNNN`, and never a version at or
/// below one already in the folder (a clock running behind a teammate's must not slip a new
/// phase in before a shipped one).
#[derive(Debug, Clone)]
pub struct Versions {
    timestamp: String,
    next: u32,
}

impl Versions {
    /// Versions after everything in `migrations_dir`, starting at `timestamp` if it is later.
    pub fn after_existing(migrations_dir: &Path, timestamp: &str) -> io::Result<Versions> {
        let mut versions = Versions {
            timestamp: timestamp.to_owned(),
            next: 1,
        };
        if !migrations_dir.exists() {
            return Ok(versions);
        }
        let mut latest: Option<String> = None;
        for entry in fs::read_dir(migrations_dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let version = name.split_once('_').map(|(v, _)| v).unwrap_or(&name);
            if is_version(version) && latest.as_deref().is_none_or(|l| version > l) {
                latest = Some(version.to_owned());
            }
        }
        if let Some(latest) = latest {
            if format!("{timestamp}-0001") <= latest {
                // Continue after the latest: same timestamp, next sequence number.
                match latest.rsplit_once('-') {
                    Some((stamp, seq)) if seq.len() == 4 && seq.parse::<u32>().is_ok() => {
                        versions.timestamp = stamp.to_owned();
                        versions.next = seq.parse::<u32>().unwrap_or(0) + 1;
                    }
                    _ => versions.timestamp = format!("{latest}-"),
                }
            }
        }
        Ok(versions)
    }

    fn next(&mut self) -> String {
        let version = format!("{}-{:04}", self.timestamp, self.next);
        self.next += 1;
        version
    }
}

/// The snapshot of the owner table kept in the expand folder (see [`crate::project`]).
pub const OWNER_SNAPSHOT: &str = "zmig-owner.json";

/// The swap as resolved when its prepare folder was written, kept in that folder: after
/// finalize `schema.rs` shows the new types, and later runs plan from this record instead.
pub const SWAP_SNAPSHOT: &str = "zmig-swap.json";

/// What every file of a migration's folders names in its header.
struct Origin<'a> {
    name: &'a str,
    source: &'a SourceRef,
    attribute: &'a str,
}

/// The folders of every phase up to the extract's stage that has SQL.
pub fn planned_folders(extract: &Extract, owner_snapshot: &str) -> Vec<PlannedFolder> {
    let origin = Origin {
        name: &extract.name,
        source: &extract.source,
        attribute: &extract.attribute,
    };
    Stage::EXTRACT
        .into_iter()
        .filter(|stage| *stage <= extract.stage)
        .filter_map(|stage| sql::extract::phase_sql(extract, stage))
        .map(|phase| {
            let snapshot =
                (phase.stage == Stage::Expand).then_some((OWNER_SNAPSHOT, owner_snapshot));
            folder(&origin, phase, snapshot)
        })
        .collect()
}

/// The folders of every phase up to the swap's stage that has SQL (prepare, finalize);
/// `swap_snapshot` goes into prepare's as [`SWAP_SNAPSHOT`].
pub fn planned_swap_folders(swap: &Swap, swap_snapshot: &str) -> Vec<PlannedFolder> {
    let origin = Origin {
        name: &swap.name,
        source: &swap.source,
        attribute: &swap.attribute,
    };
    sql::swap::swap_sql(swap)
        .into_iter()
        .filter(|phase| phase.stage <= swap.stage)
        .map(|phase| {
            let snapshot =
                (phase.stage == Stage::Prepare).then_some((SWAP_SNAPSHOT, swap_snapshot));
            folder(&origin, phase, snapshot)
        })
        .collect()
}

/// Folders of migration `name`'s phases past `stage` that are on disk: they would run on the
/// next deploy although the code is not there yet (someone moved `stage` back).
pub fn folders_past_stage(
    migrations_dir: &Path,
    name: &str,
    stage: Stage,
) -> io::Result<Vec<(Stage, PathBuf)>> {
    let mut found = Vec::new();
    for later in stage
        .strategy_stages()
        .iter()
        .copied()
        .filter(|later| *later > stage)
    {
        let probe = PlannedFolder {
            stage: later,
            suffix: format!("{name}_{later}"),
            files: Vec::new(),
        };
        if let Some(path) = existing_folder(migrations_dir, &probe)? {
            found.push((later, path));
        }
    }
    Ok(found)
}

/// `snapshot`: the record `(file name, contents)` the phase's folder carries, if any.
fn folder(origin: &Origin, phase: PhaseSql, snapshot: Option<(&str, &str)>) -> PlannedFolder {
    let mut files = vec![
        (
            "up.sql".to_owned(),
            with_header(origin, phase.stage, "up.sql", &phase.up),
        ),
        (
            "down.sql".to_owned(),
            with_header(origin, phase.stage, "down.sql", &phase.down),
        ),
    ];
    if !phase.run_in_transaction {
        files.push((
            "metadata.toml".to_owned(),
            format!(
                "# Generated by zmig for `{}`, phase {}: these files commit between steps themselves.\nrun_in_transaction = false\n",
                origin.name, phase.stage
            ),
        ));
    }
    if let Some((file, contents)) = snapshot {
        files.push((file.to_owned(), contents.to_owned()));
    }
    PlannedFolder {
        stage: phase.stage,
        suffix: format!("{}_{}", origin.name, phase.stage),
        files,
    }
}

const CHECKSUM_PREFIX: &str = "-- zmig-checksum: ";

fn with_header(origin: &Origin, stage: Stage, file: &str, body: &str) -> String {
    let header = format!(
        "-- zmig migration `{name}`, phase {number} of {total}: {stage} ({file})\n\
         -- Generated by `cargo xtask zmig generate` from `{model}` in {source}:\n\
         --   #[zmig({attribute})]\n\
         -- Review it as you would hand-written SQL. Do not edit it: generate reports edited files.\n\
         -- To change it, change the attribute, delete this folder if it has not run anywhere, and\n\
         -- generate again.\n",
        name = origin.name,
        number = stage.number(),
        total = stage.strategy_stages().len(),
        model = origin.source.model,
        source = origin.source.file.display(),
        attribute = origin.attribute,
    );
    let body = format!("{header}\n{body}");
    format!("{CHECKSUM_PREFIX}{:016x}\n{body}", fnv1a(body.as_bytes()))
}

/// Whether a generated SQL file's body still matches the checksum in its first line.
pub fn edited_by_hand(contents: &str) -> bool {
    match contents.split_once('\n') {
        Some((first, body)) if first.starts_with(CHECKSUM_PREFIX) => {
            first[CHECKSUM_PREFIX.len()..] != format!("{:016x}", fnv1a(body.as_bytes()))
        }
        _ => true,
    }
}

/// What is on disk for one planned folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderState {
    Missing,
    UpToDate(PathBuf),
    /// Inputs changed since it was written: `(folder, files that differ)`.
    Stale(PathBuf, Vec<String>),
    /// Someone edited these files after zmig wrote them.
    EditedByHand(PathBuf, Vec<String>),
}

/// Finds the existing folder for `planned` in `migrations_dir` (any version, same suffix).
pub fn existing_folder(
    migrations_dir: &Path,
    planned: &PlannedFolder,
) -> io::Result<Option<PathBuf>> {
    if !migrations_dir.exists() {
        return Ok(None);
    }
    let wanted = format!("_{}", planned.suffix);
    let mut found = None;
    for entry in fs::read_dir(migrations_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir()
            && name.ends_with(&wanted)
            && is_version(&name[..name.len() - wanted.len()])
        {
            found = Some(entry.path());
        }
    }
    Ok(found)
}

/// `YYYY-MM-DD-HHMMSS-NNNN` (or Diesel's other version forms: digits and dashes).
fn is_version(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
}

pub fn folder_state(migrations_dir: &Path, planned: &PlannedFolder) -> io::Result<FolderState> {
    let Some(path) = existing_folder(migrations_dir, planned)? else {
        return Ok(FolderState::Missing);
    };
    let mut edited = Vec::new();
    let mut stale = Vec::new();
    for (name, expected) in &planned.files {
        let actual = match fs::read_to_string(path.join(name)) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(error),
        };
        match actual {
            Some(actual) if &actual == expected => {}
            Some(actual) if name.ends_with(".sql") && edited_by_hand(&actual) => {
                edited.push(name.clone())
            }
            // The snapshots are records of the past, not outputs: they are never stale.
            Some(_) if name == OWNER_SNAPSHOT || name == SWAP_SNAPSHOT => {}
            _ => stale.push(name.clone()),
        }
    }
    Ok(if !edited.is_empty() {
        FolderState::EditedByHand(path, edited)
    } else if !stale.is_empty() {
        FolderState::Stale(path, stale)
    } else {
        FolderState::UpToDate(path)
    })
}

/// Writes `planned` as `migrations_dir/<folder_name>` all at once: into a hidden folder first,
/// renamed into place when every file is written, so Diesel never sees half a migration.
pub fn write_folder(
    migrations_dir: &Path,
    planned: &PlannedFolder,
    versions: &mut Versions,
) -> io::Result<PathBuf> {
    fs::create_dir_all(migrations_dir)?;
    let name = format!("{}_{}", versions.next(), planned.suffix);
    let staging = migrations_dir.join(format!(".zmig-staging-{name}"));
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    fs::create_dir(&staging)?;
    let result = (|| {
        for (file, contents) in &planned.files {
            fs::write(staging.join(file), contents)?;
        }
        let target = migrations_dir.join(&name);
        fs::rename(&staging, &target)?;
        Ok(target)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_tells_edits_apart() {
        let body = "-- hello\nSELECT 1;\n";
        let file = format!("{CHECKSUM_PREFIX}{:016x}\n{body}", fnv1a(body.as_bytes()));
        assert!(!edited_by_hand(&file));
        assert!(edited_by_hand(&file.replace("SELECT 1", "SELECT 2")));
        assert!(edited_by_hand("SELECT 1;"));
    }
}
