//! Loading and validation, end to end from TOML text.

use super::*;
use std::collections::HashMap;
use std::path::Path;

fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load_with_env(Some(&path), |name| vars.get(name).cloned())
}

#[test]
fn committed_config_file_equals_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/changeflow.toml");
    let loaded = Config::load_with_env(Some(&path), |_| None).unwrap();
    assert_eq!(loaded, Config::default());
}

#[test]
fn a_stuck_bound_under_a_second_is_refused() {
    let err = load_str("[health]\nstuck_after_ms = 10\n", &[]).unwrap_err();
    assert!(err.to_string().contains("health.stuck_after_ms"), "{err}");
    let ok = load_str("[health]\nstuck_after_ms = 5000\n", &[]).unwrap();
    assert_eq!(ok.health.stuck_after_ms, 5000);
}

#[test]
fn unknown_key_is_reported_with_its_path() {
    let err = load_str("[mongodb]\nurl = \"mongodb://x\"\n", &[]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ConfigError::Shape { .. }), "{text}");
    assert!(text.contains("mongodb.url"), "{text}");
    assert!(text.contains("unknown field"), "{text}");
}

#[test]
fn wrong_type_is_reported_with_its_path() {
    let err = load_str(
        "[[watch]]\ndatabase = \"d\"\ncollections = \"payments\"\n",
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("watch[0].collections"), "{err}");
}

#[test]
fn bad_policy_is_reported_with_its_path() {
    let err = load_str("[provider]\npolicy = \"ratio:2\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("provider.policy"), "{err}");
    assert!(err.to_string().contains("from 0 to 1"), "{err}");
    let ok = load_str("", &[("CHANGEFLOW_PROVIDER_POLICY", "ratio:0.25")]).unwrap();
    assert_eq!(
        ok.provider.policy,
        OutcomePolicy::Ratio {
            confirm: 0.25,
            seed: 0
        }
    );
}

#[test]
fn syntax_error_names_the_line() {
    let err = load_str("[mongodb\n", &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn environment_overrides_strings_and_arrays() {
    let config = load_str(
        "",
        &[
            (
                "CHANGEFLOW_MONGODB_URI",
                "mongodb://db.example:27017/?replicaSet=x",
            ),
            (
                "CHANGEFLOW_WATCH",
                r#"[{database = "shop", collections = ["orders", "payments"]}]"#,
            ),
            ("CHANGEFLOW_PAYMENTS_DATABASE", "shop"),
            ("CHANGEFLOW_PROVIDER_LATENCY_MS", "0"),
        ],
    )
    .unwrap();
    assert_eq!(
        config.mongodb.uri,
        "mongodb://db.example:27017/?replicaSet=x"
    );
    assert_eq!(config.watch.len(), 1);
    assert_eq!(config.watch[0].database, "shop");
    assert_eq!(config.payments.database, "shop");
    assert_eq!(config.provider.latency_ms, 0);
}

#[test]
fn set_overrides_known_keys_and_refuses_unknown_ones() {
    let sets = |s: &[&str]| {
        let sets: Vec<String> = s.iter().map(|s| s.to_string()).collect();
        Config::load_layers(None, |_| None, &sets)
    };
    let c = sets(&["provider.latency_ms=0", "http.address=127.0.0.1:0"]).unwrap();
    assert_eq!(c.provider.latency_ms, 0);
    assert_eq!(c.http.address, "127.0.0.1:0");
    for (bad, needle) in [
        (&["provider.latncy_ms=0"][..], "unknown key"),
        (&["provider=1"][..], "section"),
        (&["provider.latency_ms"][..], "KEY=VALUE"),
        (&["provider.latency_ms=soon"][..], "not a TOML value"),
    ] {
        let err = sets(bad).unwrap_err().to_string();
        assert!(err.contains(needle), "{bad:?}: {err}");
    }
}

#[test]
fn bad_environment_value_names_the_variable() {
    let err = load_str("", &[("CHANGEFLOW_WATCH", "[not toml")]).unwrap_err();
    assert!(err.to_string().contains("CHANGEFLOW_WATCH"), "{err}");
}

#[test]
fn invalid_values_are_rejected_with_their_key() {
    let cases = [
        ("[mongodb]\nuri = \"postgres://x\"\n", "mongodb.uri"),
        ("watch = []\n", "watch"),
        (
            "[[watch]]\ndatabase = \"a.b\"\ncollections = [\"c\"]\n",
            "watch[0].database",
        ),
        (
            "[[watch]]\ndatabase = \"a\"\ncollections = [\"c\"]\n[[watch]]\ndatabase = \"a\"\ncollections = [\"d\"]\n",
            "watch[1].database",
        ),
        (
            "[[watch]]\ndatabase = \"a\"\ncollections = [\"system.views\"]\n",
            "watch[0].collections[0]",
        ),
        ("[log]\nlevel = \"info,,=[\"\n", "log.level"),
        ("[payments]\ndatabase = \"other\"\n", "payments.database"),
        (
            "[payments]\ncollection = \"orders\"\n",
            "payments.collection",
        ),
        ("[provider]\nmax_in_flight = 0\n", "provider.max_in_flight"),
        ("[checkpoint]\nevery_ms = 0\n", "checkpoint.every_ms"),
        (
            "[engine]\noperation_types = [\"insert\", \"upsert\"]\n",
            "engine.operation_types[1]",
        ),
        ("[http]\naddress = \"localhost\"\n", "http.address"),
        (
            "[kafka]\nraw = [{database = \"changeflow\", collection = \"orders\", topic = \"o\"}]\n",
            "kafka.raw[0]",
        ),
        (
            "[kafka]\nraw = [{database = \"changeflow\", collection = \"payments\", topic = \"p\"}]\n",
            "kafka.raw[0]",
        ),
        (
            "[routes]\npayment_failed = [\"provider_simulator\"]\n",
            "routes.payment_failed[0]",
        ),
        (
            "[kafka.properties]\n\"enable.idempotence\" = \"false\"\n",
            "kafka.properties.enable.idempotence",
        ),
    ];
    for (text, key) in cases {
        // As `main` loads it: the routes checked against the targets that exist.
        let err = load_str(text, &[])
            .and_then(|c| c.check_routes(&crate::targets::built_in(), "configuration"))
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::Invalid { .. }) && err.to_string().contains(key),
            "input {text:?}: expected an invalid-value error on `{key}`, got: {err}"
        );
    }
}

#[test]
fn debug_output_redacts_the_password() {
    let mut config = Config::default();
    config.mongodb.uri = "mongodb://app:s3cret@db:27017/?replicaSet=rs0".into();
    let shown = format!("{config:?}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("app:***@db"), "{shown}");
}
