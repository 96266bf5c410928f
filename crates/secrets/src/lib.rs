//! Named secrets (API keys, tokens), kept in one file encrypted with ChaCha20-Poly1305.
//!
//! Where the file's 32-byte key lives, first match wins:
//! 1. `STOCKADE_SECRET_KEY` (64 hex digits): for machines where the key should come from
//!    elsewhere (a CI secret, a KMS-fetched value).
//! 2. An existing key file beside the store (`secrets.key`, mode 0600).
//! 3. The OS keychain, where one answers (on Linux: a Secret Service such as GNOME Keyring or
//!    KWallet on the session D-Bus), under service `stockade` and the home's path. Then nothing
//!    on disk decrypts the store: reading the values needs the user's unlocked keychain.
//! 4. A new key file.
//!
//! `STOCKADE_SECRET_BACKEND=file` skips the keychain; `=keychain` requires it. The values stay in
//! the encrypted file in every case, so names can be listed without the keychain and the store
//! behaves the same wherever the key lives. A daemon started outside the user's session cannot
//! reach a session keychain: give it `STOCKADE_SECRET_KEY` or a key file. Values are only ever
//! decrypted to be put into an exec's environment; listing shows names only.
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
/// `auto` (default), `file` or `keychain`.
pub const BACKEND_ENV: &str = "STOCKADE_SECRET_BACKEND";

/// Where the key of a store is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File,
    Keychain,
}

/// The OS keychain, reached through the `keyring` crate. Calls run on a thread of their own:
/// the Secret Service client has its own executor and must not block an async runtime's thread.
mod keychain {
    use stockade_core::{Error, Result};

    const SERVICE: &str = "stockade";

    /// Whether a keychain could be there at all (a session bus to ask, on Linux).
    pub fn present() -> bool {
        cfg!(target_os = "linux") && std::env::var("DBUS_SESSION_BUS_ADDRESS").is_ok_and(|v| !v.is_empty())
    }

    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        std::thread::spawn(f)
            .join()
            .map_err(|_| Error::backend("keychain", "the keychain client failed"))
    }

    /// The hex key stored for `account`; `Ok(None)` when the keychain has none.
    #[cfg(target_os = "linux")]
    pub fn get(account: &str) -> Result<Option<String>> {
        let account = account.to_owned();
        on_thread(
            move || match keyring::Entry::new(SERVICE, &account).and_then(|e| e.get_password()) {
                Ok(v) => Ok(Some(v)),
                Err(keyring::Error::NoEntry) => Ok(None),
                Err(e) => Err(Error::backend("keychain", e)),
            },
        )?
    }

    #[cfg(target_os = "linux")]
    pub fn set(account: &str, value: &str) -> Result<()> {
        let (account, value) = (account.to_owned(), value.to_owned());
        on_thread(move || {
            keyring::Entry::new(SERVICE, &account)
                .and_then(|e| e.set_password(&value))
                .map_err(|e| Error::backend("keychain", e))
        })?
    }

    #[cfg(not(target_os = "linux"))]
    pub fn get(_account: &str) -> Result<Option<String>> {
        Err(Error::unsupported(
            "secrets",
            "keychain",
            "no keychain backend on this OS yet",
        ))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn set(_account: &str, _value: &str) -> Result<()> {
        Err(Error::unsupported(
            "secrets",
            "keychain",
            "no keychain backend on this OS yet",
        ))
    }
}

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

    /// The keychain account of this store: its home.
    fn account(&self) -> String {
        self.file
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Where this store's key is (or would be made).
    pub fn key_source(&self) -> Result<KeySource> {
        if std::env::var(KEY_ENV).is_ok() {
            return Ok(KeySource::Env);
        }
        let backend = std::env::var(BACKEND_ENV).unwrap_or_default();
        match backend.as_str() {
            "" | "auto" => {}
            "file" => return Ok(KeySource::File),
            "keychain" => {
                return if keychain::present() {
                    Ok(KeySource::Keychain)
                } else {
                    Err(Error::invalid(
                        BACKEND_ENV,
                        "keychain: no OS keychain answers here (no session D-Bus)",
                    ))
                }
            }
            other => {
                return Err(Error::invalid(
                    BACKEND_ENV,
                    format!("{other:?}: expected auto, file or keychain"),
                ))
            }
        }
        if self.key_file.exists() || !keychain::present() {
            return Ok(KeySource::File);
        }
        Ok(KeySource::Keychain)
    }

    fn key(&self, create: bool) -> Result<[u8; 32]> {
        match self.key_source()? {
            KeySource::Env => {
                let v = std::env::var(KEY_ENV).unwrap_or_default();
                return parse_hex_key(&v)
                    .ok_or_else(|| Error::invalid(KEY_ENV, "expected 64 hex digits (32 bytes)"));
            }
            KeySource::Keychain => {
                let account = self.account();
                return match keychain::get(&account)? {
                    Some(v) => parse_hex_key(&v).ok_or_else(|| {
                        Error::invalid("secrets key", format!("the keychain's entry for {account} is not 64 hex digits"))
                    }),
                    None if create => {
                        let key: [u8; 32] = random()?;
                        keychain::set(&account, &hex(&key))?;
                        Ok(key)
                    }
                    None => Err(Error::invalid(
                        "secrets key",
                        format!("the keychain has no key for {account}: the store's key is elsewhere ({KEY_ENV} or a key file)"),
                    )),
                };
            }
            KeySource::File => {}
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::invalid(
                "secrets key",
                format!(
                    "{} is missing: the secret store key is elsewhere ({KEY_ENV}, or the OS keychain: {BACKEND_ENV})",
                    self.key_file.display()
                ),
            )),
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

    /// An agent's key `name`: the process environment first (when set and non-empty), then this
    /// store. What `stockade task` and the daemon's tasks both look keys up with.
    pub fn env_or_stored(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| self.get(name).ok().flatten())
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
