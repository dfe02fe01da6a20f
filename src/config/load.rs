//! Loading: built-in defaults, overlaid by a TOML file, by `CHANGEFLOW_*` environment
//! variables, then by `--set KEY=VALUE`; the result validated.

use std::path::{Path, PathBuf};

use super::{Config, ENV_PREFIX};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// An environment override could not be parsed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A key has a value of the wrong type, or is unknown.
    #[error("{origin}: key `{key}`: {message}")]
    Shape {
        /// Where the configuration came from.
        origin: String,
        /// The key path, e.g. `watch[0].collections`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("{origin}: key `{key}`: {message}")]
    Invalid {
        /// Where the configuration came from.
        origin: String,
        /// The key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Loads defaults ⊕ `file` (when given) ⊕ `CHANGEFLOW_*` variables from the process
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(file, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], then `sets` (`key.path=value`, as from `--set`) on top.
    pub fn load_with_sets(file: Option<&Path>, sets: &[String]) -> Result<Config, ConfigError> {
        Config::load_layers(file, |name| std::env::var(name).ok(), sets)
    }

    /// As [`Config::load`], reading variables through `env` (tests pass their own).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::load_layers(file, env, &[])
    }

    pub(super) fn load_layers(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        sets: &[String],
    ) -> Result<Config, ConfigError> {
        let mut tree =
            toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
                origin: "built-in defaults".into(),
                key: String::new(),
                message: e.to_string(),
            })?;
        let origin = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|e| ConfigError::Syntax {
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
                merge(&mut tree, toml::Value::Table(table));
                path.display().to_string()
            }
            None => "configuration".to_owned(),
        };
        apply_env(&mut tree, &mut Vec::new(), &env)?;
        for set in sets {
            apply_set(&mut tree, set)?;
        }
        let config: Config =
            serde_path_to_error::deserialize(tree).map_err(|e| ConfigError::Shape {
                origin: origin.clone(),
                key: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin,
                key,
                message,
            })?;
        Ok(config)
    }
}

/// Deep-merges `over` into `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(base), toml::Value::Table(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

/// Replaces every leaf (and every array) whose variable is set.
fn apply_env(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let toml::Value::Table(table) = value {
        for (key, child) in table.iter_mut() {
            path.push(key.clone());
            apply_env(child, path, env)?;
            path.pop();
        }
        return Ok(());
    }
    let var = format!("{ENV_PREFIX}{}", path.join("_").to_uppercase());
    let Some(raw) = env(&var) else {
        return Ok(());
    };
    *value = match value {
        toml::Value::String(_) => toml::Value::String(raw),
        _ => parse_toml_value(&raw).map_err(|message| ConfigError::Env {
            var: var.clone(),
            message,
        })?,
    };
    Ok(())
}

/// Applies one `key.path=value` override; the key must exist.
fn apply_set(tree: &mut toml::Value, set: &str) -> Result<(), ConfigError> {
    let error = |message: String| ConfigError::Invalid {
        origin: "--set".into(),
        key: set.split('=').next().unwrap_or_default().to_owned(),
        message,
    };
    let Some((key, raw)) = set.split_once('=') else {
        return Err(error(
            "expected KEY=VALUE, e.g. provider.latency_ms=0".into(),
        ));
    };
    let mut node = tree;
    for part in key.trim().split('.') {
        node = match node {
            toml::Value::Table(table) => table
                .get_mut(part)
                .ok_or_else(|| error(format!("unknown key `{}`", key.trim())))?,
            _ => return Err(error(format!("unknown key `{}`", key.trim()))),
        };
    }
    *node = match node {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Table(_) => return Err(error("is a section; set one of its keys".into())),
        _ => parse_toml_value(raw).map_err(error)?,
    };
    Ok(())
}

fn parse_toml_value(raw: &str) -> Result<toml::Value, String> {
    let table: toml::Table = toml::from_str(&format!("v = {raw}"))
        .map_err(|e| format!("`{raw}` is not a TOML value: {e}"))?;
    table
        .get("v")
        .cloned()
        .ok_or_else(|| "empty value".to_owned())
}
