//! Replacing a state file whole: the new contents go to `<name>.tmp` beside it and are renamed
//! over it, so a crash leaves the old file or the new one, never a torn mix of both.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    path::Path,
};

/// Replaces `path` with `contents` so that the new contents survive a power cut once this
/// returns: the file is synced before the rename and its directory after it.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_and_rename(path, contents, true)
}

/// Replaces `path` with `contents` so that readers never see half of it, without waiting for
/// the disk: for files rewritten often whose loss to a power cut costs little.
pub fn replace_unsynced(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_and_rename(path, contents, false)
}

fn write_and_rename(path: &Path, contents: &[u8], sync: bool) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| io::Error::other(format!("{} is not a file", path.display())))?;
    let mut temporary_name = name.to_owned();
    temporary_name.push(".tmp");
    let temporary = path.with_file_name(temporary_name);
    let mut file = File::create(&temporary)?;
    file.write_all(contents)?;
    if sync {
        file.sync_all()?;
    }
    fs::rename(&temporary, path)?;
    if sync {
        // The rename is an entry in the directory: it must reach the disk too.
        let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("session");
        replace(&path, b"1\n").expect("create");
        replace(&path, b"2\n").expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"2\n");
        let status = dir.path().join("status.json");
        replace_unsynced(&status, b"{}").expect("replace unsynced");
        assert_eq!(fs::read(&status).expect("read"), b"{}");
        let mut names: Vec<_> =
            fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        names.sort();
        assert_eq!(names, ["session", "status.json"]);
    }
}
