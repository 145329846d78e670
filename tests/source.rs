//! Every export says who wrote it: a stable `source` id per data directory (generated
//! once, kept beside the key), per memory-only collector from the config, validated.

mod common;

use arbiter_events::{
    BuildError, Collector, Config, ConfigError, Cursor, DataDir, ExportRequest, MAX_SOURCE_LEN,
    read_export,
};

use common::Result;

fn everything() -> ExportRequest {
    ExportRequest::after(Cursor::START)
}

/// A collector over `dir` with `source` configured (or not), shut down after recording
/// a few events; returns the source its export carried.
fn write_dir(dir: &std::path::Path, source: Option<&str>) -> Result<Option<String>> {
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.to_owned());
    config.source = source.map(str::to_owned);
    let collector = Collector::new(config)?;
    let events = common::read_events("fixtures/events/all_variants.jsonl")?;
    for event in events.iter().take(3) {
        collector.record(event.clone())?;
    }
    collector.flush(common::FLUSH_TIMEOUT)?;
    let export = collector.export(&everything())?;
    collector.shutdown(common::FLUSH_TIMEOUT)?;
    Ok(export.header().source.clone())
}

#[test]
fn smoke() -> Result<()> {
    let config = Config::from_toml_str("source = \"arbiter-eu-1\"\n")?;
    let export = common::export_stream(config, &[])?;
    let file = read_export(export.to_msgpack().as_slice())?;
    assert_eq!(file.header.source.as_deref(), Some("arbiter-eu-1"));
    Ok(())
}

#[test]
fn a_memory_only_collector_without_a_configured_source_is_named_by_its_key() -> Result<()> {
    let export = common::export_stream(Config::default(), &[])?;
    let key_id = export.header().key_id.clone().ok_or("no key id")?;
    assert_eq!(export.header().source, Some(format!("mem-{key_id}")));
    // The same key gives the same source: exports stay deterministic.
    let again = common::export_stream(Config::default(), &[])?;
    assert_eq!(again.header().source, export.header().source);
    Ok(())
}

#[test]
fn an_invalid_source_is_refused_with_a_typed_error() -> Result<()> {
    let long = "a".repeat(MAX_SOURCE_LEN + 1);
    for bad in ["", "arbiter 1", "a/b", "ärbiter", "x\n", long.as_str()] {
        let mut config = Config::default();
        config.source = Some(bad.to_owned());
        let result = config.validate();
        assert!(
            matches!(&result, Err(ConfigError::InvalidSource { value }) if value == bad),
            "{bad:?}: {result:?}"
        );
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("source must be 1 to 64"), "{message}");
        let built = Collector::new(config);
        assert!(
            matches!(
                built,
                Err(BuildError::Config(ConfigError::InvalidSource { .. }))
            ),
            "{bad:?}"
        );
    }
    let text = format!("source = \"{long}\"\n");
    assert!(matches!(
        Config::from_toml_str(&text),
        Err(ConfigError::InvalidSource { .. })
    ));
    for good in [
        "a",
        "arbiter-eu-1",
        "host_7.prod",
        &"z".repeat(MAX_SOURCE_LEN),
    ] {
        let mut config = Config::default();
        config.source = Some(good.to_owned());
        assert!(config.validate().is_ok(), "{good:?}");
    }
    Ok(())
}

#[test]
fn a_data_directory_generates_its_source_once_and_keeps_it_beside_the_key() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    let first = write_dir(&dir, None)?.ok_or("no source")?;
    let stored = std::fs::read_to_string(dir.join("source"))?;
    assert_eq!(stored, format!("{first}\n"));
    assert!(first.starts_with("src-") && first.len() == 20, "{first}");
    assert!(dir.join("key").exists());
    // Reopened: the same id.
    assert_eq!(write_dir(&dir, None)?.as_deref(), Some(first.as_str()));
    // Another process reading the directory exports under the same id.
    let from_reader = DataDir::open(&dir)?.export(&everything())?;
    assert_eq!(from_reader.header().source.as_deref(), Some(first.as_str()));
    // Another directory: another id.
    let other = write_dir(&tmp.path().join("other"), None)?;
    assert_ne!(other.as_deref(), Some(first.as_str()));
    Ok(())
}

#[test]
fn a_configured_source_overrides_the_directory_s_and_is_stored_for_readers() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    write_dir(&dir, None)?;
    assert_eq!(
        write_dir(&dir, Some("arbiter-eu-1"))?.as_deref(),
        Some("arbiter-eu-1")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("source"))?,
        "arbiter-eu-1\n"
    );
    let from_reader = DataDir::open(&dir)?.export(&everything())?;
    assert_eq!(from_reader.header().source.as_deref(), Some("arbiter-eu-1"));
    // Without the setting, the stored id stays.
    assert_eq!(write_dir(&dir, None)?.as_deref(), Some("arbiter-eu-1"));
    Ok(())
}

#[test]
fn a_damaged_source_file_is_refused_naming_the_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("data");
    write_dir(&dir, None)?;
    std::fs::write(dir.join("source"), "not a source id\n")?;
    let mut config = Config::default();
    config.storage.data_dir = Some(dir.clone());
    let result = Collector::new(config);
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("source") && message.contains("not a source id"),
        "{message}"
    );
    let exported = DataDir::open(&dir)?.export(&everything());
    assert!(exported.is_err());
    Ok(())
}

#[test]
fn the_source_cannot_change_while_the_collector_runs() -> Result<()> {
    let collector = Collector::new(Config::default())?;
    let result = collector.update_config(|c| c.source = Some("renamed".to_owned()));
    assert!(
        matches!(result, Err(ConfigError::NotLive { field: "source" })),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn the_collector_reports_its_source() -> Result<()> {
    let mut config = Config::default();
    config.source = Some("arbiter-eu-1".to_owned());
    let collector = Collector::new(config)?;
    assert_eq!(collector.source(), "arbiter-eu-1");
    let export = collector.export(&everything())?;
    assert_eq!(export.header().source.as_deref(), Some(collector.source()));
    Ok(())
}
