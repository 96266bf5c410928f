//! One function per command. Each turns its flags into a core request, calls the driver and
//! prints; errors come back as `stockade_core::Error` and become one line and an exit code.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use crate::args::{Cli, Command, CopyArgs, CreateArgs, ExecOptions, ImageCommand, RemoveArgs};
use crate::exit;
use futures::StreamExt;
use stockade_core::{
    parse, Driver, Error, ExecEvent, ExecRequest, OutputStream, Result, SandboxInfo, SandboxSpec,
    SandboxStatus, SpecFlags,
};
use stockade_router::Router;

/// Runs a parsed command line over the drivers `register` adds; returns the exit code.
pub async fn run(cli: Cli, register: fn(&mut stockade_core::Registry)) -> i32 {
    // A daemon logs its drivers' progress; a command shows it to the person at the terminal.
    let progress: stockade_core::ProgressSink = if matches!(cli.command, Command::Serve(_)) {
        Arc::new(|line: &str| tracing::info!("{line}"))
    } else {
        Arc::new(crate::progress::step)
    };
    let router = Arc::new(crate::drivers::router_from_env(register, progress));
    let result = match cli.command {
        Command::Info(a) => info(&router, a.json).await.map(|_| 0),
        Command::Bench(a) => stockade_bench::run(Arc::clone(&router), a).await,
        Command::Image(c) => image(&router, c).await,
        Command::Gc(a) => gc(&router, a.json).await,
        Command::Task(a) => crate::task::run(&router, a).await,
        Command::Secret(c) => secret(c),
        Command::Serve(a) => serve(Arc::clone(&router), a).await,
        Command::Token(c) => token(c).await,
        Command::Template(c) => template(&router, c).await,
        command => match stockade_client::RemoteDriver::from_env() {
            // A daemon is named: sandbox commands go through its API, with the same output.
            Ok(Some(remote)) => {
                let secrets = match &command {
                    Command::Exec(a) => a.opts.secrets.clone(),
                    Command::Run(a) => a.secrets.clone(),
                    _ => Vec::new(),
                };
                let remote: Arc<dyn Driver> = Arc::new(remote.with_exec_secrets(secrets));
                dispatch(remote, command, Secrets::ByName).await
            }
            Ok(None) => dispatch(router, command, Secrets::Resolve).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stockade: {e}");
            exit::code_for(&e)
        }
    }
}

/// `stockade serve`: runs until SIGINT or SIGTERM.
async fn serve(router: Arc<Router>, a: crate::args::ServeArgs) -> Result<i32> {
    let listen = if a.no_tcp {
        None
    } else {
        Some(a.listen.parse().map_err(|_| {
            Error::invalid(
                "listen",
                format!("{:?} is not an address like 127.0.0.1:7070", a.listen),
            )
        })?)
    };
    let home = router.registry().config().home.clone();
    let config = stockade_server::ServerConfig {
        listen,
        socket: Some(a.socket.unwrap_or_else(|| home.join("stockade.sock"))),
        db: a.db,
        retention: parse::duration("retention", &a.retention)?,
        allow_host_paths: a.allow_host_paths,
        e2b: stockade_server::e2b::E2bConfig {
            driver: a.e2b_driver,
            allow_internet: a.e2b_allow_internet,
        },
        home,
    };
    let shutdown = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated() => {}
        }
    };
    stockade_server::serve(config, router, shutdown).await?;
    Ok(0)
}

/// The daemon's database, as `serve --db` takes it (`STOCKADE_DB`, or the default SQLite file).
async fn daemon_db() -> Result<stockade_server::db::Db> {
    let home = crate::drivers::home_from_env();
    let url = stockade_server::db_url(&home, std::env::var("STOCKADE_DB").ok().as_deref());
    stockade_server::db::Db::open(&url)
        .await
        .map_err(|e| Error::backend("database", e))
}

/// `stockade template add|ls|rm`, on the daemon's database directly (as `token`), checked as the
/// API checks them.
async fn template(router: &Router, c: crate::args::TemplateCommand) -> Result<i32> {
    use crate::args::TemplateCommand;
    let db = daemon_db().await?;
    let db_err = |e| Error::backend("database", e);
    match c {
        TemplateCommand::Add {
            name,
            driver,
            image,
            runtime,
            user,
            home,
        } => {
            let t = stockade_server::e2b::E2bTemplate {
                name,
                driver,
                image,
                runtime,
                user,
                home,
            };
            stockade_server::e2b::validate_template(&t, &router.registry().names())?;
            let data = serde_json::to_string(&t).map_err(|e| Error::backend("template", e))?;
            db.put_template(&t.name, &data).await.map_err(db_err)?;
            eprintln!("stockade: template {} registered", t.name);
        }
        TemplateCommand::Ls(a) => {
            let all = stockade_server::e2b::listed(&db.templates().await.map_err(db_err)?);
            if a.json {
                print_json(&all);
            } else {
                println!(
                    "{:<16} {:<10} {:<28} {:<8} USER",
                    "NAME", "DRIVER", "IMAGE", "RUNTIME"
                );
                let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_owned());
                for t in all {
                    println!(
                        "{:<16} {:<10} {:<28} {:<8} {}",
                        t.name,
                        or(&t.driver, "-"),
                        or(&t.image, "-"),
                        or(&t.runtime, "-"),
                        or(&t.user, "root")
                    );
                }
            }
        }
        TemplateCommand::Rm { name } => {
            if !db.remove_template(&name).await.map_err(db_err)? {
                return Err(Error::invalid(
                    "name",
                    format!("no template named {name:?} is registered"),
                ));
            }
        }
    }
    Ok(0)
}

/// `stockade token create|ls|rm`, on the daemon's database directly (`STOCKADE_DB`, as `serve
/// --db` takes it, or the default SQLite file).
async fn token(c: crate::args::TokenCommand) -> Result<i32> {
    use crate::args::TokenCommand;
    let db = daemon_db().await?;
    let db_err = |e| Error::backend("database", e);
    match c {
        TokenCommand::Create { name } => {
            if name.is_empty() || name.len() > 64 {
                return Err(Error::invalid("name", "must be 1 to 64 characters"));
            }
            let id = stockade_store::random_id()?.to_string();
            let secret: String = (0..3)
                .map(|_| stockade_store::random_id().map(|r| r.to_string()))
                .collect::<Result<Vec<_>>>()?
                .concat();
            let token = format!("stk_{id}{secret}");
            db.create_token(&id, &name, &token, stockade_store::now_secs())
                .await
                .map_err(db_err)?;
            println!("{token}");
            eprintln!("stockade: token {id} ({name}) made; it is shown only this once");
        }
        TokenCommand::Ls(a) => {
            let tokens = db.tokens().await.map_err(db_err)?;
            if a.json {
                print_json(&tokens);
            } else {
                println!("{:<14} {:<20} CREATED", "ID", "NAME");
                for t in tokens {
                    println!("{:<14} {:<20} {}", t.id, t.name, t.created_at);
                }
            }
        }
        TokenCommand::Rm { id } => {
            if !db.remove_token(&id).await.map_err(db_err)? {
                return Err(Error::invalid(
                    "id",
                    format!("no token with the id or name {id:?}"),
                ));
            }
        }
    }
    Ok(0)
}

/// The driver for an image command: the one named, else the first registered that runs images.
fn image_driver(router: &Router, named: Option<&str>) -> Result<Arc<dyn Driver>> {
    let registry = router.registry();
    let name = match named {
        Some(name) => registry.check(name)?,
        None => registry
            .names()
            .into_iter()
            .find(|n| registry.factory(n).is_ok_and(|f| f.takes_images()))
            .ok_or_else(|| Error::invalid("driver", "no registered driver runs images"))?,
    };
    registry.driver(name)
}

async fn image(router: &Router, c: ImageCommand) -> Result<i32> {
    let named = match &c {
        ImageCommand::Base(e) => e.driver.as_deref(),
        ImageCommand::Build { engine, .. } | ImageCommand::Import { engine, .. } => engine.driver.as_deref(),
    };
    let driver = image_driver(router, named)?;
    let Some(images) = driver.admin().and_then(|a| a.images()) else {
        return Err(Error::invalid(
            "driver",
            format!(
                "{:?} does not run images; use one of the drivers `stockade info` lists with images",
                driver.name()
            ),
        ));
    };
    let mut progress = crate::progress::sink();
    let built = build_image(images, router, c, &mut progress).await;
    // The spinner is down before the image's name goes to stdout.
    crate::progress::finish();
    println!("{}", built?);
    Ok(0)
}

/// Builds, imports or finds the image `c` asks for; returns its name.
async fn build_image(
    images: &dyn stockade_core::registry::ImageBuilder,
    router: &Router,
    c: ImageCommand,
    progress: &mut (dyn for<'s> FnMut(&'s str) + Send),
) -> Result<String> {
    match c {
        ImageCommand::Base(_) => {
            let scratch = router.registry().config().home.join("cache");
            images.base(&scratch, progress).await
        }
        ImageCommand::Build { dir, tag, .. } => {
            images.build(std::path::Path::new(&dir), &tag, progress).await?;
            Ok(tag)
        }
        ImageCommand::Import { tarball, name, .. } => {
            images
                .import(std::path::Path::new(&tarball), &name, progress)
                .await?;
            Ok(name)
        }
    }
}

/// `stockade gc`: every driver collects what it made for this home but has no record of. A
/// driver that cannot be built here (no agent, say) has made nothing to collect.
async fn gc(router: &Router, json: bool) -> Result<i32> {
    let registry = router.registry();
    let mut removed = Vec::new();
    for name in registry.names() {
        let driver = match registry.driver(name) {
            Ok(d) => d,
            Err(Error::Unsupported { .. }) => continue,
            Err(e) => return Err(e),
        };
        if let Some(admin) = driver.admin() {
            removed.extend(
                admin
                    .gc()
                    .await?
                    .into_iter()
                    .map(|what| format!("{name}: {what}")),
            );
        }
    }
    if json {
        print_json(&removed);
    } else {
        for r in &removed {
            println!("removed {r}");
        }
    }
    Ok(0)
}

/// Who turns `--secret NAME` into a value: this process (from the local store), or the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secrets {
    Resolve,
    ByName,
}

async fn dispatch(d: Arc<dyn Driver>, command: Command, secrets: Secrets) -> Result<i32> {
    match command {
        Command::Create(a) => {
            let info = create_with_code(&*d, &a).await?;
            println!("{}", info.id);
            Ok(0)
        }
        Command::Diff(a) => {
            let info = d.get(&a.sandbox).await?;
            let patch = stockade_code::diff(&*d, &info.id, &info.spec.workdir, a.stat).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&patch)
                .and_then(|()| out.flush())
                .map_err(|e| Error::backend("stdout", e))?;
            Ok(0)
        }
        Command::Push(a) => {
            let info = d.get(&a.sandbox).await?;
            if a.branch.is_empty()
                || a.branch.starts_with('-')
                || a.branch.contains("..")
                || a.branch.contains(' ')
            {
                return Err(Error::invalid(
                    "branch",
                    format!("{:?} is not a branch name", a.branch),
                ));
            }
            let req = stockade_code::PushRequest {
                remote: a.remote.clone(),
                branch: a.branch.clone(),
                message: a.message.clone(),
                token: std::env::var("STOCKADE_GIT_TOKEN").ok().filter(|t| !t.is_empty()),
            };
            let scratch = crate::drivers::home_from_env().join("cache");
            let commit = stockade_code::push(&*d, &info.id, &info.spec.workdir, &req, &scratch).await?;
            println!("{commit}");
            Ok(0)
        }
        Command::Apply(a) => {
            let info = d.get(&a.sandbox).await?;
            let patch =
                std::fs::read(&a.patch).map_err(|e| Error::invalid("patch", format!("{}: {e}", a.patch)))?;
            stockade_code::apply(&*d, &info.id, &info.spec.workdir, patch).await?;
            Ok(0)
        }
        Command::Exec(a) => {
            let info = d.get(&a.sandbox).await?;
            let req = exec_request(&a.opts, a.command, secrets)?;
            exec(&*d, &info, req, a.opts.json).await
        }
        Command::Run(a) => {
            let opts = ExecOptions {
                env: Vec::new(),
                workdir: None,
                user: None,
                timeout: a.timeout.clone(),
                interactive: a.interactive,
                tty: a.tty,
                json: false,
                secrets: a.secrets.clone(),
            };
            let req = exec_request(&opts, a.command, secrets)?;
            let info = create_with_code(&*d, &a.create).await?;
            // `run` owns its sandbox: an interrupt or a polite kill still destroys it.
            let result = tokio::select! {
                r = exec(&*d, &info, req, false) => r,
                _ = tokio::signal::ctrl_c(), if !a.tty => Ok(130),
                _ = terminated() => Ok(143),
            };
            let destroyed = d.destroy(&info.id).await;
            let code = result?;
            destroyed?;
            Ok(code)
        }
        Command::Ls(a) => {
            let all = d.list().await?;
            if a.json {
                print_json(&all);
            } else if a.quiet {
                all.iter().for_each(|s| println!("{}", s.id));
            } else {
                print_table(&all);
            }
            Ok(0)
        }
        Command::Inspect(a) => {
            print_json(&d.get(&a.sandbox).await?);
            Ok(0)
        }
        Command::Stats(a) => stats(&*d, &a.sandbox, a.json).await,
        Command::Cp(a) => copy(&*d, &a).await,
        Command::Shell(a) => {
            let info = d.get(&a.sandbox).await?;
            let shell = if d.stat(&info.id, &a.shell).await.is_ok() {
                a.shell
            } else {
                "/bin/sh".into()
            };
            let opts = ExecOptions {
                env: Vec::new(),
                workdir: None,
                user: None,
                timeout: None,
                interactive: true,
                tty: true,
                json: false,
                secrets: Vec::new(),
            };
            exec(&*d, &info, exec_request(&opts, vec![shell], secrets)?, false).await
        }
        Command::Stop(a) => {
            let info = d.get(&a.sandbox).await?;
            d.stop(&info.id).await?;
            println!("{}", info.id);
            Ok(0)
        }
        Command::Start(a) => {
            let info = d.get(&a.sandbox).await?;
            d.start(&info.id).await?;
            println!("{}", info.id);
            Ok(0)
        }
        Command::Pause(a) => {
            let info = d.get(&a.sandbox).await?;
            d.pause(&info.id).await?;
            println!("{}", info.id);
            Ok(0)
        }
        Command::Resume(a) => {
            let info = d.get(&a.sandbox).await?;
            d.resume(&info.id).await?;
            println!("{}", info.id);
            Ok(0)
        }
        Command::Rm(a) => remove(&*d, &a).await,
        Command::Info(_)
        | Command::Bench(_)
        | Command::Image(_)
        | Command::Gc(_)
        | Command::Task(_)
        | Command::Secret(_)
        | Command::Serve(_)
        | Command::Token(_)
        | Command::Template(_) => Ok(0),
    }
}

/// Creates the sandbox `a` asks for and loads its `--code`: the source is fetched or checked first,
/// so a bad one fails before any sandbox exists; a load that fails destroys the sandbox.
async fn create_with_code(d: &dyn Driver, a: &CreateArgs) -> Result<SandboxInfo> {
    let spec = spec_from(a)?;
    let mut progress = crate::progress::sink();
    let scratch = crate::drivers::home_from_env().join("cache");
    let created = stockade_code::create_with_code(d, spec, a.code.as_deref(), &scratch, &mut progress).await;
    crate::progress::finish();
    created
}

fn secret(c: crate::args::SecretCommand) -> Result<i32> {
    use crate::args::SecretCommand;
    let store = stockade_secrets::SecretStore::new(&crate::drivers::home_from_env());
    match c {
        SecretCommand::Set { name } => {
            stockade_secrets::validate_name(&name)?;
            let mut value = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
                .map_err(|e| Error::invalid("secret", format!("stdin: {e}")))?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            if value.is_empty() {
                return Err(Error::invalid("secret", format!("{name}: empty value on stdin")));
            }
            store.set(&name, value)?;
        }
        SecretCommand::Ls(a) => {
            let names = store.names()?;
            if a.json {
                print_json(&names);
            } else {
                names.iter().for_each(|n| println!("{n}"));
            }
        }
        SecretCommand::Rm { name } => store.remove(&name)?,
    }
    Ok(0)
}

/// Resolves on SIGTERM (never, if the handler cannot be installed).
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Builds a spec from `create`'s flags; each error names its flag. Host paths are resolved here.
pub fn spec_from(a: &CreateArgs) -> Result<SandboxSpec> {
    let flags = SpecFlags {
        name: a.name.clone(),
        driver: a.driver.clone(),
        image: a.image.clone(),
        runtime: a.runtime.clone(),
        rootfs: a.rootfs.as_deref().map(absolute).transpose()?,
        memory: a.memory.clone(),
        cpus: a.cpus.clone(),
        pids: a.pids.clone(),
        disk: a.disk.clone(),
        open_files: a.open_files.clone(),
        file_size: a.file_size.clone(),
        network: Some(a.network.clone()),
        env: a.env.clone(),
        volumes: a.volumes.clone(),
        workdir: Some(a.workdir.clone()),
        user: a.user.clone(),
        labels: a.labels.clone(),
        ttl: a.ttl.clone(),
    };
    let mut spec = flags.to_spec()?;
    for m in &mut spec.mounts {
        m.host = std::fs::canonicalize(&m.host)
            .map_err(|e| Error::invalid("volume", format!("{}: {e}", m.host.display())))?;
    }
    Ok(spec)
}

fn absolute(path: &str) -> Result<String> {
    std::fs::canonicalize(path)
        .map(|p| p.display().to_string())
        .map_err(|e| Error::invalid("rootfs", format!("{path}: {e}")))
}

fn exec_request(o: &ExecOptions, argv: Vec<String>, secrets: Secrets) -> Result<ExecRequest> {
    let mut env = BTreeMap::new();
    for e in &o.env {
        let (k, v) = parse::key_value("env", e)?;
        env.insert(k, v);
    }
    if secrets == Secrets::Resolve {
        let store = stockade_secrets::SecretStore::new(&crate::drivers::home_from_env());
        for (k, v) in store.resolve(&o.secrets)? {
            env.insert(k, v);
        }
    }
    let req = ExecRequest {
        argv,
        env,
        cwd: o.workdir.clone(),
        user: o.user.clone(),
        stdin: o.interactive,
        tty: o.tty.then(crate::terminal::size),
        timeout: o
            .timeout
            .as_deref()
            .map(|t| parse::duration("timeout", t))
            .transpose()?,
    };
    req.validate()?;
    Ok(req)
}

/// Runs one exec to its end, wiring the local stdio to it; returns the exit code to use.
async fn exec(d: &dyn Driver, info: &SandboxInfo, req: ExecRequest, json: bool) -> Result<i32> {
    let interactive = req.stdin || req.tty.is_some();
    let tty = req.tty.is_some();
    let timeout = req.timeout;
    let mut session = d.exec(&info.id, req).await?;
    let _raw = tty.then(crate::terminal::RawMode::enter);
    if interactive {
        let control = Arc::clone(&session.control);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        if !tty {
                            let _ = control.close_stdin().await;
                        }
                        return;
                    }
                    Ok(n) => {
                        if control.write_stdin(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    if tty {
        let control = Arc::clone(&session.control);
        tokio::spawn(async move {
            let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                let _ = control.resize(crate::terminal::size()).await;
            }
        });
    }
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    let mut reader_gone = false;
    loop {
        let event = tokio::select! {
            e = session.events.next() => e,
            _ = tokio::signal::ctrl_c(), if !tty => {
                let _ = session.control.kill().await;
                continue;
            }
        };
        let Some(event) = event else {
            return Err(Error::backend(
                "exec",
                "the sandbox closed the stream before the command ended",
            ));
        };
        let event = event?;
        if json {
            let _ = writeln!(stdout, "{}", event_json(&event));
            let _ = stdout.flush();
        }
        match event {
            ExecEvent::Started { .. } => {}
            ExecEvent::Output { stream, data, .. } if !json => {
                let written = match stream {
                    OutputStream::Stdout => stdout.write_all(&data).and_then(|_| stdout.flush()),
                    OutputStream::Stderr => stderr.write_all(&data),
                };
                // Whoever read our output is gone (`stockade exec ... | head`): stop the command,
                // as a shell pipeline would with SIGPIPE.
                if matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) && !reader_gone {
                    reader_gone = true;
                    let _ = session.control.kill().await;
                }
            }
            ExecEvent::Output { .. } => {}
            ExecEvent::Exited { exit, .. } => {
                drop(_raw);
                if reader_gone {
                    return Ok(128 + libc::SIGPIPE);
                }
                if exit.timed_out {
                    let after = timeout.map(|t| format!(" after {t:?}")).unwrap_or_default();
                    eprintln!("stockade: command timed out{after}; its process tree was killed");
                    return Ok(exit::TIMEOUT);
                }
                if exit.oom {
                    eprintln!(
                        "stockade: command was killed by the out-of-memory killer (memory limit reached)"
                    );
                }
                return Ok(exit.shell_code());
            }
        }
    }
}

/// JSON for an exec event: output bytes as UTF-8 text when they are, else base64-free hex is
/// avoided by carrying them as an array.
fn event_json(event: &ExecEvent) -> serde_json::Value {
    match event {
        ExecEvent::Output { seq, stream, data } => match std::str::from_utf8(data) {
            Ok(text) => serde_json::json!({"type": "output", "seq": seq, "stream": stream, "text": text}),
            Err(_) => serde_json::json!({"type": "output", "seq": seq, "stream": stream, "data": data}),
        },
        other => serde_json::to_value(other).unwrap_or_default(),
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("stockade: cannot encode JSON: {e}"),
    }
}

fn age(created_at: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let s = now.saturating_sub(created_at);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

fn print_table(all: &[SandboxInfo]) {
    let name_w = all.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<12}  {:<name_w$}  {:<9}  {:<6}  {:<8}  CREATED",
        "ID", "NAME", "STATUS", "DRIVER", "NETWORK"
    );
    for s in all {
        println!(
            "{:<12}  {:<name_w$}  {:<9}  {:<6}  {:<8}  {}",
            s.id,
            s.name,
            s.status,
            s.driver,
            s.spec.network,
            age(s.created_at)
        );
    }
}

async fn stats(d: &dyn Driver, target: &str, json: bool) -> Result<i32> {
    let info = d.get(target).await?;
    let first = d.stats(&info.id).await?;
    let window = std::time::Duration::from_millis(250);
    tokio::time::sleep(window).await;
    let second = d.stats(&info.id).await?;
    let cpu_percent =
        (second.cpu_usec.saturating_sub(first.cpu_usec)) as f64 / window.as_micros() as f64 * 100.0;
    if json {
        let mut v = serde_json::to_value(&second).unwrap_or_default();
        v["cpu_percent"] = serde_json::json!((cpu_percent * 10.0).round() / 10.0);
        v["id"] = serde_json::json!(info.id);
        print_json(&v);
    } else {
        let mib = |b: u64| format!("{:.1}MiB", b as f64 / (1 << 20) as f64);
        let limit = info
            .spec
            .resources
            .memory_bytes
            .map(mib)
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<12}  {:>7}  {:>10}  {:>10}  {:>10}  {:>5}  SOURCE",
            "ID", "CPU %", "CPU TIME", "MEMORY", "LIMIT", "PIDS"
        );
        println!(
            "{:<12}  {:>6.1}%  {:>9.2}s  {:>10}  {:>10}  {:>5}  {}",
            info.id,
            cpu_percent,
            second.cpu_usec as f64 / 1e6,
            mib(second.memory_bytes),
            limit,
            second.pids,
            second.source
        );
    }
    Ok(0)
}

async fn remove(d: &dyn Driver, a: &RemoveArgs) -> Result<i32> {
    let mut code = 0;
    for target in &a.sandboxes {
        let result = async {
            let info = d.get(target).await?;
            if info.status == SandboxStatus::Running && !a.force {
                return Err(Error::WrongState {
                    id: info.id.to_string(),
                    status: "running".into(),
                    operation: "rm".into(),
                    needed: "stopped (or use rm -f)".into(),
                });
            }
            d.destroy(&info.id).await?;
            println!("{}", info.id);
            Ok(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("stockade: {e}");
            code = exit::code_for(&e);
        }
    }
    Ok(code)
}

/// `SANDBOX:PATH` → (sandbox, path); a host path → None. A bare `name:` with an absolute path
/// after the colon counts as a sandbox path.
fn split_remote(s: &str) -> Option<(&str, &str)> {
    let (sandbox, path) = s.split_once(':')?;
    (!sandbox.is_empty() && !sandbox.contains('/') && path.starts_with('/')).then_some((sandbox, path))
}

async fn copy(d: &dyn Driver, a: &CopyArgs) -> Result<i32> {
    match (split_remote(&a.src), split_remote(&a.dst)) {
        (Some((sb, path)), None) => {
            let info = d.get(sb).await?;
            copy_out(d, &info, path, std::path::Path::new(&a.dst)).await?;
        }
        (None, Some((sb, path))) => {
            let info = d.get(sb).await?;
            copy_in(d, &info, std::path::Path::new(&a.src), path).await?;
        }
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "cp",
                "copying between two sandboxes is not supported; copy through the host",
            ))
        }
        (None, None) => return Err(Error::invalid("cp", "one side must be SANDBOX:/absolute/path")),
    }
    Ok(0)
}

async fn copy_in(d: &dyn Driver, info: &SandboxInfo, src: &std::path::Path, dst: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(src).map_err(|e| Error::invalid("cp", format!("{}: {e}", src.display())))?;
    // Copying into an existing directory puts the file inside it, like cp(1).
    let dst = match d.stat(&info.id, dst).await {
        Ok(st) if st.kind == stockade_core::FileKind::Dir => {
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{}/{name}", dst.trim_end_matches('/'))
        }
        _ => dst.to_owned(),
    };
    if meta.is_dir() {
        d.mkdir(&info.id, &dst).await?;
        let entries =
            std::fs::read_dir(src).map_err(|e| Error::invalid("cp", format!("{}: {e}", src.display())))?;
        for entry in entries.flatten() {
            let child = format!("{dst}/{}", entry.file_name().to_string_lossy());
            Box::pin(copy_in(d, info, &entry.path(), &child)).await?;
        }
        return Ok(());
    }
    let data = std::fs::read(src).map_err(|e| Error::invalid("cp", format!("{}: {e}", src.display())))?;
    d.write_file(&info.id, &dst, data, meta.permissions().mode() & 0o7777)
        .await
}

async fn copy_out(d: &dyn Driver, info: &SandboxInfo, src: &str, dst: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let st = d.stat(&info.id, src).await?;
    let dst = if dst.is_dir() {
        dst.join(std::path::Path::new(src).file_name().unwrap_or_default())
    } else {
        dst.to_path_buf()
    };
    let host_err = |e: std::io::Error| Error::invalid("cp", format!("{}: {e}", dst.display()));
    if st.kind == stockade_core::FileKind::Dir {
        std::fs::create_dir_all(&dst).map_err(host_err)?;
        for entry in d.list_dir(&info.id, src).await? {
            let child_src = format!("{}/{}", src.trim_end_matches('/'), entry.name);
            Box::pin(copy_out(d, info, &child_src, &dst.join(&entry.name))).await?;
        }
        return Ok(());
    }
    let data = d.read_file(&info.id, src).await?;
    std::fs::write(&dst, data).map_err(host_err)?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(st.mode)).map_err(host_err)?;
    Ok(())
}

/// `stockade info`: every registered driver, whether it is usable here and why not, and what
/// it reports about its backend.
pub async fn info(router: &Router, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    write_info(router, json, &mut out)
        .await
        .map_err(|e| Error::backend("stdout", e))
}

/// [`info`] into any writer (tests read it back).
pub async fn write_info(router: &Router, json: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let registry = router.registry();
    let mut drivers = Vec::new();
    for name in registry.names() {
        let description = registry
            .factory(name)
            .map(|f| f.description())
            .unwrap_or_default();
        let facts = stockade_core::registry::availability(registry, name)
            .await
            .map(|(_, f)| f);
        drivers.push((name, description, facts));
    }
    if json {
        let drivers: Vec<serde_json::Value> = drivers
            .iter()
            .map(|(name, description, facts)| match facts {
                Ok(f) => serde_json::json!({ "name": name, "description": description, "usable": true,
                    "summary": f.summary, "facts": f.json }),
                Err(e) => serde_json::json!({ "name": name, "description": description, "usable": false,
                    "reason": e.to_string() }),
            })
            .collect();
        let text =
            serde_json::to_string_pretty(&serde_json::json!({ "drivers": drivers })).unwrap_or_default();
        return writeln!(out, "{text}");
    }
    writeln!(out, "drivers:")?;
    for (name, description, facts) in &drivers {
        match facts {
            Ok(f) if f.summary.is_empty() => writeln!(out, "  {name:<15} yes")?,
            Ok(f) => writeln!(out, "  {name:<15} yes: {}", f.summary)?,
            Err(e) => writeln!(out, "  {name:<15} no ({e})")?,
        }
        writeln!(out, "  {:<15} {description}", "")?;
        if let Ok(f) = facts {
            for (label, value) in &f.details {
                writeln!(out, "  {:<15} {:<17} {value}", "", format!("{label}:"))?;
            }
        }
    }
    Ok(())
}
