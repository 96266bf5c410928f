//! `fake`: a driver with no isolation and no processes, for tests of everything above the
//! driver seam (router, daemon, CLI, UI) without root or kernels. Sandboxes are records in the
//! home's record store (so the index routes to them like to any driver's); files live in memory;
//! execs understand `echo ARGS`, `true`, `false`, `exit N`, `cat` (stdin back) and `sleep SECS`.
//! Anything else is [`Error::CommandNotFound`].
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stockade_core::{
    Driver, DriverAdmin, DriverConfig, DriverFactory, DriverFacts, Error, ExecControl, ExecEvent, ExecExit,
    ExecRequest, ExecSession, FileKind, FileOp, FileReply, FileStat, ImageBuilder, OutputStream, Registry,
    Result, SandboxId, SandboxInfo, SandboxSpec, SandboxStatus, Stats, TtySize,
};
use stockade_store::{RecordStore, StoredRecord};
use tokio::sync::mpsc;

/// The name the fake registers as.
pub const NAME: &str = "fake";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: SandboxId,
    name: String,
    status: SandboxStatus,
    created_at: u64,
    spec: SandboxSpec,
}

impl StoredRecord for Record {
    fn id(&self) -> &SandboxId {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn created_at(&self) -> u64 {
        self.created_at
    }
    fn driver(&self) -> &str {
        NAME
    }
}

/// The in-memory driver over one home.
#[derive(Debug)]
pub struct FakeDriver {
    records: RecordStore<Record>,
    files: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    kept: Mutex<BTreeMap<String, Arc<Kept>>>,
}

/// A kept exec: every event so far, and a count that rises as more come.
struct Kept {
    events: Mutex<Vec<Result<ExecEvent>>>,
    count: tokio::sync::watch::Sender<usize>,
    control: Arc<dyn ExecControl>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept")
    }
}

impl Kept {
    fn follow(self: Arc<Self>, from_seq: u64) -> ExecSession {
        let control = Arc::clone(&self.control);
        let rx = self.count.subscribe();
        let events =
            futures::stream::unfold((self, rx, 0usize), move |(kept, mut rx, mut next)| async move {
                loop {
                    if next == usize::MAX {
                        return None;
                    }
                    let event = {
                        let events = kept.events.lock().unwrap_or_else(|p| p.into_inner());
                        events.get(next).map(|e| match e {
                            Ok(e) => Ok(e.clone()),
                            Err(e) => Err(Error::backend("fake exec", e.to_string())),
                        })
                    };
                    match event {
                        Some(Ok(e)) if e.seq() < from_seq => next += 1,
                        Some(event) => {
                            let last = matches!(event, Ok(ExecEvent::Exited { .. }) | Err(_));
                            next = if last { usize::MAX } else { next + 1 };
                            return Some((event, (kept, rx, next)));
                        }
                        None => rx.changed().await.ok()?,
                    }
                }
            });
        ExecSession {
            events: Box::pin(events),
            control,
        }
    }
}

impl FakeDriver {
    /// A fake whose records live under `home/fake`, indexed with the home's other drivers.
    pub fn new(home: impl Into<PathBuf>) -> Result<Self> {
        let home = home.into();
        let dir = home.join(NAME);
        Ok(FakeDriver {
            records: RecordStore::new(dir.join("records"), dir.join("lock"))
                .with_index(stockade_store::Index::of_home(&home), NAME)?,
            files: Mutex::new(BTreeMap::new()),
            kept: Mutex::new(BTreeMap::new()),
        })
    }

    fn info(r: &Record) -> SandboxInfo {
        SandboxInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            driver: NAME.into(),
            status: r.status,
            created_at: r.created_at,
            spec: r.spec.clone(),
            details: serde_json::Map::new(),
        }
    }

    fn running(&self, id: &SandboxId, operation: &str) -> Result<Record> {
        let r = self.records.load(id)?;
        if !r.status.can_exec() {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: r.status.to_string(),
                operation: operation.into(),
                needed: "running".into(),
            });
        }
        Ok(r)
    }

    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vec<u8>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes the fake.
#[derive(Debug, Clone, Copy, Default)]
pub struct FakeFactory;

impl DriverFactory for FakeFactory {
    fn name(&self) -> &'static str {
        NAME
    }
    fn description(&self) -> &'static str {
        "in memory, for tests: no isolation, no processes"
    }
    fn build(&self, config: &DriverConfig) -> Result<Arc<dyn Driver>> {
        Ok(Arc::new(FakeDriver::new(&config.home)?))
    }
}

/// Adds the fake to `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(FakeFactory);
}

#[async_trait]
impl DriverAdmin for FakeDriver {
    async fn facts(&self) -> Result<DriverFacts> {
        Ok(DriverFacts {
            summary: "in memory".into(),
            details: vec![("isolation".into(), "none (a test double)".into())],
            json: serde_json::json!({ "isolation": "none" }),
        })
    }

    fn images(&self) -> Option<&dyn ImageBuilder> {
        Some(self)
    }
}

/// Images that are only names: each step is reported and takes a moment, as a real build's do,
/// so what shows progress can be tested without an engine.
#[async_trait]
impl ImageBuilder for FakeDriver {
    async fn base(
        &self,
        _scratch: &std::path::Path,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<String> {
        for step in ["resolving the recipe", "unpacking packages", "tagging fake/base"] {
            progress(step);
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        Ok("fake/base".to_owned())
    }

    async fn build(
        &self,
        dir: &std::path::Path,
        tag: &str,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<()> {
        if !dir.join("Dockerfile").is_file() {
            return Err(Error::invalid(
                "dir",
                format!("{}: no Dockerfile in it", dir.display()),
            ));
        }
        progress(&format!("building {tag}"));
        Ok(())
    }

    async fn import(
        &self,
        tarball: &std::path::Path,
        name: &str,
        progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
    ) -> Result<()> {
        if !tarball.is_file() {
            return Err(Error::invalid(
                "tarball",
                format!("{}: no such file", tarball.display()),
            ));
        }
        progress(&format!("importing {name}"));
        Ok(())
    }
}

struct Control {
    stdin: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    kill: tokio::sync::Notify,
}

#[async_trait]
impl ExecControl for Control {
    async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        if let Some(tx) = &*self.stdin.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = tx.send(data.to_vec());
        }
        Ok(())
    }
    async fn close_stdin(&self) -> Result<()> {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }
    async fn resize(&self, _: TtySize) -> Result<()> {
        Ok(())
    }
    async fn kill(&self) -> Result<()> {
        self.kill.notify_one();
        Ok(())
    }
}

fn now_ms(start: std::time::Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        NAME
    }
    fn admin(&self) -> Option<&dyn DriverAdmin> {
        Some(self)
    }

    async fn create(&self, mut spec: SandboxSpec) -> Result<SandboxInfo> {
        spec.validate()?;
        if !spec.driver.is_empty() && spec.driver != NAME {
            return Err(Error::invalid(
                "driver",
                format!("{:?} given to the fake driver", spec.driver),
            ));
        }
        spec.driver = NAME.into();
        let _lock = self.records.lock()?;
        if let Some(name) = &spec.name {
            if self.records.name_taken(name)? {
                return Err(Error::NameTaken(name.clone()));
            }
        }
        let id = stockade_store::random_id()?;
        let record = Record {
            name: spec.name.clone().unwrap_or_else(|| id.to_string()),
            id,
            status: SandboxStatus::Running,
            created_at: stockade_store::now_secs(),
            spec,
        };
        self.records.save(&record)?;
        Ok(Self::info(&record))
    }
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Ok(self.records.list()?.iter().map(Self::info).collect())
    }
    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        Ok(Self::info(&self.records.resolve(id_or_name)?))
    }
    async fn stop(&self, id: &SandboxId) -> Result<()> {
        let mut r = self.running(id, "stop")?;
        r.status = SandboxStatus::Stopped;
        self.records.save(&r)
    }
    async fn start(&self, id: &SandboxId) -> Result<()> {
        let mut r = self.records.load(id)?;
        if !r.status.can_start() {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: r.status.to_string(),
                operation: "start".into(),
                needed: "stopped".into(),
            });
        }
        r.status = SandboxStatus::Running;
        self.records.save(&r)
    }
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        let mut r = self.records.load(id)?;
        r.status = r.status.after_freeze(id, true)?;
        self.records.save(&r)
    }
    async fn resume(&self, id: &SandboxId) -> Result<()> {
        let mut r = self.records.load(id)?;
        r.status = r.status.after_freeze(id, false)?;
        self.records.save(&r)
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.records.load(id)?;
        self.files().retain(|(sandbox, _), _| sandbox != id.as_str());
        self.records.remove(id)
    }

    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        req.validate()?;
        self.running(id, "exec")?;
        let argv = req.argv.clone();
        let program = argv[0].as_str();
        if !matches!(program, "echo" | "true" | "false" | "exit" | "cat" | "sleep") {
            return Err(Error::CommandNotFound(program.to_owned()));
        }
        let (stdin_tx, mut stdin_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let control = Arc::new(Control {
            stdin: Mutex::new(req.stdin.then_some(stdin_tx)),
            kill: tokio::sync::Notify::new(),
        });
        let (tx, rx) = mpsc::unbounded_channel::<Result<ExecEvent>>();
        let killer = Arc::clone(&control);
        let timeout = req.timeout;
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            let _ = tx.send(Ok(ExecEvent::Started { seq: 0, pid: 1 }));
            let mut seq = 1;
            let mut output = Vec::new();
            let mut exit = ExecExit::default();
            let run = async {
                match program_of(&argv) {
                    Program::Echo(text) => {
                        output.push(text);
                        0
                    }
                    Program::Exit(code) => code,
                    Program::Cat => {
                        while let Some(data) = stdin_rx.recv().await {
                            output.push(data);
                        }
                        0
                    }
                    Program::Sleep(secs) => {
                        tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
                        0
                    }
                }
            };
            let limit = timeout.unwrap_or(std::time::Duration::from_secs(86_400));
            tokio::select! {
                code = run => exit.code = Some(code),
                () = killer.kill.notified() => exit.signal = Some(9),
                () = tokio::time::sleep(limit) => {
                    exit.signal = Some(9);
                    exit.timed_out = true;
                }
            }
            for data in output {
                let _ = tx.send(Ok(ExecEvent::Output {
                    seq,
                    stream: OutputStream::Stdout,
                    data,
                }));
                seq += 1;
            }
            exit.duration_ms = now_ms(start);
            let _ = tx.send(Ok(ExecEvent::Exited { seq, exit }));
        });
        let events = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
        Ok(ExecSession {
            events: Box::pin(events),
            control,
        })
    }

    async fn exec_kept(&self, id: &SandboxId, req: ExecRequest, exec_id: &str) -> Result<ExecSession> {
        let mut session = self.exec(id, req).await?;
        let (count, _) = tokio::sync::watch::channel(0);
        let kept = Arc::new(Kept {
            events: Mutex::new(Vec::new()),
            count,
            control: Arc::clone(&session.control),
        });
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("{id}/{exec_id}"), Arc::clone(&kept));
        let recorder = Arc::clone(&kept);
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(event) = session.events.next().await {
                let n = {
                    let mut events = recorder.events.lock().unwrap_or_else(|p| p.into_inner());
                    events.push(event);
                    events.len()
                };
                recorder.count.send_replace(n);
            }
        });
        Ok(kept.follow(0))
    }

    async fn attach(&self, id: &SandboxId, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{id}/{exec_id}"))
            .cloned()
            .ok_or_else(|| Error::ExecNotFound(exec_id.to_owned()))?;
        Ok(kept.follow(from_seq))
    }

    async fn file(&self, id: &SandboxId, op: FileOp) -> Result<FileReply> {
        self.running(id, "file operations")?;
        let key = |path: &str| (id.to_string(), path.trim_end_matches('/').to_owned());
        let missing = |path: &str| Error::File {
            path: path.to_owned(),
            reason: "No such file or directory".into(),
        };
        let mut files = self.files();
        match op {
            FileOp::Read { path } => files
                .get(&key(&path))
                .map(|data| FileReply::Data { data: data.clone() })
                .ok_or_else(|| missing(&path)),
            FileOp::Write { path, data, .. } => {
                files.insert(key(&path), data);
                Ok(FileReply::Done)
            }
            FileOp::Stat { path } => files
                .get(&key(&path))
                .map(|data| FileReply::Stat {
                    stat: FileStat {
                        kind: FileKind::File,
                        size: data.len() as u64,
                        mode: 0o644,
                        modified: 0,
                    },
                })
                .ok_or_else(|| missing(&path)),
            FileOp::List { path } => {
                let dir = format!("{}/", path.trim_end_matches('/'));
                let entries = files
                    .iter()
                    .filter(|((sandbox, p), _)| sandbox == id.as_str() && p.starts_with(&dir))
                    .filter(|((_, p), _)| !p[dir.len()..].contains('/'))
                    .map(|((_, p), data)| stockade_core::DirEntry {
                        name: p[dir.len()..].to_owned(),
                        stat: FileStat {
                            kind: FileKind::File,
                            size: data.len() as u64,
                            mode: 0o644,
                            modified: 0,
                        },
                    })
                    .collect();
                Ok(FileReply::Entries { entries })
            }
            FileOp::Mkdir { .. } => Ok(FileReply::Done),
            FileOp::Remove { path, .. } => files
                .remove(&key(&path))
                .map(|_| FileReply::Done)
                .ok_or_else(|| missing(&path)),
            FileOp::Rename { from, to } => {
                let data = files.remove(&key(&from)).ok_or_else(|| missing(&from))?;
                files.insert(key(&to), data);
                Ok(FileReply::Done)
            }
            op => Err(Error::Unsupported {
                driver: NAME.into(),
                feature: format!("file operation {}", op.name()),
                reason: "the fake keeps only file contents".into(),
            }),
        }
    }

    async fn stats(&self, id: &SandboxId) -> Result<Stats> {
        self.running(id, "stats")?;
        Ok(Stats {
            source: NAME.into(),
            ..Stats::default()
        })
    }
}

enum Program {
    Echo(Vec<u8>),
    Exit(i32),
    Cat,
    Sleep(f64),
}

fn program_of(argv: &[String]) -> Program {
    match argv[0].as_str() {
        "echo" => Program::Echo(format!("{}\n", argv[1..].join(" ")).into_bytes()),
        "true" => Program::Exit(0),
        "false" => Program::Exit(1),
        "exit" => Program::Exit(argv.get(1).and_then(|c| c.parse().ok()).unwrap_or(0)),
        "cat" => Program::Cat,
        _ => Program::Sleep(argv.get(1).and_then(|s| s.parse().ok()).unwrap_or(0.0)),
    }
}
