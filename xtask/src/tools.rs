//! Small helpers shared by the service modules: PATH lookup, running a command for its
//! output, port probes and waiting on a condition with a deadline.

use std::ffi::OsStr;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::Spawned;

/// The first executable called `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The binary named by `env_var` (which must then exist), else `name` on PATH.
pub fn binary_from_env_or_path(env_var: &str, name: &str) -> Result<Option<PathBuf>> {
    if let Some(bin) = crate::paths::non_empty_env(env_var) {
        let path = PathBuf::from(bin);
        if !path.is_file() {
            bail!("{env_var}={} does not name a file", path.display());
        }
        return Ok(Some(path));
    }
    Ok(find_on_path(name))
}

/// Runs `cmd extra_args…` to completion and returns its stdout; on failure the error names
/// `what` and carries the command's stderr.
pub fn run_captured(cmd: &mut Command, extra_args: &[&OsStr], what: &str) -> Result<String> {
    let out = cmd
        .args(extra_args)
        .output()
        .with_context(|| format!("{what}: could not start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What `bin --version` prints on stdout.
pub fn version_output(bin: &std::path::Path) -> Result<String> {
    run_captured(
        &mut Command::new(bin),
        &["--version".as_ref()],
        &format!("{} --version", bin.display()),
    )
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_in_use(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// Polls `condition` until it holds, failing early when one of `spawned` exits and with a
/// message naming `what` and the logs when the deadline passes.
pub async fn wait_for<F, Fut>(
    deadline: Instant,
    spawned: &mut [Spawned],
    what: &str,
    mut condition: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    loop {
        for process in spawned.iter_mut() {
            process.check_still_running()?;
        }
        if condition().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = spawned
                .iter()
                .map(|s| format!("{}: {}", s.name, s.log.display()))
                .collect();
            bail!(
                "timed out waiting for {what}{}",
                if logs.is_empty() {
                    String::new()
                } else {
                    format!("; logs: {}", logs.join(", "))
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
