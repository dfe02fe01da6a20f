//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// changeflow: MongoDB change streams as typed domain events, to handlers and Kafka.
#[derive(Debug, Parser)]
#[command(name = "changeflow", version, about)]
pub struct Cli {
    /// Configuration file (TOML). Without one, the built-in defaults apply (they equal
    /// config/changeflow.toml). Any key can be overridden by CHANGEFLOW_<KEY_PATH>.
    #[arg(long, short, env = "CHANGEFLOW_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every change of the watched collections as one relaxed Extended JSON line,
    /// from now until Ctrl-C / SIGTERM. One change stream per watched database.
    Tail,
    /// Validate the configuration (file, defaults and environment) and print the result
    /// with secrets redacted. Exits 2 with the offending key when it is invalid.
    CheckConfig,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_subcommand_is_an_error() {
        assert!(Cli::try_parse_from(["changeflow", "tale"]).is_err());
        let cli = Cli::try_parse_from(["changeflow", "--config", "x.toml", "tail"]).unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("x.toml")));
    }
}
