//! Named secrets (API keys, tokens), kept in one file encrypted with ChaCha20-Poly1305.
//!
//! The key is 32 bytes from `STOCKADE_SECRET_KEY` (64 hex digits) when set — the choice for
//! machines where the key should live elsewhere (a CI secret, a KMS-fetched value) — or else from
//! a key file beside the store (`secrets.key`, mode 0600, made on first use). The key file keeps
//! values out of anything that copies the store alone (backups, support bundles, logs of `cat`);
//! it does not protect them from someone who can read both files as the same user: an OS
//! keychain would, and is a next step. Values are only ever decrypted to be put into an exec's
//! environment; listing shows names only.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use stockade_core::{Error, Result};

/// The environment variable that can carry the key.
pub const KEY_ENV: &str = "STOCKADE_SECRET_KEY";

const MAGIC: &[u8; 8] = b"STKSEC1\n";

/// The store under one Stockade home.
#[derive(Debug, Clone)]
pub struct SecretStore {
    file: PathBuf,
    key_file: PathBuf,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::backend("/dev/urandom", e))?;
    Ok(bytes)
}

fn parse_hex_key(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A secret's name: what `--secret NAME` and the store use; also a valid environment key.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "secret",
            format!("{name:?}: names are letters, digits and '_', not starting with a digit"),
        ))
    }
}

impl SecretStore {
    /// The store of the Stockade home `home`.
    pub fn new(home: &Path) -> Self {
        SecretStore {
            file: home.join("secrets.enc"),
            key_file: home.join("secrets.key"),
        }
    }

    fn key(&self, create: bool) -> Result<[u8; 32]> {
        if let Ok(v) = std::env::var(KEY_ENV) {
            return parse_hex_key(&v)
                .ok_or_else(|| Error::invalid(KEY_ENV, "expected 64 hex digits (32 bytes)"));
        }
        match std::fs::read_to_string(&self.key_file) {
            Ok(s) => parse_hex_key(&s).ok_or_else(|| {
                Error::invalid(
                    "secrets key",
                    format!("{}: expected 64 hex digits", self.key_file.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key: [u8; 32] = random()?;
                if let Some(dir) = self.key_file.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::backend(format!("create {}", dir.display()), e))?;
                }
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&self.key_file)
                    .and_then(|mut f| {
                        std::io::Write::write_all(&mut f, format!("{}\n", hex(&key)).as_bytes())
                    })
                    .map_err(|e| Error::backend(format!("write {}", self.key_file.display()), e))?;
                Ok(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound("secret store key".into()))
            }
            Err(e) => Err(Error::backend(format!("read {}", self.key_file.display()), e)),
        }
    }

    fn load(&self) -> Result<BTreeMap<String, String>> {
        let data = match std::fs::read(&self.file) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::backend(format!("read {}", self.file.display()), e)),
        };
        let bad = |why: &str| Error::backend(format!("secret store {}", self.file.display()), why);
        if data.len() < MAGIC.len() + 12 || &data[..MAGIC.len()] != MAGIC {
            return Err(bad("not a Stockade secret store"));
        }
        let key = self.key(false)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let (nonce, sealed) = data[MAGIC.len()..].split_at(12);
        let plain = cipher.decrypt(Nonce::from_slice(nonce), sealed).map_err(|_| {
            bad("cannot decrypt it with this key (STOCKADE_SECRET_KEY or secrets.key changed?)")
        })?;
        serde_json::from_slice(&plain).map_err(|e| bad(&e.to_string()))
    }

    fn save(&self, secrets: &BTreeMap<String, String>) -> Result<()> {
        let key = self.key(true)?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
        let nonce: [u8; 12] = random()?;
        let plain = serde_json::to_vec(secrets).map_err(|e| Error::backend("encode secrets", e))?;
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_slice())
            .map_err(|_| Error::backend("encrypt secrets", "failed"))?;
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        stockade_store::write_atomic(&self.file, &out, 0o600)
            .map_err(|e| Error::backend(format!("write {}", self.file.display()), e))
    }

    /// Stores (or replaces) `name`.
    pub fn set(&self, name: &str, value: &str) -> Result<()> {
        validate_name(name)?;
        let mut all = self.load()?;
        all.insert(name.to_owned(), value.to_owned());
        self.save(&all)
    }

    /// Removes `name`; an unknown name is an error naming it.
    pub fn remove(&self, name: &str) -> Result<()> {
        let mut all = self.load()?;
        if all.remove(name).is_none() {
            return Err(Error::NotFound(format!("secret {name}")));
        }
        self.save(&all)
    }

    /// The names, never the values.
    pub fn names(&self) -> Result<Vec<String>> {
        Ok(self.load()?.into_keys().collect())
    }

    /// The value of `name`, for an exec's environment only.
    pub fn get(&self, name: &str) -> Result<Option<String>> {
        Ok(self.load()?.remove(name))
    }

    /// Resolves `--secret NAME` or `--secret ENV=NAME` requests to (environment key, value).
    pub fn resolve(&self, requests: &[String]) -> Result<Vec<(String, String)>> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let all = self.load()?;
        requests
            .iter()
            .map(|r| {
                let (env, name) = r.split_once('=').unwrap_or((r, r));
                validate_name(env)?;
                let value = all.get(name).ok_or_else(|| {
                    Error::invalid(
                        "secret",
                        format!("{name:?} is not in the secret store (stockade secret set {name})"),
                    )
                })?;
                Ok((env.to_owned(), value.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_list_remove_and_nothing_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::new(dir.path());
        assert!(store.names().unwrap().is_empty());
        store.set("API_KEY", "sk-very-secret-value").unwrap();
        store.set("OTHER", "x").unwrap();
        assert_eq!(store.names().unwrap(), ["API_KEY", "OTHER"]);
        assert_eq!(
            store.get("API_KEY").unwrap().as_deref(),
            Some("sk-very-secret-value")
        );
        let raw = std::fs::read(dir.path().join("secrets.enc")).unwrap();
        assert!(!raw.windows(6).any(|w| w == b"secret"), "plaintext on disk");
        assert_eq!(
            store.resolve(&["MY_KEY=API_KEY".into()]).unwrap(),
            [("MY_KEY".to_owned(), "sk-very-secret-value".to_owned())]
        );
        let e = store.resolve(&["NOPE".into()]).unwrap_err().to_string();
        assert!(e.contains("\"NOPE\" is not in the secret store"), "{e}");
        store.remove("OTHER").unwrap();
        assert!(matches!(store.remove("OTHER"), Err(Error::NotFound(_))));
        assert!(store.set("1BAD", "x").is_err());
        // A different key cannot read it.
        std::fs::write(dir.path().join("secrets.key"), format!("{}\n", "00".repeat(32))).unwrap();
        assert!(store.names().unwrap_err().to_string().contains("cannot decrypt"));
    }

    #[test]
    fn hex_keys() {
        assert_eq!(parse_hex_key(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_hex_key("abc"), None);
        assert_eq!(hex(&[1, 255]), "01ff");
    }
}
