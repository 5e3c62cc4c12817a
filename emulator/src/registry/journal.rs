//! The registry on disk: a snapshot replaced whole and a journal of changes appended since, and
//! how a change is written before memory takes it.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::MutexGuard;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::tokens::{now_secs, TokenRecord};
use super::{CertificateRecord, Registry, State, ThingRecord};
use crate::files::{
    at_path, in_private_dir, invalid_data, open_append_private, read_if_exists, write_atomic,
};
use crate::state_dir::{
    REGISTRY_JOURNAL_FILE as JOURNAL_FILE, REGISTRY_SNAPSHOT_FILE as SNAPSHOT_FILE,
};

/// The journal is folded into the snapshot once it is larger than this and than the snapshot.
pub(super) const COMPACT_MIN_BYTES: u64 = 1 << 20;

/// One journal line: the new value of one record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Change {
    Certificate { record: CertificateRecord },
    RemoveCertificate { certificate_id: String },
    Token { token: String, record: TokenRecord },
    RemoveToken { token: String },
    Thing { record: ThingRecord },
    Policy { name: String, document: Value },
}

impl State {
    pub(super) fn apply(&mut self, change: Change) {
        match change {
            Change::Certificate { record } => {
                self.certificates
                    .insert(record.certificate_id.clone(), record);
            }
            Change::RemoveCertificate { certificate_id } => {
                self.certificates.remove(&certificate_id);
            }
            Change::Token { token, record } => {
                self.tokens.insert(token, record);
            }
            Change::RemoveToken { token } => {
                self.tokens.remove(&token);
            }
            Change::Thing { record } => {
                self.things.insert(record.name.clone(), record);
            }
            Change::Policy { name, document } => {
                self.policies.insert(name, document);
            }
        }
    }
}

pub(super) struct Inner {
    pub(super) state: State,
    journal: File,
    journal_bytes: u64,
    snapshot_bytes: u64,
}

/// The state an earlier run left in `dir` (created if missing), its journal open for appending.
pub(super) fn load(dir: &Path) -> io::Result<Inner> {
    let [snapshot_path, journal_path] = in_private_dir(dir, [SNAPSHOT_FILE, JOURNAL_FILE])?;

    let mut state: State = match read_if_exists(&snapshot_path)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| invalid_data(format!("{}: {e}", snapshot_path.display())))?,
        None => State::default(),
    };
    if let Some(bytes) = read_if_exists(&journal_path)? {
        replay(&mut state, &bytes, &journal_path);
    }
    state.purge(now_secs());

    let journal = open_append_private(&journal_path)?;
    let mut inner = Inner {
        state,
        journal,
        journal_bytes: 0,
        snapshot_bytes: 0,
    };
    compact(dir, &mut inner)?;
    Ok(inner)
}

impl Registry {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Changes are applied only after they are written, so a panic cannot leave the state
        // half-changed: the state behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `changes` to the journal, then apply them. On a write error nothing is applied,
    /// unless `force`: then memory takes the changes and a new snapshot saves them.
    pub(super) fn commit(
        &self,
        inner: &mut Inner,
        changes: Vec<Change>,
        force: bool,
    ) -> io::Result<()> {
        let mut lines = Vec::new();
        for change in &changes {
            serde_json::to_writer(&mut lines, change)?;
            lines.push(b'\n');
        }
        // One write for the whole batch: a crash keeps the complete lines and replay drops a
        // torn last one.
        if let Err(e) = inner.journal.write_all(&lines) {
            let e = at_path("write", &self.dir.join(JOURNAL_FILE))(e);
            // Part of a line may be in the journal, and the next line would be glued to it;
            // a snapshot empties the journal. Cut the part off first, in case the snapshot
            // fails too (a full disk).
            let _ = inner.journal.set_len(inner.journal_bytes);
            if force {
                for change in changes {
                    inner.state.apply(change);
                }
            }
            return match compact(&self.dir, inner) {
                Ok(()) if force => Ok(()),
                _ => Err(e),
            };
        }
        inner.journal_bytes += lines.len() as u64;
        for change in changes {
            inner.state.apply(change);
        }
        if inner.journal_bytes > COMPACT_MIN_BYTES.max(inner.snapshot_bytes) {
            if let Err(e) = compact(&self.dir, inner) {
                log::error!("registry snapshot failed: {e}");
            }
        }
        Ok(())
    }

    /// For changes whose callers cannot fail: memory always takes them; a write failure is
    /// logged.
    pub(super) fn commit_or_warn(&self, inner: &mut Inner, changes: Vec<Change>) {
        if let Err(e) = self.commit(inner, changes, true) {
            log::error!("registry change not saved: {e}");
        }
    }
}

/// Replace the snapshot with the current state and empty the journal.
fn compact(dir: &Path, inner: &mut Inner) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(&inner.state)?;
    write_atomic(&dir.join(SNAPSHOT_FILE), &bytes, 0o600)?;
    // Replaying the old journal over the new snapshot would be harmless (changes are
    // whole-record puts), so a crash between these two steps loses nothing.
    inner
        .journal
        .set_len(0)
        .map_err(at_path("empty", &dir.join(JOURNAL_FILE)))?;
    inner.journal_bytes = 0;
    inner.snapshot_bytes = bytes.len() as u64;
    Ok(())
}

/// Apply the journal's complete lines; a torn or unreadable line is skipped with a warning.
fn replay(state: &mut State, bytes: &[u8], path: &Path) {
    let mut skipped = 0usize;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line.last() != Some(&b'\n') {
            // Cut short by a crash while it was being written.
            skipped += 1;
            continue;
        }
        match serde_json::from_slice::<Change>(line) {
            Ok(change) => state.apply(change),
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        log::warn!("{}: skipped {skipped} damaged line(s)", path.display());
    }
}
