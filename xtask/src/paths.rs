//! Where the services keep their binaries (cache) and their runtime state (data, logs, pid files).
//! Both live outside the repository so that a fresh clone reuses what an earlier one built.

use std::path::PathBuf;

/// Directory for downloaded and built binaries, keyed by version below it.
pub fn cache_dir() -> PathBuf {
    dir_from_env("CHANGEFLOW_CACHE_DIR", "XDG_CACHE_HOME", ".cache")
}

/// Directory for the data, logs and pid files of the services `up` starts.
pub fn state_dir() -> PathBuf {
    dir_from_env("CHANGEFLOW_STATE_DIR", "XDG_STATE_HOME", ".local/state")
}

fn dir_from_env(own: &str, xdg: &str, home_relative: &str) -> PathBuf {
    if let Some(dir) = non_empty_env(own) {
        return PathBuf::from(dir);
    }
    let base = non_empty_env(xdg).map(PathBuf::from).unwrap_or_else(|| {
        let home = non_empty_env("HOME").unwrap_or_else(|| "/tmp".to_owned());
        PathBuf::from(home).join(home_relative)
    });
    base.join("changeflow")
}

/// An environment variable's value, treating "set but empty" as unset.
pub fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
