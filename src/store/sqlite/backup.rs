//! Backup and restore of the embedded store's file (docs/backup.md).
//!
//! A backup runs beside the service that owns the file: it opens its own read-only
//! connection, without the owner lock (`lock_owner`), and copies one read transaction's
//! snapshot with `VACUUM INTO`. A reader in WAL mode neither waits for the service's writer
//! nor holds it, and the checkpointer's PASSIVE checkpoints skip what a reader still sees,
//! so webhooks keep being accepted while the copy runs. The copy holds every table of the
//! file (the store's and the embedded records'), as one file with no WAL beside it.
//!
//! A restore replaces the file of a stopped service: it takes the owner lock, so a running
//! service (or one starting) makes it fail with [`StoreError::InUse`], and it moves the
//! file it replaces aside with its `-wal` and `-shm` instead of deleting them.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{STORE_SCHEMA, busy_wait, lock_owner};
use crate::store::StoreError;

/// What a backup or a restore copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The store's schema version in the copy.
    pub store_schema: i64,
    /// The embedded records' schema version in the copy (None: the file holds no records
    /// tables, as when the records are on Airtable; 0: records from before versioning).
    pub records_schema: Option<i64>,
    /// Inbox entries in the copy, for the operator to compare with what they expect.
    pub entries: i64,
    pub bytes: u64,
    /// Where a restore moved the file it replaced (with its `-wal` and `-shm`).
    pub moved_aside: Option<PathBuf>,
}

fn io(what: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::File(format!("{}: {e}", what.display()))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Copies the store at `db` into the new file `dest`, consistently, whether or not a
/// service is running on `db`.
pub fn backup(db: &Path, dest: &Path) -> Result<Copied, StoreError> {
    if !db.is_file() {
        return Err(StoreError::File(format!(
            "{}: no such store file",
            db.display()
        )));
    }
    if dest.exists() {
        return Err(StoreError::File(format!(
            "{} already exists: a backup never overwrites a file",
            dest.display()
        )));
    }
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_handler(Some(busy_wait))?;
    // Written beside `dest` and renamed once whole: a backup cut short leaves no file
    // that looks like a backup.
    let partial = with_suffix(dest, ".partial");
    if partial.exists() {
        std::fs::remove_file(&partial).map_err(io(&partial))?;
    }
    let target = partial
        .to_str()
        .ok_or_else(|| StoreError::File(format!("{}: not UTF-8", partial.display())))?;
    src.execute("VACUUM INTO ?1", [target])?;
    drop(src);
    let copied = seal(&partial)?;
    std::fs::rename(&partial, dest).map_err(io(dest))?;
    sync_dir(dest)?;
    Ok(copied)
}

/// Makes the copy at `path` self-contained (rollback journal, so no WAL file is ever
/// needed beside it), checks it whole, and syncs it.
fn seal(path: &Path) -> Result<Copied, StoreError> {
    let conn = Connection::open(path)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(StoreError::File(format!(
            "{}: journal mode stays {mode}",
            path.display()
        )));
    }
    let copied = check(&conn, path)?;
    drop(conn);
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))?;
    Ok(Copied {
        bytes: std::fs::metadata(path).map_err(io(path))?.len(),
        ..copied
    })
}

/// Whether `conn`'s file is a whole store this binary can run on: intact, with the
/// store's tables, of versions it knows.
fn check(conn: &Connection, path: &Path) -> Result<Copied, StoreError> {
    let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if ok != "ok" {
        return Err(StoreError::Corrupt(format!(
            "{}: integrity check: {ok}",
            path.display()
        )));
    }
    let has = |table: &str| -> Result<bool, StoreError> {
        Ok(conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    };
    if !has("inbox")? {
        return Err(StoreError::Corrupt(format!(
            "{}: not a reelstate store (no inbox table)",
            path.display()
        )));
    }
    let version = |table: &str| -> Result<i64, StoreError> {
        Ok(if has(table)? {
            conn.query_row(&format!("SELECT MAX(version) FROM {table}"), [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0)
        } else {
            0
        })
    };
    let store_schema = version("store_migrations")?;
    if store_schema > STORE_SCHEMA {
        return Err(StoreError::Newer {
            what: "store schema",
            file: store_schema,
            binary: STORE_SCHEMA,
        });
    }
    let records_schema = if has("records")? {
        Some(version("records_migrations")?)
    } else {
        None
    };
    let entries = conn.query_row("SELECT COUNT(*) FROM inbox", [], |r| r.get(0))?;
    Ok(Copied {
        store_schema,
        records_schema,
        entries,
        bytes: 0,
        moved_aside: None,
    })
}

/// A rename is durable once its directory is synced.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Puts the backup `src` in place of the store at `db`, which no process may hold. The
/// file it replaces, if any, is moved to `<db>.before-restore-<time>` (its `-wal` and
/// `-shm` too): it may hold what the backup lacks.
pub fn restore(src: &Path, db: &Path) -> Result<Copied, StoreError> {
    // Held to the end: a service starting meanwhile waits for it, then opens the restored
    // file, never the one being replaced.
    let _owner = lock_owner(db)?;
    if with_suffix(src, "-wal").exists() {
        return Err(StoreError::File(format!(
            "{}: a WAL lies beside it, so it is a live store, not a backup (make one with `reelstate backup`)",
            src.display()
        )));
    }
    let copied = {
        let conn = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        check(&conn, src)?
    };
    let restoring = with_suffix(db, ".restoring");
    std::fs::copy(src, &restoring).map_err(io(&restoring))?;
    std::fs::File::open(&restoring)
        .and_then(|f| f.sync_all())
        .map_err(io(&restoring))?;
    let moved_aside = if db.exists() {
        let stamp = crate::clock::now().format("%Y%m%dT%H%M%SZ");
        let aside = with_suffix(db, &format!(".before-restore-{stamp}"));
        std::fs::rename(db, &aside).map_err(io(db))?;
        for s in ["-wal", "-shm"] {
            let side = with_suffix(db, s);
            if side.exists() {
                let to = with_suffix(&aside, s);
                std::fs::rename(&side, &to).map_err(io(&side))?;
            }
        }
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&restoring, db).map_err(io(db))?;
    sync_dir(db)?;
    Ok(Copied {
        bytes: std::fs::metadata(db).map_err(io(db))?.len(),
        moved_aside,
        ..copied
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn videos(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM video_state", [], |r| r.get(0))
            .unwrap()
    }

    /// The service's own connection holds the owner lock; the backup copies beside it,
    /// with what sits only in the WAL, and the copy needs no WAL of its own.
    #[test]
    fn a_backup_copies_a_held_file_whole_and_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("live.db");
        let store = SqliteStore::open(&db).unwrap();
        store
            .with_here(|c| {
                c.execute_batch(
                    "INSERT INTO video_state VALUES ('recA', '{}', 'now');
                     INSERT INTO video_state VALUES ('recB', '{}', 'now');",
                )?;
                Ok(())
            })
            .unwrap();
        assert!(with_suffix(&db, "-wal").metadata().unwrap().len() > 0);
        let dest = dir.path().join("copy.db");
        let copied = backup(&db, &dest).unwrap();
        assert_eq!(copied.store_schema, STORE_SCHEMA);
        assert!(!with_suffix(&dest, "-wal").exists());
        assert!(!with_suffix(&dest, ".partial").exists());
        let mode: String = Connection::open_with_flags(&dest, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
        assert_eq!(videos(&dest), 2);
        let again = backup(&db, &dest).expect_err("never overwrites");
        assert!(again.to_string().contains("already exists"), "{again}");

        // While the service holds the file, a restore is refused and changes nothing.
        let refused = restore(&dest, &db).expect_err("refused");
        assert!(matches!(refused, StoreError::InUse(..)), "{refused:?}");
        store
            .with_here(|c| {
                c.execute_batch("INSERT INTO video_state VALUES ('recC', '{}', 'now')")?;
                Ok(())
            })
            .unwrap();
        drop(store);

        let restored = restore(&dest, &db).unwrap();
        let aside = restored.moved_aside.expect("the old file is kept");
        assert_eq!(videos(&db), 2, "the backup's rows");
        assert_eq!(videos(&aside), 3, "the replaced file, whole");
        assert!(SqliteStore::open(&db).is_ok());
    }

    #[test]
    fn a_restore_refuses_what_is_not_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let e = restore(&other, &db).expect_err("refused");
        assert!(e.to_string().contains("not a reelstate store"), "{e}");
        assert!(!db.exists(), "nothing put in place");

        let newer = dir.path().join("newer.db");
        let store = SqliteStore::open(&newer).unwrap();
        drop(store);
        let c = Connection::open(&newer).unwrap();
        // The dropped store's threads (intake writer, WAL flusher, checkpointer) end on
        // their own time and may still hold the file for a moment.
        c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        c.execute(
            "INSERT INTO store_migrations VALUES (?1, 'from the future', 'now')",
            [STORE_SCHEMA + 1],
        )
        .unwrap();
        // Leaving WAL needs the file to itself, which SQLite does not wait for.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while let Err(e) = c.pragma_update(None, "journal_mode", "DELETE") {
            assert!(std::time::Instant::now() < deadline, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(c);
        let e = restore(&newer, &db).expect_err("refused");
        assert!(matches!(e, StoreError::Newer { .. }), "{e:?}");
    }
}
