//! Background processes tracked by pid files.
//!
//! A pid file records the pid and the executable it was started from. A process counts as
//! ours only while `/proc/<pid>/exe` still points at that executable, so a recycled pid is
//! never signalled: `down` stops exactly what `up` started and nothing found by name.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// First line written to a log before each start.
const START_MARKER: &str = "--- cargo xtask: starting";

/// What a pid file says about a process we started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: u32,
    pub exe: PathBuf,
}

impl PidRecord {
    fn render(&self) -> String {
        format!("{}\n{}\n", self.pid, self.exe.display())
    }

    fn parse(text: &str) -> Option<PidRecord> {
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let exe = PathBuf::from(lines.next()?.trim());
        Some(PidRecord { pid, exe })
    }

    /// True while the pid is alive, not a zombie, and still runs the recorded executable.
    pub fn is_alive(&self) -> bool {
        let Ok(link) = fs::read_link(format!("/proc/{}/exe", self.pid)) else {
            return false;
        };
        // A binary replaced on disk shows as "<path> (deleted)".
        let link = link.to_string_lossy();
        let expected = self.exe.to_string_lossy();
        if !(link == expected || link.starts_with(&format!("{expected} "))) {
            return false;
        }
        match fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            // Field 3 (after the parenthesised command name) is the state; Z = zombie.
            Ok(stat) => stat
                .rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false),
            Err(_) => false,
        }
    }
}

/// Reads a pid file; a missing or unreadable file means "not started by us".
pub fn read_pid_file(path: &Path) -> Option<PidRecord> {
    fs::read_to_string(path)
        .ok()
        .and_then(|t| PidRecord::parse(&t))
}

/// The live process a pid file names, if any; a stale pid file is removed.
pub fn running(pid_file: &Path) -> Option<PidRecord> {
    let record = read_pid_file(pid_file)?;
    if record.is_alive() {
        Some(record)
    } else {
        let _ = fs::remove_file(pid_file);
        None
    }
}

/// A process started in the background, still owned by this invocation until it is ready.
pub struct Spawned {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Spawned {
    /// Fails with the log's tail when the process has already exited.
    pub fn check_still_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited during startup ({status}); its log is {}\n--- last lines ---\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

/// Starts `exe args` detached from our terminal and process group, in the directory of
/// `log` (relative paths a service writes land in its state directory), stdout and stderr
/// appended to `log`, with `envs` added to its environment, and records it in `pid_file`.
pub fn spawn_detached(
    name: &str,
    exe: &Path,
    args: &[String],
    envs: &[(&str, &Path)],
    log: &Path,
    pid_file: &Path,
) -> Result<Spawned> {
    if let Some(parent) = log.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let exe = fs::canonicalize(exe).with_context(|| format!("{} not found", exe.display()))?;
    // Logs are kept across runs; the marker lets a failure show only this run's lines.
    writeln!(out, "{START_MARKER} {} {}", exe.display(), args.join(" "))?;
    let err = out.try_clone()?;
    let mut command = Command::new(&exe);
    if let Some(dir) = log.parent() {
        command.current_dir(dir);
    }
    let child = command
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own process group: a Ctrl-C meant for `cargo xtask` does not reach the service.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name} ({})", exe.display()))?;
    let record = PidRecord {
        pid: child.id(),
        exe,
    };
    fs::write(pid_file, record.render())
        .with_context(|| format!("writing pid file {}", pid_file.display()))?;
    Ok(Spawned {
        child,
        name: name.to_owned(),
        log: log.to_owned(),
    })
}

/// Stops the process a pid file names: SIGTERM, then SIGKILL after `grace`.
/// Returns false when there was nothing of ours to stop.
pub fn stop(pid_file: &Path, grace: Duration) -> Result<bool> {
    let Some(record) = running(pid_file) else {
        return Ok(false);
    };
    signal(record.pid, libc::SIGTERM)?;
    let deadline = Instant::now() + grace;
    while record.is_alive() {
        if Instant::now() >= deadline {
            signal(record.pid, libc::SIGKILL)?;
            wait_gone(&record, Duration::from_secs(10))?;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = fs::remove_file(pid_file);
    Ok(true)
}

fn wait_gone(record: &PidRecord, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while record.is_alive() {
        if Instant::now() >= deadline {
            bail!("process {} did not exit after SIGKILL", record.pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
    // SAFETY: kill(2) has no memory-safety preconditions; the pid was checked to be ours.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("signalling process {pid}"));
        }
    }
    Ok(())
}

/// The last `lines` lines of a log file written since the latest start (at most the last
/// 64 KiB are read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let since_start = all
        .iter()
        .rposition(|l| l.starts_with(START_MARKER))
        .map_or(0, |i| i + 1);
    let from = since_start.max(all.len().saturating_sub(lines));
    all[from..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_record_round_trips() {
        let record = PidRecord {
            pid: 4242,
            exe: PathBuf::from("/opt/mongo/bin/mongod"),
        };
        assert_eq!(PidRecord::parse(&record.render()), Some(record));
        assert_eq!(PidRecord::parse("not a pid\n/x\n"), None);
        assert_eq!(PidRecord::parse("12\n"), None);
    }

    #[test]
    fn own_process_is_alive_and_a_foreign_exe_is_not() {
        let exe = std::env::current_exe().unwrap();
        let me = PidRecord {
            pid: std::process::id(),
            exe: exe.clone(),
        };
        assert!(me.is_alive());
        let other = PidRecord {
            pid: std::process::id(),
            exe: PathBuf::from("/bin/definitely-not-this"),
        };
        assert!(!other.is_alive(), "a pid running another exe is not ours");
    }

    #[test]
    fn spawn_and_stop_a_real_process() {
        let dir = std::env::temp_dir().join(format!("xtask-proc-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("sleep.pid");
        let log = dir.join("sleep.log");
        let sleep = PathBuf::from("/bin/sleep");
        let mut spawned =
            spawn_detached("sleep", &sleep, &["30".to_owned()], &[], &log, &pid_file).unwrap();
        spawned.check_still_running().unwrap();
        assert!(running(&pid_file).is_some());
        // The child is ours until reaped; reap it from a thread so `stop` sees it vanish.
        let waiter = std::thread::spawn(move || spawned.child.wait());
        assert!(stop(&pid_file, Duration::from_secs(5)).unwrap());
        waiter.join().unwrap().unwrap();
        assert!(running(&pid_file).is_none());
        assert!(!stop(&pid_file, Duration::from_secs(1)).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }
}
