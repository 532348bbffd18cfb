//! The file moves of a rotation, run under the exclusive lock. Each step is
//! a `rename` (atomic) and the whole is idempotent: a rotation cut short by
//! a killed process is finished by the next one (see README.md).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{LogConfig, os_err, with_suffix};

/// The existing file for backup `n`: the `.gz` one when both exist (it is
/// renamed into place only once complete).
fn existing(config: &LogConfig, n: u32) -> Option<PathBuf> {
    [true, false]
        .into_iter()
        .map(|gz| config.backup_path(n, gz))
        .find(|p| exists(p))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(os_err("removing old log backup", path, e))
        }
        _ => Ok(()),
    }
}

/// Clears what an interrupted compression left, then makes number 1 free:
/// shifts the backups below the first free number up by one (deleting the
/// oldest when none is free).
pub(super) fn shift_backups(config: &LogConfig) -> io::Result<()> {
    let n = config.backups;
    // Only the backups below the first free number move; clean those.
    let mut free = None;
    for k in 1..=n {
        let plain = config.backup_path(k, false);
        let gz = config.backup_path(k, true);
        remove_if_present(&with_suffix(&gz, ".tmp"))?;
        let (has_plain, has_gz) = (exists(&plain), exists(&gz));
        if has_plain && has_gz {
            remove_if_present(&plain)?;
        }
        if !has_plain && !has_gz {
            free = Some(k);
            break;
        }
    }
    if config.gzip && exists(&config.backup_path(1, false)) {
        // The last rotation died before compressing.
        compress_backup(config, 1)?;
    }
    let free = match free {
        Some(k) => k,
        None => {
            remove_if_present(&config.backup_path(n, true))?;
            remove_if_present(&config.backup_path(n, false))?;
            n
        }
    };
    for k in (1..free).rev() {
        let Some(from) = existing(config, k) else {
            continue;
        };
        let gz = from == config.backup_path(k, true);
        let to = config.backup_path(k + 1, gz);
        fs::rename(&from, &to).map_err(|e| os_err("renaming log backup", &from, e))?;
    }
    Ok(())
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Compresses backup `n` into `<n>.gz`: written to `.gz.tmp`, renamed into
/// place when complete, then the plain file is removed.
#[cfg(feature = "gzip")]
pub(super) fn compress_backup(config: &LogConfig, n: u32) -> io::Result<()> {
    use std::io::Write;

    let plain = config.backup_path(n, false);
    let gz = config.backup_path(n, true);
    let tmp = with_suffix(&gz, ".tmp");
    let mut input = fs::File::open(&plain).map_err(|e| os_err("reading log backup", &plain, e))?;
    let out = fs::File::create(&tmp).map_err(|e| os_err("creating", &tmp, e))?;
    // Streamed: memory stays bounded whatever the file's size.
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    io::copy(&mut input, &mut enc)
        .and_then(|_| enc.finish())
        .and_then(|mut out| out.flush())
        .map_err(|e| os_err("compressing log backup into", &tmp, e))?;
    fs::rename(&tmp, &gz).map_err(|e| os_err("renaming", &tmp, e))?;
    remove_if_present(&plain)
}

#[cfg(not(feature = "gzip"))]
pub(super) fn compress_backup(_config: &LogConfig, _n: u32) -> io::Result<()> {
    Ok(())
}
