//! Environment overrides: `ARBITER_EVENTS_<SECTION>_<KEY>` for every key, validated like
//! the file, errors naming the variable, precedence code > env > file > default.
//!
//! Every test but `the_process_environment_is_read_by_load` uses an injected list of
//! variables, so none races on the process environment.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use arbiter_events::{
    AnonymizationMode, Config, ConfigError, Durability, ENV_KEYS, FreeText, OnDamage, Overflow,
};

use common::Result;

const FULL: &str = "fixtures/config/full.toml";

fn full() -> Result<Config> {
    Ok(Config::from_toml_str(&common::read_text(FULL)?)?)
}

/// A value for every key, each different from the default.
fn every_key() -> Vec<(&'static str, &'static str)> {
    vec![
        ("enabled", "false"),
        ("source", "arbiter-7.eu_west"),
        ("queue.capacity", "64"),
        ("queue.overflow", "{ block_for_ms = 7 }"),
        ("retention.max_age", "250ms"),
        ("retention.max_events", "5000"),
        ("retention.max_bytes", "1048576"),
        ("anonymization.mode", "off"),
        ("anonymization.free_text", "keep"),
        (
            "anonymization.key_hex",
            "0101010101010101010101010101010101010101010101010101010101010101",
        ),
        ("anonymization.attribute_keys", "[\"user_id\"]"),
        ("anonymization.memo_capacity", "16"),
        ("limits.max_id_bytes", "64"),
        ("limits.max_string_bytes", "512"),
        ("limits.max_collection_len", "32"),
        ("limits.max_attribute_depth", "3"),
        ("limits.max_attribute_entries", "100"),
        ("limits.max_occurred_past_secs", "600"),
        ("limits.max_occurred_future_secs", "2"),
        ("worker.batch_size", "64"),
        ("worker.tick_ms", "50"),
        ("storage.data_dir", "/var/lib/arbiter events"),
        ("storage.durability", "buffered"),
        ("storage.segment_bytes", "8192"),
        ("storage.max_disk_bytes", "65536"),
        ("storage.on_damage", "truncate"),
        ("analytics.enabled", "false"),
        ("analytics.bucket_secs", "30"),
        ("analytics.buckets", "120"),
        ("analytics.max_agents", "50"),
    ]
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (Config::env_var(k), (*v).to_owned()))
        .collect()
}

#[test]
fn smoke() -> Result<()> {
    let config = Config::default().with_env_iter([("ARBITER_EVENTS_RETENTION_MAX_EVENTS", "7")])?;
    assert_eq!(config.retention.max_events, 7);
    assert_eq!(
        Config::default().with_env_iter(Vec::<(String, String)>::new())?,
        Config::default()
    );
    Ok(())
}

#[test]
fn every_key_has_a_variable() -> Result<()> {
    let given = every_key();
    // Each listed key is tested, and `key_file` / `max_age_secs` have their own cases.
    for key in ENV_KEYS {
        let covered = given.iter().any(|(k, _)| k == key)
            || ["anonymization.key_file", "retention.max_age_secs"].contains(key);
        assert!(covered, "{key} has no case");
    }
    let config = Config::default().with_env_iter(vars(&given))?;
    assert!(!config.enabled);
    assert_eq!(config.source.as_deref(), Some("arbiter-7.eu_west"));
    assert_eq!(config.queue.capacity, 64);
    assert_eq!(
        config.queue.overflow,
        Overflow::BlockFor(Duration::from_millis(7))
    );
    assert_eq!(config.retention.max_age, Some(Duration::from_millis(250)));
    assert_eq!(config.retention.max_events, 5000);
    assert_eq!(config.retention.max_bytes, 1 << 20);
    assert_eq!(config.anonymization.mode, AnonymizationMode::Off);
    assert_eq!(config.anonymization.free_text, FreeText::Keep);
    assert!(config.anonymization.key_hex.is_some());
    assert_eq!(config.anonymization.attribute_keys, ["user_id"]);
    assert_eq!(config.anonymization.memo_capacity, 16);
    assert_eq!(config.limits.max_id_bytes, 64);
    assert_eq!(config.limits.max_string_bytes, 512);
    assert_eq!(config.limits.max_collection_len, 32);
    assert_eq!(config.limits.max_attribute_depth, 3);
    assert_eq!(config.limits.max_attribute_entries, 100);
    assert_eq!(config.limits.max_occurred_past_secs, 600);
    assert_eq!(config.limits.max_occurred_future_secs, 2);
    assert_eq!(config.worker.batch_size, 64);
    assert_eq!(config.worker.tick_ms, 50);
    assert_eq!(
        config.storage.data_dir,
        Some(PathBuf::from("/var/lib/arbiter events"))
    );
    assert_eq!(config.storage.durability, Durability::Buffered);
    assert_eq!(config.storage.segment_bytes, 8192);
    assert_eq!(config.storage.max_disk_bytes, 65536);
    assert_eq!(config.storage.on_damage, OnDamage::Truncate);
    insta::assert_snapshot!("env_every_key", config.to_toml_string()?);
    // key_file, in a config without key_hex.
    let config = Config::default()
        .with_env_iter(vars(&[("anonymization.key_file", "/etc/arbiter/key.hex")]))?;
    assert_eq!(
        config.anonymization.key_file,
        Some(PathBuf::from("/etc/arbiter/key.hex"))
    );
    Ok(())
}

#[test]
fn env_overrides_the_file_and_code_overrides_env() -> Result<()> {
    let file = full()?;
    assert_eq!(file.retention.max_age_secs, 3600);
    let mut config = file.clone().with_env_iter(vars(&[
        ("retention.max_events", "123"),
        ("retention.max_age", "2s"),
    ]))?;
    assert_eq!(config.retention.max_events, 123, "env over file");
    // The variable replaces the file's max_age_secs rather than conflicting with it.
    assert_eq!(config.retention.max_age, Some(Duration::from_secs(2)));
    assert_eq!(
        config.retention.max_age_secs,
        arbiter_events::DEFAULT_MAX_AGE_SECS
    );
    assert_eq!(
        config.queue.capacity, file.queue.capacity,
        "file over default"
    );
    config.retention.max_events = 9;
    config.validate()?;
    assert_eq!(config.retention.max_events, 9, "code over env");
    // And back: max_age_secs from the environment replaces a max_age.
    let config = config.with_env_iter(vars(&[("retention.max_age_secs", "30")]))?;
    assert_eq!(
        (config.retention.max_age, config.retention.max_age_secs),
        (None, 30)
    );
    Ok(())
}

#[test]
fn unrelated_variables_are_left_alone() -> Result<()> {
    let config = Config::default().with_env_iter([
        ("ARBITER_EVENTS_KEY", "not a config key"),
        ("ARBITER_EVENTS_TEST_CASE", "x"),
        ("PATH", "/usr/bin"),
    ])?;
    assert_eq!(config, Config::default());
    Ok(())
}

/// Variables that must be refused, each naming the variable.
fn bad_vars() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        (
            "unknown key in a section",
            vec![("ARBITER_EVENTS_RETENTION_MAX_EVENTZ", "5")],
        ),
        (
            "wrong type",
            vec![("ARBITER_EVENTS_QUEUE_CAPACITY", "large")],
        ),
        (
            "unknown overflow policy",
            vec![("ARBITER_EVENTS_QUEUE_OVERFLOW", "drop_oldest")],
        ),
        ("out of range", vec![("ARBITER_EVENTS_QUEUE_CAPACITY", "0")]),
        (
            "bad duration",
            vec![("ARBITER_EVENTS_RETENTION_MAX_AGE", "soon")],
        ),
        (
            "duration out of range",
            vec![("ARBITER_EVENTS_RETENTION_MAX_AGE", "0ms")],
        ),
        (
            "bad key",
            vec![("ARBITER_EVENTS_ANONYMIZATION_KEY_HEX", "abcd")],
        ),
        (
            "cross-field rule",
            vec![("ARBITER_EVENTS_STORAGE_MAX_DISK_BYTES", "4096")],
        ),
        ("negative", vec![("ARBITER_EVENTS_WORKER_TICK_MS", "-1")]),
    ]
}

#[test]
fn bad_variables_are_refused_naming_the_variable() -> Result<()> {
    let mut messages = BTreeMap::new();
    for (name, given) in bad_vars() {
        let error = Config::default()
            .with_env_iter(given.clone())
            .err()
            .ok_or_else(|| format!("{name}: accepted"))?;
        let var = given[0].0;
        assert!(
            matches!(
                &error,
                ConfigError::Env { var: v, .. } | ConfigError::EnvInvalid { var: v, .. } if v == var
            ),
            "{name}: {error:?}"
        );
        assert!(error.to_string().starts_with(var), "{name}: {error}");
        messages.insert(name, error.to_string());
    }
    insta::assert_yaml_snapshot!("env_error_messages", messages);
    Ok(())
}

#[test]
fn a_rule_the_file_breaks_is_not_blamed_on_the_environment() -> Result<()> {
    let mut config = Config::default();
    config.worker.tick_ms = 0;
    let error = config
        .with_env_iter(vars(&[("retention.max_events", "10")]))
        .err()
        .ok_or("accepted")?;
    assert!(
        matches!(
            error,
            ConfigError::OutOfRange {
                field: "worker.tick_ms",
                ..
            }
        ),
        "{error:?}"
    );
    Ok(())
}

#[test]
fn the_process_environment_is_read_by_load() -> Result<()> {
    // The only test that reads the process environment. The variable is given to a
    // child run of this test, so no process's environment is ever changed under it.
    let var = Config::env_var("worker.tick_ms");
    let exe = std::env::current_exe()?;
    if std::env::var_os("ARBITER_EVENTS_TEST_ENV_CHILD").is_some() {
        let config = Config::load(Some(&common::path(FULL)))?;
        assert_eq!(config.worker.tick_ms, 42, "env over file");
        assert_eq!(config.queue.capacity, 1024, "file over default");
        return Ok(());
    }
    let child = std::process::Command::new(exe)
        .args([
            "--exact",
            "the_process_environment_is_read_by_load",
            "--test-threads=1",
        ])
        .env("ARBITER_EVENTS_TEST_ENV_CHILD", "1")
        .env(&var, "42")
        .output()?;
    assert!(
        child.status.success(),
        "the child run failed: {}\n{}",
        child.status,
        String::from_utf8_lossy(&child.stdout)
    );
    // Without the variable, the file's value stands.
    assert_eq!(Config::load(Some(&common::path(FULL)))?.worker.tick_ms, 100);
    Ok(())
}
