//! Bad `[analytics]` sections and `[[alerts]]` entries: each gives one typed error whose
//! message names the field (snapshotted).

use std::collections::BTreeMap;

use arbiter_events::{AlertRuleError, Config, ConfigError};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const GOOD: &str = "name = \"r\"\nkind = \"error_rate\"\nwindow_secs = 60\nthreshold = 0.5\n";

/// Bad configurations, each breaking one rule, with the error they must give.
fn bad() -> Vec<(&'static str, String)> {
    let rule = |extra: &str| format!("[[alerts]]\n{extra}");
    vec![
        (
            "analytics.bucket_secs zero",
            "[analytics]\nbucket_secs = 0\n".into(),
        ),
        (
            "analytics.bucket_secs over a day",
            "[analytics]\nbucket_secs = 86401\n".into(),
        ),
        (
            "analytics.buckets zero",
            "[analytics]\nbuckets = 0\n".into(),
        ),
        (
            "analytics.buckets too many",
            "[analytics]\nbuckets = 10081\n".into(),
        ),
        (
            "analytics.max_agents too many",
            "[analytics]\nmax_agents = 100001\n".into(),
        ),
        (
            "alerts duplicate name",
            format!("[[alerts]]\n{GOOD}\n[[alerts]]\n{GOOD}"),
        ),
        (
            "alerts empty name",
            rule("name = \"\"\nkind = \"error_rate\"\nwindow_secs = 60\nthreshold = 0.5\n"),
        ),
        (
            "alerts window not whole buckets",
            rule("name = \"r\"\nkind = \"error_rate\"\nwindow_secs = 90\nthreshold = 0.5\n"),
        ),
        (
            "alerts window beyond the buckets",
            rule("name = \"r\"\nkind = \"error_rate\"\nwindow_secs = 7200\nthreshold = 0.5\n"),
        ),
        (
            "alerts no limit",
            rule("name = \"r\"\nkind = \"latency_spike\"\nwindow_secs = 60\n"),
        ),
        (
            "alerts limit of another kind",
            rule("name = \"r\"\nkind = \"error_rate\"\nwindow_secs = 60\nmax_share = 0.5\n"),
        ),
        (
            "alerts rate above one",
            rule("name = \"r\"\nkind = \"error_rate\"\nwindow_secs = 60\nthreshold = 1.5\n"),
        ),
        (
            "alerts baseline without its span",
            rule(
                "name = \"r\"\nkind = \"latency_spike\"\nwindow_secs = 60\nbaseline_factor = 2.0\n",
            ),
        ),
        (
            "alerts baseline factor at most one",
            rule(
                "name = \"r\"\nkind = \"latency_spike\"\nwindow_secs = 60\nbaseline_factor = 1.0\nbaseline_secs = 600\n",
            ),
        ),
        (
            "alerts min_severity on another kind",
            rule(
                "name = \"r\"\nkind = \"error_rate\"\nwindow_secs = 60\nthreshold = 0.5\nmin_severity = \"high\"\n",
            ),
        ),
        (
            "alerts min_samples zero",
            rule(
                "name = \"r\"\nkind = \"error_rate\"\nwindow_secs = 60\nthreshold = 0.5\nmin_samples = 0\n",
            ),
        ),
    ]
}

#[test]
fn each_bad_analytics_or_alerts_config_gives_one_typed_error() -> TestResult {
    let mut messages = BTreeMap::new();
    for (name, text) in bad() {
        let error = Config::from_toml_str(&text)
            .err()
            .ok_or_else(|| format!("{name}: accepted"))?;
        if name.starts_with("analytics") {
            assert!(
                matches!(error, ConfigError::OutOfRange { field, .. } if field.starts_with("analytics.")),
                "{name}: {error:?}"
            );
        } else {
            assert!(
                matches!(
                    error,
                    ConfigError::Alert(
                        AlertRuleError::Field { .. } | AlertRuleError::DuplicateName { .. }
                    )
                ),
                "{name}: {error:?}"
            );
        }
        messages.insert(name, error.to_string());
    }
    insta::assert_yaml_snapshot!("analytics_config_errors", messages);
    Ok(())
}

#[test]
fn a_good_rule_and_section_round_trip_through_toml() -> TestResult {
    let text = format!("[analytics]\nbucket_secs = 30\nbuckets = 120\n\n[[alerts]]\n{GOOD}");
    let config = Config::from_toml_str(&text)?;
    assert_eq!(config.analytics.bucket_secs, 30);
    assert_eq!(config.alerts.len(), 1);
    let again = Config::from_toml_str(&config.to_toml_string()?)?;
    assert_eq!(again, config);
    Ok(())
}

#[test]
fn the_analytics_section_is_fixed_at_build() -> TestResult {
    let collector = arbiter_events::Collector::new(Config::default())?;
    let error = collector
        .update_config(|c| c.analytics.buckets = 10)
        .err()
        .ok_or("analytics changed live")?;
    assert!(
        matches!(error, ConfigError::NotLive { field: "analytics" }),
        "{error:?}"
    );
    Ok(())
}
