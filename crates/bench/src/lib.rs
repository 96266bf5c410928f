//! `stockade bench`: measures the native driver against baselines run beside it in the same run,
//! and prints ratios. Numbers are medians over the iterations; see BENCHMARKS.md.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use stockade_core::{Driver, Error, ExecRequest, Result, SandboxSpec};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Iterations per latency measurement.
    #[arg(long, default_value_t = 30)]
    pub iterations: usize,
    /// Sandboxes created at once in the concurrency measurement.
    #[arg(long, default_value_t = 200)]
    pub concurrent: usize,
    /// Idle sandboxes to average host memory over.
    #[arg(long, default_value_t = 20)]
    pub idle: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Driver to measure: native (against bubblewrap) or docker/podman (against the engine's own
    /// command-line tool on the same image).
    #[arg(long, default_value = "native")]
    pub driver: String,
    /// Image for the container drivers.
    #[arg(long, default_value = stockade_docker::driver::DEFAULT_IMAGE)]
    pub image: String,
    /// OCI runtime for the container drivers (the engine's default when absent).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Measure the daemon's API instead: `POST /api/sandboxes/ID/execs?wait=true` of `true` over
    /// HTTP (keep-alive, bearer token) against the same exec through the library in-process.
    #[arg(long)]
    pub api: bool,
    /// Measure `stockade diff` instead: a repository of this many files with 10 changed, against
    /// `git add -A && git diff --cached --binary` on the host over the same tree.
    #[arg(long, value_name = "FILES")]
    pub diff: Option<usize>,
}

/// Median and 90th percentile of a sample, in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Summary {
    median_ms: f64,
    p90_ms: f64,
}

fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples
            .get(i)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    Summary {
        median_ms: at(0.5),
        p90_ms: at(0.9),
    }
}

fn time_command(argv: &[&str]) -> Result<Duration> {
    let start = Instant::now();
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| Error::backend(format!("run {}", argv[0]), e))?;
    if !status.success() {
        return Err(Error::backend(
            format!("run {}", argv.join(" ")),
            format!("exited with {status}"),
        ));
    }
    Ok(start.elapsed())
}

const BWRAP: [&str; 10] = [
    "bwrap",
    "--unshare-all",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
    "true",
];

#[derive(Debug, serde::Serialize)]
struct Row {
    name: &'static str,
    stockade: Summary,
    baseline_name: &'static str,
    baseline: Summary,
    ratio: f64,
}

impl Row {
    fn new(name: &'static str, stockade: Summary, baseline_name: &'static str, baseline: Summary) -> Row {
        Row {
            name,
            stockade,
            baseline_name,
            baseline,
            ratio: stockade.median_ms / baseline.median_ms,
        }
    }
}

/// Proportional set size plus RSS of a process, in KiB, from smaps_rollup.
fn memory_kib(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("Pss:"), field("Rss:"))
}

pub async fn run(router: Arc<stockade_router::Router>, a: BenchArgs) -> Result<i32> {
    if a.api {
        return run_api(router, &a).await;
    }
    if let Some(files) = a.diff {
        return run_diff(router, &a, files).await;
    }
    match a.driver.as_str() {
        "native" => {}
        "docker" | "podman" => return run_containers(router, a).await,
        "microvm" => return run_microvm(router, a).await,
        other => {
            return Err(Error::invalid(
                "driver",
                format!("{other:?}: bench measures native, docker, podman or microvm"),
            ))
        }
    }
    // The native driver itself, not the CLI's router: the library rows measure the driver.
    let driver: Arc<dyn Driver> = Arc::new(stockade_native::NativeDriver::from_config(
        router.registry().config(),
    )?);
    let exe = std::env::current_exe().map_err(|e| Error::backend("current_exe", e))?;
    let exe = exe.to_string_lossy().into_owned();
    let n = a.iterations.max(3);
    let have_bwrap = Command::new("bwrap").arg("--version").output().is_ok();
    if !have_bwrap {
        return Err(Error::unsupported(
            "bench",
            "baseline",
            "bwrap is not installed (apt-get install bubblewrap)",
        ));
    }
    eprintln!("stockade bench: {n} iterations each; warming up");
    // Warm caches for both sides.
    for _ in 0..3 {
        time_command(&BWRAP)?;
        time_command(&[&exe, "run", "--", "true"])?;
    }

    let mut rows = Vec::new();

    // 1. create → exec true → destroy, as commands, against bwrap.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..n {
        theirs.push(time_command(&BWRAP)?);
        ours.push(time_command(&[&exe, "run", "--", "true"])?);
    }
    rows.push(Row::new(
        "create+exec+destroy (stockade run -- true)",
        summarize(ours),
        "bwrap --unshare-all ... true",
        summarize(theirs),
    ));

    // 1b. The same through the library, no process start of our own.
    let mut lib = Vec::new();
    let mut theirs = Vec::new();
    let (mut t_create, mut t_exec, mut t_destroy) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        theirs.push(time_command(&BWRAP)?);
        let start = Instant::now();
        let info = driver.create(SandboxSpec::default()).await?;
        let created = Instant::now();
        let out = driver
            .exec(&info.id, ExecRequest::new(["true"]))
            .await?
            .output()
            .await?;
        let execed = Instant::now();
        driver.destroy(&info.id).await?;
        if !out.exit.success() {
            return Err(Error::backend("bench", "true failed"));
        }
        lib.push(start.elapsed());
        t_create.push(created - start);
        t_exec.push(execed - created);
        t_destroy.push(execed.elapsed());
    }
    let stages = [
        ("create", summarize(t_create)),
        ("first exec", summarize(t_exec)),
        ("destroy", summarize(t_destroy)),
    ];
    rows.push(Row::new(
        "create+exec+destroy (library)",
        summarize(lib),
        "bwrap --unshare-all ... true",
        summarize(theirs),
    ));

    // 2. exec round trip on a live sandbox.
    let info = driver.create(SandboxSpec::default()).await?;
    let mut lib = Vec::new();
    let mut cli = Vec::new();
    let mut host = Vec::new();
    for _ in 0..n.max(50) {
        let start = Instant::now();
        driver
            .exec(&info.id, ExecRequest::new(["true"]))
            .await?
            .output()
            .await?;
        lib.push(start.elapsed());
        host.push(time_command(&["true"])?);
    }
    for _ in 0..n {
        cli.push(time_command(&[&exe, "exec", info.id.as_str(), "--", "true"])?);
    }
    driver.destroy(&info.id).await?;
    let host = summarize(host);
    rows.push(Row::new(
        "exec round trip (library)",
        summarize(lib),
        "fork+exec true on the host",
        host,
    ));
    rows.push(Row::new(
        "exec round trip (stockade exec -- true)",
        summarize(cli),
        "fork+exec true on the host",
        host,
    ));
    // 2b. Pause + resume (the cgroup freezer) against stop + start.
    let info = driver.create(SandboxSpec::default()).await?;
    rows.push(pause_against_stop(&*driver, &info.id, n, n.min(10)).await?);
    driver.destroy(&info.id).await?;

    // 3. Many sandboxes created at once.
    let start = Instant::now();
    let creates = (0..a.concurrent).map(|_| {
        let d = Arc::clone(&driver);
        async move { d.create(SandboxSpec::default()).await }
    });
    let created: Vec<_> = futures::future::join_all(creates).await;
    let ours_total = start.elapsed();
    let ids: Vec<_> = created
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|i| i.id.clone()))
        .collect();
    let failures: Vec<String> = created
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    let destroys = ids.iter().map(|id| {
        let d = Arc::clone(&driver);
        async move { d.destroy(id).await }
    });
    futures::future::join_all(destroys).await;
    if let Some(first) = failures.first() {
        return Err(Error::backend(
            format!("{} of {} concurrent creates failed", failures.len(), a.concurrent),
            first,
        ));
    }
    let start = Instant::now();
    let bwraps: Vec<_> = (0..a.concurrent)
        .map(|_| {
            Command::new(BWRAP[0])
                .args(&BWRAP[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::backend("spawn bwrap", e))?;
    for mut b in bwraps {
        let _ = b.wait();
    }
    let theirs_total = start.elapsed();
    let one = |d: Duration| Summary {
        median_ms: d.as_secs_f64() * 1000.0,
        p90_ms: d.as_secs_f64() * 1000.0,
    };
    rows.push(Row::new(
        "create N sandboxes concurrently (total)",
        one(ours_total),
        "N concurrent bwrap ... true",
        one(theirs_total),
    ));

    // 4. Host memory per idle sandbox: supervisor + pid 1 (the agent).
    let mut idle = Vec::new();
    for _ in 0..a.idle {
        idle.push(driver.create(SandboxSpec::default()).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut pss, mut rss) = (0u64, 0u64);
    for info in &idle {
        for key in ["supervisor_pid", "init_pid"] {
            let pid = info.details.get(key).and_then(|v| v.as_i64()).unwrap_or(0) as i32;
            let (p, r) = memory_kib(pid);
            pss += p;
            rss += r;
        }
    }
    for info in &idle {
        driver.destroy(&info.id).await?;
    }
    let mut sleeper = Command::new(BWRAP[0])
        .args(&BWRAP[1..BWRAP.len() - 1])
        .args(["--die-with-parent", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::backend("spawn bwrap", e))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // bwrap forks: the sandbox is bwrap plus its child (sleep), like our supervisor plus pid 1.
    let bwrap_pid = sleeper.id() as i32;
    let children =
        std::fs::read_to_string(format!("/proc/{bwrap_pid}/task/{bwrap_pid}/children")).unwrap_or_default();
    let (mut b_pss, mut b_rss) = memory_kib(bwrap_pid);
    for child in children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
        let (p, r) = memory_kib(child);
        b_pss += p;
        b_rss += r;
        let grandchildren =
            std::fs::read_to_string(format!("/proc/{child}/task/{child}/children")).unwrap_or_default();
        for g in grandchildren
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            let (p, r) = memory_kib(g);
            b_pss += p;
            b_rss += r;
        }
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let per = a.idle.max(1) as u64;
    let memory = serde_json::json!({
        "idle_sandboxes": a.idle,
        "stockade_pss_kib_per_sandbox": pss / per,
        "stockade_rss_kib_per_sandbox": rss / per,
        "bwrap_sleep_pss_kib": b_pss,
        "bwrap_sleep_rss_kib": b_rss,
    });

    if a.json {
        let stages: serde_json::Map<String, serde_json::Value> = stages
            .iter()
            .map(|(n, s)| ((*n).to_owned(), serde_json::json!(s)))
            .collect();
        let v = serde_json::json!({ "iterations": n, "concurrent": a.concurrent, "rows": rows, "stages": stages, "memory": memory });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{:<44} {:>10} {:>10}   {:<30} {:>10}  {:>7}",
        "measurement", "median ms", "p90 ms", "baseline", "median ms", "ratio"
    );
    for r in &rows {
        println!(
            "{:<44} {:>10.2} {:>10.2}   {:<30} {:>10.2}  {:>6.2}x",
            r.name, r.stockade.median_ms, r.stockade.p90_ms, r.baseline_name, r.baseline.median_ms, r.ratio
        );
    }
    println!("(N = {})", a.concurrent);
    let stage_text: Vec<String> = stages
        .iter()
        .map(|(n, s)| format!("{n} {:.2} ms", s.median_ms))
        .collect();
    println!(
        "library create+exec+destroy by stage (medians): {}",
        stage_text.join(", ")
    );
    println!(
        "host memory per idle sandbox (supervisor + pid 1): PSS {} KiB, RSS {} KiB; idle bwrap+sleep: PSS {} KiB, RSS {} KiB",
        pss / per,
        rss / per,
        b_pss,
        b_rss
    );
    Ok(0)
}

/// `stockade bench --driver microvm`: a VM's create (boot to a ready agent), exec round trip and
/// idle host memory, each against the native driver in the same run (the baseline a user moving
/// from `--driver native` compares with).
/// Pause + resume of the live sandbox `id` (`pauses` times) against stop + start of it
/// (`stops` times); the sandbox is running again after.
async fn pause_against_stop(
    d: &dyn Driver,
    id: &stockade_core::SandboxId,
    pauses: usize,
    stops: usize,
) -> Result<Row> {
    let mut paused = Vec::new();
    for _ in 0..pauses {
        let start = Instant::now();
        d.pause(id).await?;
        d.resume(id).await?;
        paused.push(start.elapsed());
    }
    let mut stopped = Vec::new();
    for _ in 0..stops {
        let start = Instant::now();
        d.stop(id).await?;
        d.start(id).await?;
        stopped.push(start.elapsed());
    }
    Ok(Row::new(
        "pause + resume (library)",
        summarize(paused),
        "stop + start",
        summarize(stopped),
    ))
}

async fn run_microvm(router: Arc<stockade_router::Router>, a: BenchArgs) -> Result<i32> {
    let registry = router.registry();
    let vm = registry.driver("microvm")?;
    let native = registry.driver("native")?;
    let spec = |driver: &str| SandboxSpec {
        driver: driver.into(),
        ..Default::default()
    };
    let boots = a.iterations.clamp(3, 10);
    eprintln!(
        "stockade bench --driver microvm: {boots} boots, {} exec round trips; warming up",
        a.iterations.max(50)
    );
    for d in [&vm, &native] {
        let info = d.create(spec(d.name())).await?;
        d.destroy(&info.id).await?;
    }
    let mut rows = Vec::new();
    // 1. create (restored from the template) against start (a stopped VM boots its kernel),
    //    through the driver, and native's create.
    let boot_ms_of = |info: &stockade_core::SandboxInfo| {
        Duration::from_millis(info.details.get("boot_ms").and_then(|v| v.as_u64()).unwrap_or(0))
    };
    let (mut restores, mut restore_ms, mut colds, mut cold_ms, mut natives) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..boots {
        let start = Instant::now();
        let info = vm.create(spec("microvm")).await?;
        restores.push(start.elapsed());
        restore_ms.push(boot_ms_of(&info));
        vm.stop(&info.id).await?;
        let start = Instant::now();
        vm.start(&info.id).await?;
        colds.push(start.elapsed());
        cold_ms.push(boot_ms_of(&vm.get(info.id.as_str()).await?));
        vm.destroy(&info.id).await?;
        let start = Instant::now();
        let info = native.create(spec("native")).await?;
        natives.push(start.elapsed());
        native.destroy(&info.id).await?;
    }
    let (restore, cold, native_create) = (summarize(restores), summarize(colds), summarize(natives));
    rows.push(Row::new(
        "create, snapshot restore to ready (library)",
        restore,
        "start, cold boot to ready",
        cold,
    ));
    rows.push(Row::new(
        "  of which QEMU start to agent ready",
        summarize(restore_ms),
        "the same, cold boot",
        summarize(cold_ms),
    ));
    rows.push(Row::new(
        "create, snapshot restore to ready (library)",
        restore,
        "native create",
        native_create,
    ));
    rows.push(Row::new(
        "start, cold boot to ready (library)",
        cold,
        "native create",
        native_create,
    ));
    // 2. exec round trip on a live sandbox, interleaved.
    let (a_vm, a_native) = (
        vm.create(spec("microvm")).await?,
        native.create(spec("native")).await?,
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..a.iterations.max(50) {
        for (d, id, out) in [(&vm, &a_vm.id, &mut ours), (&native, &a_native.id, &mut theirs)] {
            let start = Instant::now();
            d.exec(id, ExecRequest::new(["true"])).await?.output().await?;
            out.push(start.elapsed());
        }
    }
    rows.push(Row::new(
        "exec round trip (library)",
        summarize(ours),
        "native exec",
        summarize(theirs),
    ));
    // 2b. Pause + resume (vCPUs halted and run again) against stop + start (a cold boot).
    // On a VM of its own: the starts boot it cold, which would change what the memory row sees.
    let paused = vm.create(spec("microvm")).await?;
    rows.push(pause_against_stop(&*vm, &paused.id, a.iterations.max(10), 3).await?);
    vm.destroy(&paused.id).await?;
    // 3. Host memory per idle sandbox: QEMU + supervisor, against native's supervisor + pid 1.
    let idle = a.idle.clamp(1, 5);
    let (mut vms, mut natives) = (vec![a_vm], vec![a_native]);
    for _ in 1..idle {
        vms.push(vm.create(spec("microvm")).await?);
        natives.push(native.create(spec("native")).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pss_of = |infos: &[stockade_core::SandboxInfo], keys: [&str; 2]| -> u64 {
        let mut total = 0;
        for info in infos {
            // Fresh details: the pids are there once the sandbox runs.
            for key in keys {
                let pid = info.details.get(key).and_then(|v| v.as_i64()).unwrap_or(0) as i32;
                total += memory_kib(pid).0;
            }
        }
        total / infos.len().max(1) as u64
    };
    let vm_pss = pss_of(&vms, ["qemu_pid", "supervisor_pid"]);
    let native_pss = pss_of(&natives, ["supervisor_pid", "init_pid"]);
    for info in &vms {
        vm.destroy(&info.id).await?;
    }
    for info in &natives {
        native.destroy(&info.id).await?;
    }
    let accel = vms
        .first()
        .and_then(|i| i.details.get("accel"))
        .and_then(|v| v.as_str())
        .unwrap_or("?")
        .to_owned();
    if a.json {
        let v = serde_json::json!({ "driver": "microvm", "accel": accel, "boots": boots, "rows": rows,
            "memory": { "idle_vms": idle, "vm_pss_kib": vm_pss, "native_pss_kib": native_pss } });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{:<44} {:>10} {:>10}   {:<30} {:>10}  {:>7}",
        "measurement (accel ".to_owned() + &accel + ")",
        "median ms",
        "p90 ms",
        "baseline",
        "median ms",
        "ratio"
    );
    for r in &rows {
        println!(
            "{:<44} {:>10.2} {:>10.2}   {:<30} {:>10.2}  {:>6.2}x",
            r.name, r.stockade.median_ms, r.stockade.p90_ms, r.baseline_name, r.baseline.median_ms, r.ratio
        );
    }
    println!(
        "host memory per idle sandbox ({idle} of each): VM (QEMU + supervisor) PSS {vm_pss} KiB; native (supervisor + pid 1) PSS {native_pss} KiB; {:.1}x",
        vm_pss as f64 / native_pss.max(1) as f64
    );
    Ok(0)
}

fn output_of(argv: &[&str]) -> Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::backend(format!("run {}", argv[0]), e))?;
    if !out.status.success() {
        return Err(Error::backend(
            format!("run {}", argv.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `stockade bench --driver docker|podman`: the same operations through Stockade and through the
/// engine's own CLI (`docker` or `podman`), interleaved, on the same image and runtime.
async fn run_containers(router: Arc<stockade_router::Router>, a: BenchArgs) -> Result<i32> {
    let tool: &'static str = if a.driver == "podman" { "podman" } else { "docker" };
    let exe = std::env::current_exe().map_err(|e| Error::backend("current_exe", e))?;
    let exe = exe.to_string_lossy().into_owned();
    let n = a.iterations.max(3);
    let mut create_flags: Vec<String> = vec![
        "--driver".into(),
        a.driver.clone(),
        "--image".into(),
        a.image.clone(),
    ];
    let mut tool_flags: Vec<String> = vec!["--network".into(), "none".into()];
    let mut engine_limits: Vec<String> = Vec::new();
    if tool == "podman" {
        // Podman asks runc for more open files and processes than it has itself unless told a
        // number (containers then fail to start on hosts without CAP_SYS_RESOURCE); Stockade
        // passes the engine's own limits, and so does the baseline.
        let limits = stockade_docker::engine::local_engine_limits("unix:///run/podman/podman.sock");
        for (name, value) in [("nofile", limits.nofile), ("nproc", limits.nproc)] {
            if let Some(v) = value {
                engine_limits.extend(["--ulimit".into(), format!("{name}={v}:{v}")]);
            }
        }
    }
    tool_flags.extend(engine_limits.iter().cloned());
    if let Some(r) = &a.runtime {
        create_flags.extend(["--runtime".into(), r.clone()]);
        tool_flags.extend(["--runtime".into(), r.clone()]);
    }
    let args = |head: &[&str], flags: &[String], tail: &[&str]| -> Vec<String> {
        head.iter()
            .map(|s| (*s).to_owned())
            .chain(flags.iter().cloned())
            .chain(tail.iter().map(|s| (*s).to_owned()))
            .collect()
    };
    let run = |argv: &[String]| {
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        output_of(&refs)
    };
    let timed = |argv: &[String]| -> Result<(Duration, String)> {
        let start = Instant::now();
        let out = run(argv)?;
        Ok((start.elapsed(), out))
    };
    eprintln!(
        "stockade bench --driver {}: {n} iterations each, image {}; warming up",
        a.driver, a.image
    );
    let our_create = args(&[&exe, "create"], &create_flags, &[]);
    let their_run = args(
        &[tool, "run", "-d"],
        &tool_flags,
        &[&a.image, "sleep", "infinity"],
    );
    for _ in 0..2 {
        let id = run(&our_create)?;
        run(&[exe.clone(), "rm".into(), "-f".into(), id])?;
        let cid = run(&their_run)?;
        run(&[tool.into(), "rm".into(), "-f".into(), cid])?;
    }

    let mut rows = Vec::new();
    // 1. create → ready to exec, against `docker run -d IMAGE sleep infinity` as users type it
    // (the engine's default network), and against the same with `--network none` (what a
    // Stockade sandbox has by default).
    let mut their_default = vec![tool.to_owned(), "run".into(), "-d".into()];
    their_default.extend(engine_limits.iter().cloned());
    if let Some(r) = &a.runtime {
        their_default.extend(["--runtime".into(), r.clone()]);
    }
    their_default.extend([a.image.clone(), "sleep".into(), "infinity".into()]);
    let (mut ours, mut theirs, mut theirs_none) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let (t, id) = timed(&our_create)?;
        ours.push(t);
        run(&[exe.clone(), "rm".into(), "-f".into(), id])?;
        let (t, cid) = timed(&their_default)?;
        theirs.push(t);
        run(&[tool.into(), "rm".into(), "-f".into(), cid])?;
        let (t, cid) = timed(&their_run)?;
        theirs_none.push(t);
        run(&[tool.into(), "rm".into(), "-f".into(), cid])?;
    }
    let ours = summarize(ours);
    rows.push(Row::new(
        "create, ready to exec (stockade create)",
        ours,
        if tool == "podman" {
            "podman run -d IMAGE sleep inf"
        } else {
            "docker run -d IMAGE sleep inf"
        },
        summarize(theirs),
    ));
    rows.push(Row::new(
        "create, ready to exec (stockade create)",
        ours,
        "... run -d --network none ...",
        summarize(theirs_none),
    ));

    // 2. exec round trip on live sandboxes.
    let id = run(&our_create)?;
    let cid = run(&their_run)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..n {
        ours.push(timed(&[exe.clone(), "exec".into(), id.clone(), "--".into(), "true".into()])?.0);
        theirs.push(timed(&[tool.into(), "exec".into(), cid.clone(), "true".into()])?.0);
    }
    rows.push(Row::new(
        "exec round trip (stockade exec -- true)",
        summarize(ours),
        if tool == "podman" {
            "podman exec CONTAINER true"
        } else {
            "docker exec CONTAINER true"
        },
        summarize(theirs),
    ));
    // The same through the library, against the same baseline.
    let driver: Arc<dyn Driver> = router;
    let sid = driver.get(&id).await?.id;
    let mut lib = Vec::new();
    for _ in 0..n.max(50) {
        let start = Instant::now();
        driver
            .exec(&sid, ExecRequest::new(["true"]))
            .await?
            .output()
            .await?;
        lib.push(start.elapsed());
    }
    rows.push(Row::new(
        "exec round trip (library)",
        summarize(lib),
        if tool == "podman" {
            "podman exec CONTAINER true"
        } else {
            "docker exec CONTAINER true"
        },
        rows[2].baseline,
    ));
    run(&[exe.clone(), "rm".into(), "-f".into(), id])?;
    run(&[tool.into(), "rm".into(), "-f".into(), cid])?;

    // 3. create → exec → destroy, against `docker run --rm IMAGE true`.
    let our_run = args(&[&exe, "run"], &create_flags, &["--", "true"]);
    let their_once = args(&[tool, "run", "--rm"], &tool_flags, &[&a.image, "true"]);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..n {
        ours.push(timed(&our_run)?.0);
        theirs.push(timed(&their_once)?.0);
    }
    rows.push(Row::new(
        "create+exec+destroy (stockade run -- true)",
        summarize(ours),
        if tool == "podman" {
            "podman run --rm IMAGE true"
        } else {
            "docker run --rm IMAGE true"
        },
        summarize(theirs),
    ));

    if a.json {
        let v = serde_json::json!({ "driver": a.driver, "image": a.image, "runtime": a.runtime, "iterations": n, "rows": rows });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{:<44} {:>10} {:>10}   {:<32} {:>10}  {:>7}",
        "measurement", "median ms", "p90 ms", "baseline", "median ms", "ratio"
    );
    for r in &rows {
        println!(
            "{:<44} {:>10.2} {:>10.2}   {:<32} {:>10.2}  {:>6.2}x",
            r.name, r.stockade.median_ms, r.stockade.p90_ms, r.baseline_name, r.baseline.median_ms, r.ratio
        );
    }
    println!(
        "(driver {}, runtime {}, image {})",
        a.driver,
        a.runtime.as_deref().unwrap_or("engine default"),
        a.image
    );
    Ok(0)
}

/// Writes `files` small files (in directories of 100) into a new git repository at `dir`.
fn make_repo(dir: &std::path::Path, files: usize) -> Result<()> {
    let io = |e: std::io::Error| Error::backend(format!("write {}", dir.display()), e);
    for i in 0..files {
        let sub = dir.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&sub).map_err(io)?;
        }
        std::fs::write(sub.join(format!("f{i}.txt")), format!("file {i}\nline two\n")).map_err(io)?;
    }
    let d = dir.to_string_lossy().into_owned();
    for args in [
        vec!["-C", &d, "init", "-q"],
        vec!["-C", &d, "config", "gc.auto", "0"],
        vec!["-C", &d, "add", "-A"],
        vec![
            "-C",
            &d,
            "-c",
            "user.name=b",
            "-c",
            "user.email=b@b",
            "commit",
            "-q",
            "-m",
            "base",
        ],
    ] {
        output_of(
            &std::iter::once("git")
                .chain(args.iter().copied())
                .collect::<Vec<_>>(),
        )?;
    }
    Ok(())
}

/// `stockade bench --diff N`: `stockade diff` on an N-file repository with 10 files changed.
async fn run_diff(router: Arc<stockade_router::Router>, a: &BenchArgs, files: usize) -> Result<i32> {
    let exe = std::env::current_exe().map_err(|e| Error::backend("current_exe", e))?;
    let exe = exe.to_string_lossy().into_owned();
    let n = a.iterations.max(3);
    let scratch = router
        .registry()
        .config()
        .home
        .clone()
        .join(format!("cache/bench-diff-{}", std::process::id()));
    let repo = scratch.join("repo");
    eprintln!("stockade bench --diff {files}: making the repository");
    make_repo(&repo, files)?;
    let result = async {
        let mut create = vec![exe.clone(), "create".into(), "--driver".into(), a.driver.clone()];
        if a.driver != "native" {
            create.extend(["--image".into(), a.image.clone()]);
        }
        create.extend(["--code".into(), repo.display().to_string()]);
        let create: Vec<&str> = create.iter().map(String::as_str).collect();
        let id = output_of(&create)?;
        let edit = "for i in 0 1 2 3 4 5 6 7 8 9; do echo changed >> d00$i/f${i}00.txt 2>/dev/null || echo changed >> d000/f$i.txt; done";
        output_of(&[&exe, "exec", &id, "--", "sh", "-c", edit])?;
        // The same edit on the host copy, for the baseline.
        let host_edit = format!("cd '{}' && {edit}", repo.display());
        output_of(&["sh", "-c", &host_edit])?;
        let host_diff = format!(
            "cd '{}' && GIT_INDEX_FILE=.git/bench-index git read-tree HEAD 2>/dev/null; git add -A && git diff --cached --binary HEAD >/dev/null",
            repo.display()
        );
        // First run of each warms caches (and builds the host's stat-cached index).
        let ours_first = time_command(&[&exe, "diff", &id])?;
        time_command(&["sh", "-c", &host_diff])?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..n {
            ours.push(time_command(&[&exe, "diff", &id])?);
            theirs.push(time_command(&["sh", "-c", &host_diff])?);
        }
        let changed = output_of(&[&exe, "diff", &id, "--stat"])?;
        output_of(&[&exe, "rm", "-f", &id])?;
        Ok::<_, Error>((ours_first, summarize(ours), summarize(theirs), changed))
    }
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    let (first, ours, theirs, changed) = result?;
    let row = Row::new(
        "stockade diff (10 changed files)",
        ours,
        "git add -A && git diff --cached on the host",
        theirs,
    );
    if a.json {
        let v = serde_json::json!({ "driver": a.driver, "files": files, "first_ms": first.as_secs_f64() * 1000.0, "row": row });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "{:<36} {:>10} {:>10}   {:<44} {:>10}  {:>7}",
        "measurement", "median ms", "p90 ms", "baseline", "median ms", "ratio"
    );
    println!(
        "{:<36} {:>10.2} {:>10.2}   {:<44} {:>10.2}  {:>6.2}x",
        row.name,
        row.stockade.median_ms,
        row.stockade.p90_ms,
        row.baseline_name,
        row.baseline.median_ms,
        row.ratio
    );
    println!(
        "(driver {}, {files} files; first diff after load {:.1} ms; {})",
        a.driver,
        first.as_secs_f64() * 1000.0,
        changed.lines().last().unwrap_or("").trim()
    );
    Ok(0)
}

/// One HTTP/1.1 request on a kept-alive connection; returns the status and body.
fn http_call(
    conn: &mut std::io::BufReader<std::net::TcpStream>,
    request: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{BufRead, Read, Write};
    conn.get_mut().write_all(request.as_bytes())?;
    let mut status_line = String::new();
    conn.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body)?;
    Ok((status, body))
}

/// `stockade bench --api`: the daemon's exec round trip against the library's, interleaved.
async fn run_api(router: Arc<stockade_router::Router>, a: &BenchArgs) -> Result<i32> {
    let home = router.registry().config().home.clone();
    let config = stockade_server::ServerConfig::embedded(home.clone());
    let state = stockade_server::state(&config, Arc::clone(&router)).await?;
    state
        .access_log
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let token = format!("stk_bench{}", stockade_store::random_id()?);
    let token_id = stockade_store::random_id()?.to_string();
    state
        .db
        .create_token(&token_id, "bench", &token, stockade_store::now_secs())
        .await
        .map_err(|e| Error::backend("database", e))?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::backend("bind", e))?;
    let addr = listener.local_addr().map_err(|e| Error::backend("bind", e))?;
    let server_state = std::sync::Arc::clone(&state);
    // The daemon gets its own threads, as `stockade serve` has.
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async move {
            let _ = listener.set_nonblocking(true);
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let app = stockade_server::tcp_app(server_state);
            let _ = stockade_server::axum::serve(listener, app).await;
        });
    });
    let native = stockade_native::NativeDriver::from_config(router.registry().config())?;
    let info = native.create(stockade_core::SandboxSpec::default()).await?;
    let id = info.id.clone();
    let result = async {
        let stream = std::net::TcpStream::connect(addr).map_err(|e| Error::backend("connect", e))?;
        let _ = stream.set_nodelay(true);
        let mut conn = std::io::BufReader::new(stream);
        let body = r#"{"argv":["true"]}"#;
        let request = format!(
            "POST /api/sandboxes/{id}/execs?wait=true HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let n = a.iterations.max(3);
        let (mut ours, mut lib) = (Vec::new(), Vec::new());
        for i in 0..n + 3 {
            let start = Instant::now();
            let out = native.exec(&id, ExecRequest::new(["true"])).await?.output().await?;
            let lib_time = start.elapsed();
            if !out.exit.success() {
                return Err(Error::backend("bench", "true failed in-process"));
            }
            let start = Instant::now();
            let (status, reply) = http_call(&mut conn, &request).map_err(|e| Error::backend("http", e))?;
            let api_time = start.elapsed();
            if status != 200 {
                return Err(Error::backend("bench", format!("API answered {status}: {}", String::from_utf8_lossy(&reply))));
            }
            if i >= 3 {
                lib.push(lib_time);
                ours.push(api_time);
            }
        }
        Ok((summarize(ours), summarize(lib)))
    }
    .await;
    let _ = native.destroy(&id).await;
    let _ = state.db.remove_token(&token_id).await;
    let (api, lib) = result?;
    let row = Row::new(
        "exec `true` round trip through the daemon's API",
        api,
        "the same exec in-process (library)",
        lib,
    );
    if a.json {
        let v = serde_json::json!({ "row": row, "difference_ms": api.median_ms - lib.median_ms });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "{}: median {:.3} ms (p90 {:.3}); {}: median {:.3} ms (p90 {:.3}); difference {:+.3} ms, ratio {:.2}x",
            row.name, api.median_ms, api.p90_ms, row.baseline_name, lib.median_ms, lib.p90_ms,
            api.median_ms - lib.median_ms, row.ratio
        );
    }
    Ok(0)
}
