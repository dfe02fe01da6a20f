//! `changeflow check-config`: loads and validates the configuration, touching no server.

use crate::config::Config;
use crate::config::redact::redact_uri;
use anyhow::Context;

/// Prints the validated configuration with its secrets redacted.
pub fn command(config: &Config) -> anyhow::Result<()> {
    let mut shown = config.clone();
    shown.mongodb.uri = redact_uri(&shown.mongodb.uri);
    shown.kafka = shown.kafka.redacted();
    println!("# configuration is valid");
    // Which document updates carry is the server's setting, read when a stream opens.
    println!(
        "# update documents: post-images for a stream whose watched collections all keep them \
         (`changeflow setup` turns them on), else lookups marked fulldocument=lookup; \
         `changeflow status` shows each stream's mode"
    );
    print!(
        "{}",
        toml::to_string(&shown).context("rendering the configuration")?
    );
    Ok(())
}
