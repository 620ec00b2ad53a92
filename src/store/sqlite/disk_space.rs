//! Free space on the store's filesystem, for `/readyz`. A full disk fails the commits that
//! need new pages, but not the heartbeat (an update in place, which the WAL may still take
//! into frames it already has), so the probe asks the filesystem itself.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Below this many free bytes the store is not ready: a group of webhooks, or a
/// checkpoint moving the WAL into the file, may need more than that.
pub(super) const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Bytes an unprivileged process may still write on the filesystem holding `file`.
pub(super) fn free_bytes(file: &Path) -> std::io::Result<u64> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` is writable memory of the struct's
    // size; statvfs fills it entirely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful call above.
    let st = unsafe { st.assume_init() };
    // Both are u64 on 64-bit Linux, narrower on some other targets.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_exists_has_its_free_space_read() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(&dir.path().join("reelstate.db")).unwrap();
        assert!(free > 0);
        assert!(free_bytes(Path::new("/no/such/dir/x.db")).is_err());
    }
}
