//! The key in the OS keychain. It needs a session bus with a Secret Service, so it is `#[ignore]`d
//! in the plain workspace run, and `scripts/test` runs it with `--ignored` under `dbus-run-session`
//! with GNOME Keyring unlocked; there a missing keychain fails it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use stockade_secrets::{KeySource, SecretStore, BACKEND_ENV};

#[test]
#[ignore = "needs a session bus with a Secret Service: scripts/test runs it under dbus-run-session"]
fn the_key_lives_in_the_keychain_and_nothing_on_disk_decrypts_the_store() {
    assert!(
        std::env::var("DBUS_SESSION_BUS_ADDRESS").is_ok(),
        "no session bus: run under dbus-run-session with a Secret Service"
    );
    std::env::remove_var("STOCKADE_SECRET_KEY");
    std::env::remove_var(BACKEND_ENV);
    let dir = tempfile::tempdir().unwrap();
    let store = SecretStore::new(dir.path());
    // With a session bus and no key file, the keychain is the default.
    assert_eq!(store.key_source().unwrap(), KeySource::Keychain);
    store.set("GITHUB_TOKEN", "ghp-in-the-keychain").unwrap();
    assert!(!dir.path().join("secrets.key").exists(), "a key file was written");
    assert_eq!(store.names().unwrap(), ["GITHUB_TOKEN"]);
    // Another handle (another process would do the same) reads it through the keychain.
    let again = SecretStore::new(dir.path());
    assert_eq!(
        again.get("GITHUB_TOKEN").unwrap().as_deref(),
        Some("ghp-in-the-keychain")
    );
    // Without the keychain, what is on disk cannot be read.
    std::env::set_var(BACKEND_ENV, "file");
    let err = again.names().unwrap_err().to_string();
    assert!(err.contains("secrets.key is missing"), "{err}");
    std::env::set_var(BACKEND_ENV, "nonsense");
    let err = again.names().unwrap_err().to_string();
    assert!(err.contains(BACKEND_ENV), "{err}");
    std::env::remove_var(BACKEND_ENV);
}
