//! Validation: the checks the types cannot express, each naming the key it is about.

use std::collections::HashSet;

use super::redact::redact_uri;
use super::routes::BuiltIn;
use super::{Config, ConfigError};

impl Config {
    /// Checks that `[routes]` names only targets of `built_in`, each for kinds it takes
    /// (the targets are known where they are built, not here); errors name `origin`, where
    /// the configuration came from.
    pub fn check_routes(&self, built_in: &[BuiltIn], origin: &str) -> Result<(), ConfigError> {
        self.routes
            .validate(built_in)
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origin.to_owned(),
                key,
                message,
            })
    }

    /// Checks values the types cannot express; returns the offending key and why.
    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let uri = &self.mongodb.uri;
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err((
                "mongodb.uri".into(),
                format!(
                    "`{}` is not a MongoDB connection string (mongodb:// or mongodb+srv://)",
                    redact_uri(uri)
                ),
            ));
        }
        self.kafka.validate()?;
        if self.watch.is_empty() {
            return Err(("watch".into(), "watch at least one database".into()));
        }
        let mut databases = HashSet::new();
        for (i, w) in self.watch.iter().enumerate() {
            let key = format!("watch[{i}]");
            check_database_name(&w.database).map_err(|m| (format!("{key}.database"), m))?;
            if !databases.insert(w.database.as_str()) {
                return Err((
                    format!("{key}.database"),
                    format!(
                        "`{}` is listed twice; one change stream per database: merge the \
                         collections into one entry",
                        w.database
                    ),
                ));
            }
            if w.collections.is_empty() {
                return Err((
                    format!("{key}.collections"),
                    "list at least one collection".into(),
                ));
            }
            let mut seen = HashSet::new();
            for (j, c) in w.collections.iter().enumerate() {
                let ckey = format!("{key}.collections[{j}]");
                check_collection_name(c).map_err(|m| (ckey.clone(), m))?;
                if !seen.insert(c.as_str()) {
                    return Err((ckey, format!("`{c}` is listed twice")));
                }
            }
        }
        self.history
            .validate(self.watch.iter().map(|w| w.database.as_str()))?;
        self.snapshot.validate()?;
        self.lease.validate()?;
        self.validate_payments()?;
        self.validate_memory()?;
        self.validate_raw()?;
        self.validate_engine()?;
        self.health.validate()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(("log.level".into(), format!("not a valid filter: {e}")));
        }
        Ok(())
    }
}

impl Config {
    fn validate_payments(&self) -> Result<(), (String, String)> {
        let p = &self.payments;
        let watched = self
            .watch
            .iter()
            .find(|w| w.database == p.database)
            .ok_or_else(|| {
                (
                    "payments.database".to_owned(),
                    format!("`{}` is not a watched database (see [[watch]])", p.database),
                )
            })?;
        if !watched.collections.contains(&p.collection) {
            return Err((
                "payments.collection".into(),
                format!(
                    "`{}` is not watched in database `{}`",
                    p.collection, p.database
                ),
            ));
        }
        if p.processed_ttl_hours == 0 {
            return Err((
                "payments.processed_ttl_hours".into(),
                "must be at least 1: processed ids are what makes counting exactly-once".into(),
            ));
        }
        if self.provider.max_in_flight == 0 {
            return Err(("provider.max_in_flight".into(), "must be at least 1".into()));
        }
        if self.provider.latency_ms > 3_600_000 {
            return Err((
                "provider.latency_ms".into(),
                "more than an hour; did you mean seconds?".into(),
            ));
        }
        check_database_name(&self.checkpoint.database)
            .map_err(|m| ("checkpoint.database".to_owned(), m))?;
        if self.checkpoint.every_events == 0 {
            return Err((
                "checkpoint.every_events".into(),
                "must be at least 1".into(),
            ));
        }
        if self.checkpoint.every_ms == 0 {
            return Err(("checkpoint.every_ms".into(), "must be at least 1".into()));
        }
        Ok(())
    }

    fn validate_memory(&self) -> Result<(), (String, String)> {
        let m = &self.memory;
        check_database_name(&m.database).map_err(|e| ("memory.database".to_owned(), e))?;
        for (key, name) in [
            ("memory.short_term", &m.short_term),
            ("memory.episodic", &m.episodic),
            ("memory.semantic", &m.semantic),
        ] {
            check_collection_name(name).map_err(|e| (key.to_owned(), e))?;
        }
        Ok(())
    }

    /// Raw collections must be watched, and cannot be the payments collection (whose changes
    /// are typed events).
    fn validate_raw(&self) -> Result<(), (String, String)> {
        for (i, raw) in self.kafka.raw.iter().enumerate() {
            let watched = self
                .watch
                .iter()
                .any(|w| w.database == raw.database && w.collections.contains(&raw.collection));
            if !watched {
                return Err((
                    format!("kafka.raw[{i}]"),
                    format!(
                        "{}.{} is not watched (see [[watch]])",
                        raw.database, raw.collection
                    ),
                ));
            }
            let memory = &self.memory;
            let typed = (raw.database == self.payments.database
                && raw.collection == self.payments.collection)
                || (raw.database == memory.database
                    && [&memory.short_term, &memory.episodic, &memory.semantic]
                        .contains(&&raw.collection));
            if typed {
                return Err((
                    format!("kafka.raw[{i}]"),
                    format!(
                        "{}.{} is published as typed events (payments or memory); raw \
                         passthrough is for other collections",
                        raw.database, raw.collection
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_engine(&self) -> Result<(), (String, String)> {
        const KNOWN: [&str; 8] = [
            "insert",
            "update",
            "replace",
            "delete",
            "drop",
            "rename",
            "dropDatabase",
            "invalidate",
        ];
        let types = &self.engine.operation_types;
        if types.is_empty() {
            return Err((
                "engine.operation_types".into(),
                "list at least one operation type".into(),
            ));
        }
        for (i, t) in types.iter().enumerate() {
            if !KNOWN.contains(&t.as_str()) {
                return Err((
                    format!("engine.operation_types[{i}]"),
                    format!("unknown operation type `{t}` (known: {})", KNOWN.join(", ")),
                ));
            }
        }
        if self.engine.max_in_flight_events == 0 {
            return Err((
                "engine.max_in_flight_events".into(),
                "must be at least 1".into(),
            ));
        }
        if !(1..=100_000).contains(&self.engine.batch_size) {
            return Err((
                "engine.batch_size".into(),
                "must be from 1 to 100000".into(),
            ));
        }
        if self.http.address.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "http.address".into(),
                format!(
                    "`{}` is not a socket address like 127.0.0.1:8080",
                    self.http.address
                ),
            ));
        }
        Ok(())
    }
}

fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("database name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!("database name `{name}` is longer than 63 bytes"));
    }
    if let Some(bad) = name.chars().find(|c| "/\\. \"$\0".contains(*c)) {
        return Err(format!(
            "database name `{name}` contains `{bad}`, which MongoDB does not allow"
        ));
    }
    Ok(())
}

fn check_collection_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("collection name is empty".into());
    }
    if name.contains('$') || name.contains('\0') {
        return Err(format!("collection name `{name}` contains `$` or NUL"));
    }
    if name.starts_with("system.") {
        return Err(format!(
            "`{name}` is a system collection; change streams do not report them"
        ));
    }
    Ok(())
}
