//! The conformance suite against the native driver (needs user namespaces; as root in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use stockade_conformance::{conformance_suite, skip, Harness};
use stockade_core::{Driver, SandboxSpec};
use stockade_native::{Layout, NativeDriver};

struct Native {
    home: std::path::PathBuf,
}

impl Harness for Native {
    fn driver(&self) -> Arc<dyn Driver> {
        let agent = stockade_native::driver::find_agent().unwrap();
        Arc::new(NativeDriver::new(Layout::at(&self.home), agent).unwrap())
    }
    fn spec(&self) -> SandboxSpec {
        SandboxSpec::default()
    }
}

fn native() -> Option<Native> {
    if let Err(why) = stockade_native::driver::user_namespaces_available() {
        skip(&why);
        return None;
    }
    if let Err(e) = stockade_native::driver::find_agent() {
        skip(&format!("{e} (build it with cargo build -p stockade-agent)"));
        return None;
    }
    // One home for the whole test binary, cleaned by the tests' own destroys.
    let home = std::env::temp_dir().join(format!("stockade-conformance-{}", std::process::id()));
    Some(Native { home })
}

conformance_suite!(native);
