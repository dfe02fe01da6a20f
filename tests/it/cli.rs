//! The binary's configuration check: secrets in the file never reach its output.

use std::process::Command;

#[test]
fn check_config_shows_the_configuration_without_secrets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("changeflow.toml");
    std::fs::write(
        &file,
        r#"
[mongodb]
uri = "mongodb://app:m0ngo-secret@db1:27017/?replicaSet=rs0"

[kafka.properties]
"security.protocol" = "SASL_SSL"
"sasl.username" = "producer"
"sasl.password" = "k4fka-secret"
"#,
    )
    .expect("writing the config");
    let output = Command::new(env!("CARGO_BIN_EXE_changeflow"))
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .env_remove("CHANGEFLOW_CONFIG")
        .env_remove("CHANGEFLOW_MONGODB_URI")
        .output()
        .expect("running changeflow check-config");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(
        stdout.contains("\"sasl.username\" = \"producer\""),
        "{stdout}"
    );
    for secret in ["m0ngo-secret", "k4fka-secret"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} shown:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn every_command_has_help_with_examples() {
    let commands: [&[&str]; 12] = [
        &[],
        &["run"],
        &["demo"],
        &["tail"],
        &["setup"],
        &["check-config"],
        &["replay"],
        &["status"],
        &["checkpoint"],
        &["checkpoint", "show"],
        &["checkpoint", "set"],
        &["checkpoint", "reset"],
    ];
    for command in commands {
        let output = Command::new(env!("CARGO_BIN_EXE_changeflow"))
            .args(command)
            .arg("--help")
            .env_remove("CHANGEFLOW_CONFIG")
            .output()
            .expect("running changeflow --help");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{command:?} --help failed");
        let examples = stdout.split_once("\nExamples:\n").map(|(_, e)| e);
        assert!(
            examples.is_some_and(|e| e.lines().any(|l| l.starts_with("  changeflow "))),
            "{command:?} --help has no examples:\n{stdout}"
        );
    }
}
