//! Bearer tokens: one for recording, one for exporting (which may also record).

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::ServeError;

/// The folder of the data directory that holds the token files.
pub const TOKEN_DIR: &str = "server";
/// The record token's file name inside [`TOKEN_DIR`].
pub const RECORD_TOKEN_FILE: &str = "record.token";
/// The export token's file name inside [`TOKEN_DIR`].
pub const EXPORT_TOKEN_FILE: &str = "export.token";
/// The environment variable that gives the record token.
pub const RECORD_TOKEN_ENV: &str = "ARBITER_EVENTS_RECORD_TOKEN";
/// The environment variable that gives the export token.
pub const EXPORT_TOKEN_ENV: &str = "ARBITER_EVENTS_EXPORT_TOKEN";
/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;
/// The most bytes read from a token file.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Role {
    /// `POST /v1/events` and the task routes.
    Record,
    /// Everything: export, consumers, stats, report, metrics, and recording.
    Export,
}

impl Role {
    /// The role's name, as used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Record => "record",
            Role::Export => "export",
        }
    }
}

/// The two tokens the server accepts. Only their BLAKE3 hashes are kept; a presented
/// token is hashed and compared in constant time.
#[derive(Clone)]
pub struct Tokens {
    record: blake3::Hash,
    export: blake3::Hash,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens(..)")
    }
}

/// A token that was generated because none existed; print it once.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GeneratedToken {
    /// Which token.
    pub role: Role,
    /// The file it was written to (owner-only permissions).
    pub path: PathBuf,
    /// The token.
    pub token: String,
}

impl fmt::Debug for GeneratedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedToken")
            .field("role", &self.role)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Where each token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// The token itself (from an environment variable, say).
    Value(String),
    /// A file holding it; generated there (owner-only) when the file does not exist.
    File(PathBuf),
}

impl Tokens {
    /// Tokens from their values.
    ///
    /// # Errors
    /// [`ServeError::Token`] for a token shorter than [`MIN_TOKEN_LEN`] or holding
    /// whitespace or control characters, or equal record and export tokens.
    pub fn new(record: &str, export: &str) -> Result<Tokens, ServeError> {
        check(Role::Record, record, "the value")?;
        check(Role::Export, export, "the value")?;
        if record == export {
            return Err(ServeError::Token {
                reason: "the record and export tokens must differ".to_owned(),
            });
        }
        Ok(Tokens {
            record: blake3::hash(record.as_bytes()),
            export: blake3::hash(export.as_bytes()),
        })
    }

    /// Resolves both tokens: a value is taken as it is; a file is read, or created with a
    /// new random token (owner-only permissions) when it does not exist. Returns the
    /// tokens generated, to be shown once.
    ///
    /// # Errors
    /// [`ServeError::Token`] when a file cannot be read or written, or a token is invalid.
    pub fn resolve(
        record: TokenSource,
        export: TokenSource,
    ) -> Result<(Tokens, Vec<GeneratedToken>), ServeError> {
        let mut generated = Vec::new();
        let record = resolve_one(Role::Record, record, &mut generated)?;
        let export = resolve_one(Role::Export, export, &mut generated)?;
        Ok((Tokens::new(&record, &export)?, generated))
    }

    /// The default token file of `role` in `data_dir`.
    pub fn default_file(data_dir: &Path, role: Role) -> PathBuf {
        let name = match role {
            Role::Record => RECORD_TOKEN_FILE,
            Role::Export => EXPORT_TOKEN_FILE,
        };
        data_dir.join(TOKEN_DIR).join(name)
    }

    /// The role `presented` grants, if any. Both hashes are compared in constant time.
    pub fn role(&self, presented: &str) -> Option<Role> {
        let hash = blake3::hash(presented.as_bytes());
        // `blake3::Hash`'s equality is constant-time; both are always compared.
        let export = hash == self.export;
        let record = hash == self.record;
        if export {
            Some(Role::Export)
        } else if record {
            Some(Role::Record)
        } else {
            None
        }
    }
}

fn check(role: Role, token: &str, from: &str) -> Result<(), ServeError> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(ServeError::Token {
            reason: format!(
                "the {} token from {from} is {} bytes long, at least {MIN_TOKEN_LEN} are needed",
                role.as_str(),
                token.len()
            ),
        });
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ServeError::Token {
            reason: format!(
                "the {} token from {from} holds whitespace or a control character",
                role.as_str()
            ),
        });
    }
    Ok(())
}

fn resolve_one(
    role: Role,
    source: TokenSource,
    generated: &mut Vec<GeneratedToken>,
) -> Result<String, ServeError> {
    let path = match source {
        TokenSource::Value(token) => return Ok(token),
        TokenSource::File(path) => path,
    };
    let fail = |op: &str, e: &dyn fmt::Display| ServeError::Token {
        reason: format!(
            "cannot {op} the {} token file {}: {e}",
            role.as_str(),
            path.display()
        ),
    };
    match read_token(&path) {
        Ok(token) => {
            let token = token.trim().to_owned();
            check(role, &token, &path.display().to_string())?;
            return Ok(token);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail("read", &e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| fail("generate", &e))?;
    let token = hex::encode(bytes);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| fail("create the folder of", &e))?;
    }
    write_new(&path, &token).map_err(|e| fail("write", &e))?;
    generated.push(GeneratedToken {
        role,
        path,
        token: token.clone(),
    });
    Ok(token)
}

fn read_token(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_TOKEN_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Creates `path` (never replacing a file), owner-only, holding `token`, synced.
fn write_new(path: &Path, token: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_roles() {
        let tokens = Tokens::new("record-token-0123456789", "export-token-0123456789").unwrap();
        assert_eq!(tokens.role("record-token-0123456789"), Some(Role::Record));
        assert_eq!(tokens.role("export-token-0123456789"), Some(Role::Export));
        assert_eq!(tokens.role("record-token-012345678"), None);
        assert_eq!(tokens.role(""), None);
        assert_eq!(format!("{tokens:?}"), "Tokens(..)");
    }

    #[test]
    fn short_or_equal_tokens_are_refused() {
        assert!(Tokens::new("short", "export-token-0123456789").is_err());
        assert!(Tokens::new("same-token-0123456789", "same-token-0123456789").is_err());
        assert!(Tokens::new("has space-0123456789", "export-token-0123456789").is_err());
    }

    #[test]
    fn files_are_generated_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = Tokens::default_file(dir.path(), Role::Record);
        let e = Tokens::default_file(dir.path(), Role::Export);
        let (first, generated) =
            Tokens::resolve(TokenSource::File(r.clone()), TokenSource::File(e.clone())).unwrap();
        assert_eq!(generated.len(), 2);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&r).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (_, again) = Tokens::resolve(TokenSource::File(r), TokenSource::File(e)).unwrap();
        assert!(again.is_empty());
        assert_eq!(first.role(&generated[0].token), Some(Role::Record));
        assert_eq!(first.role(&generated[1].token), Some(Role::Export));
    }
}
