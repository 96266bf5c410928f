//! Drivers as plugins. Each driver crate exports a [`DriverFactory`] (usually through a
//! `register(&mut Registry)` function); the binary assembles a [`Registry`] from an explicit
//! [`DriverConfig`] and everything else (router, daemon, CLI, tasks) asks the registry by name.
//! A driver that has more to say than the [`Driver`] trait (availability, facts for `info`,
//! circuit breakers, garbage collection, images) answers through [`DriverAdmin`].
//!
//! Nothing here reads the environment: the binary captures what drivers may consult into
//! [`DriverConfig::env`] once, so a daemon built with another home never splits its state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::driver::Driver;
use crate::error::{Error, Result};

/// Where slow steps (image builds, pulls) report progress, one line at a time.
pub type ProgressSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What every driver is built from. Made by the binary (the CLI or `stockade serve`), or by a
/// test with whatever it needs; libraries never look further than this.
#[derive(Clone)]
pub struct DriverConfig {
    /// `$STOCKADE_HOME`: every driver keeps its state below it.
    pub home: PathBuf,
    /// The `stockade-agent` binary the caller named, if any (else drivers look beside the
    /// running executable and along `PATH` from [`DriverConfig::env`]).
    pub agent: Option<PathBuf>,
    /// The environment drivers may consult (engine endpoints such as `DOCKER_HOST`, `PATH`,
    /// driver knobs), captured once by the binary.
    pub env: BTreeMap<String, String>,
    /// Progress of slow steps.
    pub progress: ProgressSink,
}

impl std::fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverConfig")
            .field("home", &self.home)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl DriverConfig {
    /// A config over `home` with an empty environment and progress going nowhere.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        DriverConfig {
            home: home.into(),
            agent: None,
            env: BTreeMap::new(),
            progress: Arc::new(|_| {}),
        }
    }

    /// A set, non-empty variable of [`DriverConfig::env`].
    pub fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// The directories of `PATH` in [`DriverConfig::env`].
    pub fn path_dirs(&self) -> Vec<PathBuf> {
        self.var("PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

/// Makes one driver. Registered once per name; the registry builds the driver on first use, so a
/// command on a native sandbox never looks for a container engine.
pub trait DriverFactory: Send + Sync {
    /// The name users type (`--driver NAME`), unique in a registry.
    fn name(&self) -> &'static str;
    /// One line for `stockade info` and `/api/drivers`.
    fn description(&self) -> &'static str;
    /// Whether the driver runs images (so a task's default image applies to it).
    fn takes_images(&self) -> bool {
        false
    }
    /// Builds the driver. Cheap and local: no engine or remote service is contacted here.
    fn build(&self, config: &DriverConfig) -> Result<Arc<dyn Driver>>;
}

/// One breaker of an engine or service a driver talks to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CircuitInfo {
    /// The endpoint behind the breaker.
    pub endpoint: String,
    /// `closed`, `open` or `halfopen`.
    pub state: String,
    /// Recent failures counted.
    pub failures: u32,
}

/// What `stockade info` prints for a driver: one summary line, more lines under it, and the same
/// as JSON for `--json` and the API.
#[derive(Debug, Clone, Default)]
pub struct DriverFacts {
    /// After `yes: ` in `info` (say, the engine and its version).
    pub summary: String,
    /// Label and value pairs printed under the driver.
    pub details: Vec<(String, String)>,
    /// Everything above (and more) as data.
    pub json: serde_json::Value,
}

/// Builds and imports images for drivers that run them.
#[async_trait]
pub trait ImageBuilder: Send + Sync {
    /// Builds the driver's base image (Debian from packages); returns its tag.
    async fn base(
        &self,
        scratch: &std::path::Path,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<String>;
    /// Builds the image of a context directory with a Dockerfile under `tag`.
    async fn build(
        &self,
        dir: &std::path::Path,
        tag: &str,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<()>;
    /// Imports a root filesystem tarball as image `name`.
    async fn import(
        &self,
        tarball: &std::path::Path,
        name: &str,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<()>;
}

/// The optional administrative side of a driver. Everything has a default, so a driver
/// implements only what it has.
#[async_trait]
pub trait DriverAdmin: Send + Sync {
    /// Whether sandboxes can be made now; the error says why not.
    async fn probe(&self) -> Result<()> {
        Ok(())
    }
    /// What `info` shows. Implies [`DriverAdmin::probe`]: facts that cannot be read mean the
    /// driver is not usable.
    async fn facts(&self) -> Result<DriverFacts> {
        self.probe().await.map(|()| DriverFacts::default())
    }
    /// Circuit breakers of the engines or services the driver talks to.
    fn circuits(&self) -> Vec<CircuitInfo> {
        Vec::new()
    }
    /// Removes what this home made but has no record of (containers, networks); returns what was
    /// removed. A backend that is not there has nothing to collect.
    async fn gc(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// The driver's image builder, when it runs images.
    fn images(&self) -> Option<&dyn ImageBuilder> {
        None
    }
}

struct Entry {
    factory: Box<dyn DriverFactory>,
    built: Mutex<Option<Arc<dyn Driver>>>,
}

/// The drivers of one process, by name, in registration order. The first registered is the
/// default for a spec that names none.
pub struct Registry {
    config: DriverConfig,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.config)
            .field("drivers", &self.names())
            .finish()
    }
}

impl Registry {
    pub fn new(config: DriverConfig) -> Self {
        Registry {
            config,
            entries: Vec::new(),
        }
    }

    /// Adds a driver. A second factory with a name already taken replaces the first (a test's
    /// fake over a real one, say).
    pub fn register(&mut self, factory: impl DriverFactory + 'static) -> &mut Self {
        let entry = Entry {
            factory: Box::new(factory),
            built: Mutex::new(None),
        };
        match self
            .entries
            .iter_mut()
            .find(|e| e.factory.name() == entry.factory.name())
        {
            Some(old) => *old = entry,
            None => self.entries.push(entry),
        }
        self
    }

    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// The names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.factory.name()).collect()
    }

    /// The driver a spec gets when it names none.
    pub fn default_name(&self) -> Option<&'static str> {
        self.entries.first().map(|e| e.factory.name())
    }

    /// The factory registered as `name`.
    pub fn factory(&self, name: &str) -> Result<&dyn DriverFactory> {
        self.entries
            .iter()
            .find(|e| e.factory.name() == name)
            .map(|e| &*e.factory)
            .ok_or_else(|| self.unknown(name))
    }

    /// The error for a name that is not registered, listing those that are.
    pub fn unknown(&self, name: &str) -> Error {
        Error::invalid(
            "driver",
            format!(
                "{name:?} is not a driver; known drivers: {}",
                self.names().join(", ")
            ),
        )
    }

    /// Checks that `name` is registered (empty means the default).
    pub fn check(&self, name: &str) -> Result<&'static str> {
        if name.is_empty() {
            return self
                .default_name()
                .ok_or_else(|| Error::invalid("driver", "no driver is registered"));
        }
        self.factory(name).map(|f| f.name())
    }

    /// The driver `name`, built on first use. A build that fails is tried again next time (the
    /// agent binary may have been installed since).
    pub fn driver(&self, name: &str) -> Result<Arc<dyn Driver>> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.factory.name() == name)
            .ok_or_else(|| self.unknown(name))?;
        let mut built = entry.built.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = &*built {
            return Ok(Arc::clone(d));
        }
        let driver = entry.factory.build(&self.config)?;
        *built = Some(Arc::clone(&driver));
        Ok(driver)
    }

    /// The drivers built so far (no factory is run).
    pub fn built(&self) -> Vec<Arc<dyn Driver>> {
        self.entries
            .iter()
            .filter_map(|e| e.built.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect()
    }
}

/// A driver's availability as `info` and `/api/drivers` report it: built, then probed through
/// its [`DriverAdmin`]; the error of either is the reason.
pub async fn availability(registry: &Registry, name: &str) -> Result<(Arc<dyn Driver>, DriverFacts)> {
    let driver = registry.driver(name)?;
    let facts = match driver.admin() {
        Some(admin) => admin.facts().await?,
        None => DriverFacts::default(),
    };
    Ok((driver, facts))
}
