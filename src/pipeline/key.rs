//! Which anonymization key a collector uses.

use std::path::Path;

use crate::contract::config::AnonymizationConfig;
use crate::contract::key::{AnonymizationKey, KEY_ENV, KeyError, KeyOrigin};

/// Picks the key: explicit, then config hex, then key file, then environment, then the
/// data directory's own key (made on first use), then a random ephemeral key.
pub(crate) fn resolve_key(
    explicit: Option<AnonymizationKey>,
    config: &AnonymizationConfig,
    data_dir: Option<&Path>,
    rotation: crate::storage::log::KeyRotation,
) -> Result<(AnonymizationKey, KeyOrigin), crate::pipeline::error::BuildError> {
    if let Some(key) = explicit {
        return Ok((key, KeyOrigin::Explicit));
    }
    if let Some(hex) = &config.key_hex {
        return Ok((AnonymizationKey::from_hex(&hex.0)?, KeyOrigin::Config));
    }
    if let Some(path) = &config.key_file {
        return Ok((AnonymizationKey::from_file(path)?, KeyOrigin::File));
    }
    if let Ok(text) = std::env::var(KEY_ENV) {
        let key = AnonymizationKey::from_hex(&text).map_err(|e| KeyError::Env {
            source: Box::new(e),
        })?;
        return Ok((key, KeyOrigin::Environment));
    }
    if let Some(dir) = data_dir {
        return Ok((
            crate::storage::log::dir::key(dir, rotation)?,
            KeyOrigin::DataDir,
        ));
    }
    Ok((AnonymizationKey::generate()?, KeyOrigin::Ephemeral))
}
