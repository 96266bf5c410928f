//! The conformance suite: what every driver must do the same way. Each case is an async function
//! over a [`Harness`]; [`conformance_suite!`] stamps out one `#[test]` per case for a driver, the
//! way ripgrep's `rgtest!` does for its flags. A driver is done when the whole suite passes.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use stockade_core::{
    Driver, ErrorKind, ExecEvent, ExecOutput, ExecRequest, FileKind, FileOp, FileReply, OutputStream,
    SandboxId, SandboxSpec, SandboxStatus, TtySize,
};

/// What a driver's test file provides.
pub trait Harness: Send + Sync {
    /// A fresh driver instance (a new one each call, as a second process would make).
    fn driver(&self) -> Arc<dyn Driver>;
    /// A spec for a plain sandbox of this driver.
    fn spec(&self) -> SandboxSpec;
    /// Everything of sandbox `id` that still exists on the host (processes, mounts, cgroups,
    /// directories, containers...), one line each. Empty once it is destroyed.
    fn leftovers(&self, id: &SandboxId) -> Vec<String>;
    /// Why this driver (or runtime, or way of reaching it) cannot support `case`, when it
    /// cannot. The case then prints the reason, is counted in the run's summary of excused cases
    /// ([`excuse`]) and passes without running; everything not named here must pass.
    fn unsupported(&self, case: Case) -> Option<String> {
        let _ = case;
        None
    }
    /// Why a case that hangs past [`CASE_TIMEOUT_SECS`] may run once more before it fails, when
    /// this driver has a known, rare hang (the retry is printed, and a second hang fails).
    fn retry_after_hang(&self) -> Option<String> {
        None
    }
}

/// Stamps out the suite for one driver: `conformance_suite!(make_harness);` where
/// `make_harness() -> Option<H>` returns `None` (after printing why) when the driver cannot run
/// here. Under `CI=true` a `None` fails the test instead of skipping it.
#[macro_export]
macro_rules! conformance_suite {
    ($make:path) => {
        $crate::__with_cases!(__stamp!(conformance $make));
    };
    (@cases $make:path; $module:ident; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let Some(h) = $make() else { return };
                if let Some(why) = $crate::Harness::unsupported(&h, $crate::Case::$case) {
                    $crate::excuse(env!("CARGO_TARGET_TMPDIR"), module_path!(), $crate::Case::$case, &why);
                    return;
                }
                let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
                // A case that hangs fails after a while instead of holding up the whole run.
                let limit = std::time::Duration::from_secs($crate::CASE_TIMEOUT_SECS);
                let run = || rt.block_on(async { tokio::time::timeout(limit, $crate::$module::$case(&h)).await });
                if run().is_err() {
                    match $crate::Harness::retry_after_hang(&h) {
                        Some(why) => {
                            eprintln!("RETRY: {} hung for {limit:?}; running it once more ({why})", stringify!($case));
                            if run().is_err() {
                                panic!("{} did not finish within {limit:?}, twice", stringify!($case));
                            }
                        }
                        None => panic!("{} did not finish within {limit:?}", stringify!($case)),
                    }
                }
            }
        )*
    };
}

/// Every case of both suites, once: the [`Case`] enum and both stamping macros are made from
/// these lists, so a case cannot be in one and not the other.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_cases {
    ($then:ident!($($args:tt)*)) => {
        $crate::$then!($($args)*;
            // The conformance suite.
            [
                    stdout_and_stderr_stay_apart_and_in_order,
                    exit_codes_and_signals,
                    env_and_cwd,
                    stdin_streams_in,
                    timeout_kills_tree_with_setsid_grandchild,
                    kill_ends_the_tree,
                    sequence_numbers_are_contiguous,
                    tty_mode,
                    command_not_found_is_an_error,
                    file_round_trips,
                    file_errors_name_the_path,
                    entries_and_walks_describe_files_in_full,
                    watchers_see_create_write_and_remove,
                    a_port_inside_is_reachable,
                    hundred_megabytes_of_output,
                    twenty_concurrent_execs,
                    fifty_sandboxes_at_once,
                    reattach_by_id_from_a_new_driver,
                    stop_start_keeps_files,
                    pause_stops_a_spinner_and_resume_goes_on,
                    a_non_root_user_owns_the_workspace,
                    stats_report_usage,
                    kept_exec_outlives_its_caller_and_replays_from_seq,
            ];
            // The isolation battery.
            [
                    fork_bomb_stops_at_the_pids_limit,
                    memory_past_the_limit_is_oom_killed,
                    file_past_the_size_limit_fails_with_efbig,
                    writes_past_the_disk_limit_fail_with_enospc,
                    spinning_tree_with_setsid_child_is_gone_after_timeout,
                    fd_exhaustion_hits_the_limit,
                    kernel_paths_are_masked_or_read_only,
                    host_pids_are_invisible_and_unkillable,
                    ptrace_fails,
                    mount_unshare_and_pivot_root_fail,
                    mknod_fails,
                    landlock_confines_writes,
                    no_capabilities_and_no_network_admin,
                    setuid_binaries_give_no_privilege,
                    network_none_has_only_loopback,
                    host_loopback_services_are_unreachable,
                    vsock_and_io_uring_are_denied,
                    tiocsti_is_denied,
                    host_environment_is_invisible,
                    sandboxes_cannot_see_each_other,
                    destroy_leaves_nothing_behind,
            ]
        );
    };
}

/// Stamps one suite's cases (see [`__with_cases`]).
#[doc(hidden)]
#[macro_export]
macro_rules! __stamp {
    (conformance $make:path; [$($c:ident),* $(,)?]; [$($i:ident),* $(,)?]) => {
        $crate::conformance_suite!(@cases $make; cases; $($c),*);
    };
    (isolation $make:path; [$($c:ident),* $(,)?]; [$($i:ident),* $(,)?]) => {
        $crate::conformance_suite!(@cases $make; isolation; $($i),*);
    };
}

/// Makes [`Case`] from the lists.
#[doc(hidden)]
#[macro_export]
macro_rules! __case_enum {
    (; [$($c:ident),* $(,)?]; [$($i:ident),* $(,)?]) => {
        /// Every case of both suites, by name: what a harness excuses (`Harness::unsupported`) is
        /// one of these, so a typo or a case that no longer exists does not compile.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Case {
            $($c,)*
            $($i,)*
        }
    };
}

__with_cases!(__case_enum!());

/// The file under a test binary's `CARGO_TARGET_TMPDIR` where excused cases are listed, one per
/// line (`harness<TAB>case<TAB>reason`); `scripts/test` prints them with a count at the end of
/// the run.
pub const EXCUSED_FILE: &str = "stockade-excused-cases.tsv";

/// Records that `harness` (the test module's path) excused `case` for `why`: printed now, and
/// appended to [`EXCUSED_FILE`] for the run's summary.
pub fn excuse(tmpdir: &str, harness: &str, case: Case, why: &str) {
    eprintln!("NOT SUPPORTED by this driver: {case:?}: {why}");
    let line = format!("{harness}\t{case:?}\t{}\n", why.replace(['\t', '\n'], " "));
    let path = std::path::Path::new(tmpdir).join(EXCUSED_FILE);
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = appended {
        eprintln!("could not record the excuse in {}: {e}", path.display());
    }
}

/// How long one case may take before it fails as hung (the slowest, a hundred megabytes of output
/// under gVisor's ptrace platform, takes well under a minute).
pub const CASE_TIMEOUT_SECS: u64 = 150;

/// Prints why a driver is skipped; panics instead when `CI=true`.
pub fn skip(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and this test cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// A sandbox that is destroyed when the case ends, even when it fails.
pub struct Sandbox {
    pub driver: Arc<dyn Driver>,
    pub id: SandboxId,
}

impl Sandbox {
    pub async fn new(h: &dyn Harness) -> Sandbox {
        Sandbox::with_spec(h, h.spec()).await
    }

    pub async fn with_spec(h: &dyn Harness, spec: SandboxSpec) -> Sandbox {
        let driver = h.driver();
        let info = driver.create(spec).await.expect("create sandbox");
        Sandbox { driver, id: info.id }
    }

    /// Runs `sh -c script` to the end.
    pub async fn sh(&self, script: &str) -> ExecOutput {
        self.run(ExecRequest::new(["sh", "-c", script])).await
    }

    pub async fn run(&self, req: ExecRequest) -> ExecOutput {
        self.driver
            .exec(&self.id, req)
            .await
            .expect("start exec")
            .output()
            .await
            .expect("exec output")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let (driver, id) = (Arc::clone(&self.driver), self.id.clone());
        // Destroy on a separate thread with its own runtime: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = rt.block_on(driver.destroy(&id));
        })
        .join();
    }
}

pub mod isolation;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub mod cases {
    use super::*;

    pub async fn stdout_and_stderr_stay_apart_and_in_order(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let out = sb
            .sh("i=0; while [ $i -lt 200 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done")
            .await;
        let expect = |p: &str| (0..200).map(|i| format!("{p}{i}\n")).collect::<String>();
        assert_eq!(text(&out.stdout), expect("out"));
        assert_eq!(text(&out.stderr), expect("err"));
        assert_eq!(out.exit.code, Some(0));
    }

    pub async fn exit_codes_and_signals(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        assert_eq!(sb.sh("exit 0").await.exit.code, Some(0));
        let three = sb.sh("exit 3").await.exit;
        assert_eq!(
            (three.code, three.signal, three.timed_out),
            (Some(3), None, false)
        );
        let killed = sb.sh("kill -TERM $$").await.exit;
        assert_eq!((killed.code, killed.signal), (None, Some(15)));
        assert_eq!(killed.shell_code(), 143);
    }

    pub async fn env_and_cwd(h: &dyn Harness) {
        let mut spec = h.spec();
        spec.env.insert("FROM_SPEC".into(), "spec".into());
        spec.env.insert("OVERRIDE".into(), "spec".into());
        let sb = Sandbox::with_spec(h, spec).await;
        let out = sb
            .sh("pwd; echo $FROM_SPEC $OVERRIDE $FROM_REQ; echo $HOME")
            .await;
        assert_eq!(text(&out.stdout), "/workspace\nspec spec\n/root\n");
        let mut req = ExecRequest::new(["sh", "-c", "pwd; echo $FROM_SPEC $OVERRIDE $FROM_REQ"]);
        req.cwd = Some("/tmp".into());
        req.env.insert("OVERRIDE".into(), "req".into());
        req.env.insert("FROM_REQ".into(), "r".into());
        assert_eq!(text(&sb.run(req).await.stdout), "/tmp\nspec req r\n");
        // Nothing from the host's environment leaks in.
        std::env::set_var("STOCKADE_CONFORMANCE_HOST_SECRET", "hunter2");
        let env = text(&sb.sh("env").await.stdout);
        assert!(!env.contains("hunter2"), "host env leaked: {env}");
    }

    pub async fn stdin_streams_in(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let mut req = ExecRequest::new(["sh", "-c", "cat; echo done >&2"]);
        req.stdin = true;
        let session = sb.driver.exec(&sb.id, req).await.unwrap();
        let control = Arc::clone(&session.control);
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(10_000) {
                control.write_stdin(chunk).await.unwrap();
            }
            control.close_stdin().await.unwrap();
        });
        let out = session.output().await.unwrap();
        writer.await.unwrap();
        assert_eq!(out.stdout.len(), payload.len());
        assert!(out.stdout == payload, "stdin bytes came back changed");
        assert_eq!(text(&out.stderr), "done\n");
        // Without stdin, the command reads EOF at once.
        assert_eq!(sb.sh("cat; echo eof").await.stdout, b"eof\n");
    }

    pub async fn timeout_kills_tree_with_setsid_grandchild(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let mut req = ExecRequest::new([
            "sh",
            "-c",
            "setsid sh -c 'echo $$ > /tmp/grandchild; exec sleep 1000' & sleep 1000 & echo $! > /tmp/child; wait",
        ]);
        req.timeout = Some(Duration::from_millis(1500));
        let started = std::time::Instant::now();
        let out = sb.run(req).await;
        assert!(out.exit.timed_out, "{:?}", out.exit);
        assert_eq!(out.exit.signal, Some(9));
        assert!(started.elapsed() < Duration::from_secs(10));
        let check = sb
            .sh("for f in /tmp/grandchild /tmp/child; do p=$(cat $f); if kill -0 $p 2>/dev/null; then echo alive $f; fi; done; ps -eo comm | grep -c '^sleep$' || true")
            .await;
        assert_eq!(
            text(&check.stdout),
            "0\n",
            "leftover processes: {}",
            text(&check.stdout)
        );
    }

    pub async fn kill_ends_the_tree(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let session = sb
            .driver
            .exec(
                &sb.id,
                ExecRequest::new(["sh", "-c", "sleep 1000 & echo ready; wait"]),
            )
            .await
            .unwrap();
        let mut events = session.events;
        loop {
            match events.next().await.unwrap().unwrap() {
                ExecEvent::Output { data, .. } if data.starts_with(b"ready") => break,
                ExecEvent::Exited { .. } => panic!("exited early"),
                _ => {}
            }
        }
        session.control.kill().await.unwrap();
        let exit = loop {
            if let ExecEvent::Exited { exit, .. } = events.next().await.unwrap().unwrap() {
                break exit;
            }
        };
        assert_eq!(exit.signal, Some(9));
        assert!(!exit.timed_out);
        assert_eq!(
            text(&sb.sh("ps -eo comm | grep -c '^sleep$' || true").await.stdout),
            "0\n"
        );
    }

    pub async fn kept_exec_outlives_its_caller_and_replays_from_seq(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let mut req = ExecRequest::new(["sh", "-c", "echo one; echo two >&2; read x; echo got $x; exit 7"]);
        req.stdin = true;
        let first = sb.driver.exec_kept(&sb.id, req.clone(), "kept-1").await.unwrap();
        let mut events = first.events;
        let mut seen = Vec::new();
        while seen.len() < 3 {
            seen.push(events.next().await.unwrap().unwrap());
        }
        // The caller goes away; the exec waits on stdin.
        drop(events);
        drop(first.control);
        let err = sb
            .driver
            .exec_kept(&sb.id, req, "kept-1")
            .await
            .err()
            .expect("a duplicate id is refused");
        assert!(err.to_string().contains("already in use"), "{err}");
        let err = sb
            .driver
            .attach(&sb.id, "no-such-exec", 0)
            .await
            .err()
            .expect("unknown id");
        assert_eq!(err.to_string(), "no such exec: no-such-exec");

        // A new caller replays everything from 0...
        let again = h.driver();
        let replay = again.attach(&sb.id, "kept-1", 0).await.unwrap();
        let mut replayed = Vec::new();
        let mut events = replay.events;
        while replayed.len() < 3 {
            replayed.push(events.next().await.unwrap().unwrap());
        }
        assert_eq!(replayed, seen, "the replay differs from the live events");
        drop(events);
        // ...and one that has the first two events gets exactly the rest, steers it, sees the end.
        let rest = again.attach(&sb.id, "kept-1", 2).await.unwrap();
        rest.control.write_stdin(b"hi\n").await.unwrap();
        let mut events = rest.events;
        let mut next_seq = 2;
        let mut stdout = Vec::new();
        let exit = loop {
            let event = events.next().await.unwrap().unwrap();
            assert_eq!(event.seq(), next_seq, "gap or duplicate at {event:?}");
            next_seq += 1;
            match event {
                ExecEvent::Output { data, .. } => stdout.extend(data),
                ExecEvent::Exited { exit, .. } => break exit,
                ExecEvent::Started { .. } => panic!("Started replayed after seq 0"),
            }
        };
        let all_text: String = seen
            .iter()
            .filter_map(|e| match e {
                ExecEvent::Output { data, .. } => Some(text(data)),
                _ => None,
            })
            .collect();
        assert!(all_text.contains("one") || text(&stdout).contains("one"));
        assert!(text(&stdout).contains("got hi"), "{}", text(&stdout));
        assert_eq!(exit.code, Some(7));
        // A finished exec can still be read from the start.
        let late = again
            .attach(&sb.id, "kept-1", 0)
            .await
            .unwrap()
            .output()
            .await
            .unwrap();
        assert_eq!(late.exit.code, Some(7));
        assert!(
            text(&late.stdout).contains("one\ngot hi\n"),
            "{}",
            text(&late.stdout)
        );
        assert_eq!(text(&late.stderr), "two\n");
    }

    pub async fn sequence_numbers_are_contiguous(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let mut events = sb
            .driver
            .exec(
                &sb.id,
                ExecRequest::new(["sh", "-c", "seq 1 2000; seq 1 500 >&2"]),
            )
            .await
            .unwrap()
            .events;
        let mut expected = 0;
        let mut started = false;
        while let Some(e) = events.next().await {
            let e = e.unwrap();
            assert_eq!(e.seq(), expected, "gap or duplicate at {e:?}");
            expected += 1;
            match e {
                ExecEvent::Started { pid, .. } => {
                    assert!(pid > 0);
                    started = true;
                }
                ExecEvent::Output { .. } => assert!(started),
                ExecEvent::Exited { .. } => break,
            }
        }
        assert!(expected >= 3);
    }

    pub async fn tty_mode(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let mut req = ExecRequest::new(["sh", "-c", "tty; stty size; echo $TERM"]);
        req.tty = Some(TtySize { rows: 33, cols: 101 });
        let out = sb.run(req).await;
        let s = text(&out.stdout);
        assert!(s.starts_with("/dev/pts/"), "{s:?}");
        assert!(s.contains("33 101"), "{s:?}");
        assert!(s.contains("xterm"), "{s:?}");
        assert_eq!(out.exit.code, Some(0));
        // Interactive: what we type comes back, and the shell exits when told.
        let mut req = ExecRequest::new(["sh"]);
        req.tty = Some(TtySize::default());
        let session = sb.driver.exec(&sb.id, req).await.unwrap();
        session
            .control
            .write_stdin(b"echo hi-$((40+2))\nexit 7\n")
            .await
            .unwrap();
        let out = session.output().await.unwrap();
        assert!(text(&out.stdout).contains("hi-42"), "{}", text(&out.stdout));
        assert_eq!(out.exit.code, Some(7));
    }

    pub async fn command_not_found_is_an_error(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let err = sb
            .driver
            .exec(&sb.id, ExecRequest::new(["no-such-command-xyz"]))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::CommandNotFound, "{err:?}");
        assert!(err.to_string().contains("no-such-command-xyz"));
        let mut req = ExecRequest::new(["true"]);
        req.cwd = Some("/no/such/dir".into());
        let err = sb.driver.exec(&sb.id, req).await.err().unwrap();
        assert!(err.to_string().contains("/no/such/dir"), "{err}");
        // The sandbox is still fine afterwards.
        assert_eq!(sb.sh("echo ok").await.stdout, b"ok\n");
    }

    pub async fn file_round_trips(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let d = &sb.driver;
        let binary: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        d.mkdir(&sb.id, "/workspace/a/b/c").await.unwrap();
        d.write_file(&sb.id, "/workspace/a/b/c/bin", binary.clone(), 0o600)
            .await
            .unwrap();
        d.write_file(&sb.id, "/workspace/empty", Vec::new(), 0o644)
            .await
            .unwrap();
        d.write_file(
            &sb.id,
            "/workspace/run.sh",
            b"#!/bin/sh\necho ran\n".to_vec(),
            0o755,
        )
        .await
        .unwrap();
        assert!(d.read_file(&sb.id, "/workspace/a/b/c/bin").await.unwrap() == binary);
        assert_eq!(
            d.read_file(&sb.id, "/workspace/empty").await.unwrap(),
            Vec::<u8>::new()
        );
        let st = d.stat(&sb.id, "/workspace/a/b/c/bin").await.unwrap();
        assert_eq!((st.kind, st.size, st.mode), (FileKind::File, 1 << 20, 0o600));
        assert_eq!(d.stat(&sb.id, "/workspace/a").await.unwrap().kind, FileKind::Dir);
        // What the API wrote, a command sees, and the reverse.
        assert_eq!(
            sb.sh("./run.sh; sha256sum < a/b/c/bin | cut -c1-16")
                .await
                .stdout
                .len(),
            4 + 17
        );
        sb.sh("printf 'from exec' > /workspace/made-by-exec").await;
        assert_eq!(
            d.read_file(&sb.id, "/workspace/made-by-exec").await.unwrap(),
            b"from exec"
        );
        // Overwrite is atomic and replaces the whole file.
        d.write_file(&sb.id, "/workspace/empty", b"now full".to_vec(), 0o644)
            .await
            .unwrap();
        assert_eq!(
            d.read_file(&sb.id, "/workspace/empty").await.unwrap(),
            b"now full"
        );
        d.rename(&sb.id, "/workspace/empty", "/workspace/renamed")
            .await
            .unwrap();
        let names: Vec<String> = d
            .list_dir(&sb.id, "/workspace")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["a", "made-by-exec", "renamed", "run.sh"]);
        d.remove(&sb.id, "/workspace/a", true).await.unwrap();
        d.remove(&sb.id, "/workspace/renamed", false).await.unwrap();
        let names: Vec<String> = d
            .list_dir(&sb.id, "/workspace")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["made-by-exec", "run.sh"]);
    }

    pub async fn file_errors_name_the_path(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let err = sb
            .driver
            .read_file(&sb.id, "/workspace/missing")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "/workspace/missing: no such file or directory");
        let err = sb
            .driver
            .write_file(&sb.id, "/no/such/dir/f", vec![1], 0o644)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("/no/such/dir/f:"), "{err}");
        let err = sb.driver.read_file(&sb.id, "relative").await.unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
        // A device that never ends and a FIFO that never opens are refused, and pid 1 lives on.
        assert!(sb.sh("mkfifo /tmp/fifo").await.exit.success());
        for path in ["/dev/zero", "/tmp/fifo"] {
            let err = sb.driver.read_file(&sb.id, path).await.unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{path}: {err}");
        }
        assert_eq!(text(&sb.sh("echo alive").await.stdout), "alive\n");
    }

    pub async fn entries_and_walks_describe_files_in_full(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let d = &sb.driver;
        let made = sb
            .sh("mkdir -p /workspace/w/d && printf abc > /workspace/w/f && chmod 640 /workspace/w/f && ln -s f /workspace/w/l && ln -s gone /workspace/w/dangling && : > /workspace/w/d/inner")
            .await;
        assert!(made.exit.success(), "{}", text(&made.stderr));
        let entry = |path: &str| {
            let (d, id, path) = (Arc::clone(d), sb.id.clone(), path.to_owned());
            async move {
                match d.file(&id, FileOp::Entry { path }).await.unwrap() {
                    FileReply::Entry { entry } => entry,
                    other => panic!("{other:?}"),
                }
            }
        };
        let f = entry("/workspace/w/f").await;
        assert_eq!((f.name.as_str(), f.path.as_str()), ("f", "/workspace/w/f"));
        assert_eq!((f.kind, f.size, f.mode & 0o7777), (FileKind::File, 3, 0o640));
        assert!(!f.owner.is_empty() && !f.group.is_empty(), "{f:?}");
        assert_eq!(f.symlink_target, None);
        // A symlink is described by what it points at, and says where that is.
        let l = entry("/workspace/w/l").await;
        assert_eq!((l.kind, l.size), (FileKind::File, 3), "{l:?}");
        assert_eq!(l.symlink_target.as_deref(), Some("/workspace/w/f"));
        let dangling = entry("/workspace/w/dangling").await;
        assert_eq!(dangling.kind, FileKind::Symlink, "{dangling:?}");
        let walk = |depth: u32| {
            let (d, id) = (Arc::clone(d), sb.id.clone());
            async move {
                let op = FileOp::Walk {
                    path: "/workspace/w".into(),
                    depth,
                };
                match d.file(&id, op).await.unwrap() {
                    FileReply::Walk { entries } => entries.into_iter().map(|e| e.path).collect::<Vec<_>>(),
                    other => panic!("{other:?}"),
                }
            }
        };
        let top = [
            "/workspace/w/d",
            "/workspace/w/dangling",
            "/workspace/w/f",
            "/workspace/w/l",
        ];
        assert_eq!(walk(1).await, top);
        let deep = walk(2).await;
        assert_eq!(deep.len(), 5, "{deep:?}");
        assert!(deep.contains(&"/workspace/w/d/inner".to_owned()), "{deep:?}");
        let missing = d
            .file(
                &sb.id,
                FileOp::Entry {
                    path: "/workspace/nope".into(),
                },
            )
            .await
            .unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::File, "{missing}");
        assert!(missing.to_string().contains("/workspace/nope"), "{missing}");
        let not_dir = d
            .file(
                &sb.id,
                FileOp::Walk {
                    path: "/workspace/w/f".into(),
                    depth: 1,
                },
            )
            .await
            .unwrap_err();
        assert!(not_dir.to_string().contains("not a directory"), "{not_dir}");
    }

    pub async fn watchers_see_create_write_and_remove(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let d = &sb.driver;
        d.mkdir(&sb.id, "/workspace/watched").await.unwrap();
        let start = FileOp::WatchStart {
            path: "/workspace/watched".into(),
            recursive: true,
        };
        let FileReply::Watcher { watcher } = d.file(&sb.id, start).await.unwrap() else {
            panic!("no watcher id");
        };
        let events = || {
            let (d, id, watcher) = (Arc::clone(d), sb.id.clone(), watcher.clone());
            async move {
                match d.file(&id, FileOp::WatchEvents { watcher }).await.unwrap() {
                    FileReply::Events { events } => {
                        events.into_iter().map(|e| (e.name, e.kind)).collect::<Vec<_>>()
                    }
                    other => panic!("{other:?}"),
                }
            }
        };
        use stockade_core::WatchEventKind::*;
        // Written in place, as E2B's envd writes: created, its mode set, written.
        let write = FileOp::Write {
            path: "/workspace/watched/new".into(),
            mode: 0o644,
            data: b"x".to_vec(),
            in_place: true,
            owner: None,
        };
        d.file(&sb.id, write).await.unwrap();
        assert_eq!(
            events().await,
            [
                ("new".to_owned(), Create),
                ("new".to_owned(), Chmod),
                ("new".to_owned(), Write)
            ]
        );
        assert!(sb.sh("mkdir /workspace/watched/sub && echo y > /workspace/watched/sub/f && rm /workspace/watched/new").await.exit.success());
        let seen = events().await;
        assert_eq!(seen.first(), Some(&("sub".to_owned(), Create)), "{seen:?}");
        assert!(seen.contains(&("new".to_owned(), Remove)), "{seen:?}");
        // A directory made after the start is watched too: what was made in it before the
        // watcher saw the directory is reported as created.
        assert!(seen.contains(&("sub/f".to_owned(), Create)), "{seen:?}");
        assert_eq!(events().await, [], "events are taken once");
        d.file(
            &sb.id,
            FileOp::WatchStop {
                watcher: watcher.clone(),
            },
        )
        .await
        .unwrap();
        let stopped = d.file(&sb.id, FileOp::WatchEvents { watcher }).await.unwrap_err();
        assert!(stopped.to_string().contains("no such watcher"), "{stopped}");
    }

    /// A server on the sandbox's loopback is reached through the driver (what the daemon's E2B
    /// surface forwards a sandbox port over), whatever the sandbox's network mode.
    pub async fn a_port_inside_is_reachable(h: &dyn Harness) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sb = Sandbox::new(h).await;
        let server = "import socket\n\
            s = socket.socket()\n\
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
            s.bind(('127.0.0.1', 7171))\n\
            s.listen(1)\n\
            print('listening', flush=True)\n\
            c, _ = s.accept()\n\
            c.sendall(b'hello ' + c.recv(100))\n\
            c.close()\n";
        let mut session = sb
            .driver
            .exec(&sb.id, ExecRequest::new(["python3", "-c", server]))
            .await
            .unwrap();
        loop {
            match session.events.next().await {
                Some(Ok(ExecEvent::Output { data, .. })) if text(&data).contains("listening") => break,
                Some(Ok(ExecEvent::Exited { exit, .. })) => panic!("the server exited: {exit:?}"),
                None | Some(Err(_)) => panic!("the server's exec ended"),
                Some(Ok(_)) => {}
            }
        }
        let mut stream = sb.driver.connect_port(&sb.id, 7171).await.unwrap();
        stream.write_all(b"port").await.unwrap();
        stream.flush().await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "the stream did not end when the server closed (read so far: {:?})",
            text(&answer)
        );
        assert_eq!(text(&answer), "hello port");
        let refused = sb
            .driver
            .connect_port(&sb.id, 7172)
            .await
            .err()
            .expect("nothing listens on 7172");
        assert!(refused.to_string().contains("7172"), "{refused}");
        drop(session);
    }

    pub async fn hundred_megabytes_of_output(h: &dyn Harness) {
        use sha2::Digest;
        let sb = Sandbox::new(h).await;
        let script = "head -c 100000000 /dev/urandom | tee /tmp/sent; sha256sum < /tmp/sent | cut -c1-64 >&2";
        let mut events = sb
            .driver
            .exec(&sb.id, ExecRequest::new(["sh", "-c", script]))
            .await
            .unwrap()
            .events;
        let mut received = 0usize;
        let mut hasher = sha2::Sha256::new();
        let mut stderr = Vec::new();
        let run = async {
            while let Some(e) = events.next().await {
                match e.unwrap() {
                    ExecEvent::Output {
                        stream: OutputStream::Stdout,
                        data,
                        ..
                    } => {
                        received += data.len();
                        hasher.update(&data);
                    }
                    ExecEvent::Output {
                        stream: OutputStream::Stderr,
                        data,
                        ..
                    } => stderr.extend(data),
                    ExecEvent::Exited { exit, .. } => return exit,
                    _ => {}
                }
            }
            panic!("no exit event");
        };
        let exit = tokio::time::timeout(Duration::from_secs(300), run)
            .await
            .expect("100 MB of output deadlocked");
        assert_eq!(exit.code, Some(0));
        assert_eq!(received, 100_000_000);
        let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            text(&stderr).trim(),
            digest,
            "bytes were lost or changed on the way"
        );
    }

    /// Twenty execs are all running at the same moment: each marks itself started and waits
    /// for the other nineteen before it prints and exits, so execs run one after another would
    /// never finish (each gives up after two minutes with exit 99). A barrier, not a stopwatch:
    /// a loaded host makes this slower, never wrong.
    pub async fn twenty_concurrent_execs(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        assert!(sb.sh("mkdir -p /tmp/started").await.exit.success());
        let runs = (0..20).map(|i| {
            let (d, id) = (Arc::clone(&sb.driver), sb.id.clone());
            async move {
                let script = format!(
                    ": > /tmp/started/{i}; n=0; \
                     while set -- /tmp/started/*; [ $# -lt 20 ]; do \
                       n=$((n+1)); [ $n -gt 1200 ] && exit 99; sleep 0.1; \
                     done; echo {i}; echo e{i} >&2; exit {}",
                    i % 7
                );
                d.exec(&id, ExecRequest::new(["sh", "-c", &script]))
                    .await
                    .unwrap()
                    .output()
                    .await
                    .unwrap()
            }
        });
        let outs = tokio::time::timeout(Duration::from_secs(300), futures::future::join_all(runs))
            .await
            .expect("twenty execs did not finish");
        for (i, out) in outs.iter().enumerate() {
            assert_ne!(
                out.exit.code,
                Some(99),
                "exec {i} waited alone: execs ran one after another"
            );
            assert_eq!(text(&out.stdout), format!("{i}\n"));
            assert_eq!(text(&out.stderr), format!("e{i}\n"));
            assert_eq!(out.exit.code, Some(i as i32 % 7));
        }
    }

    pub async fn fifty_sandboxes_at_once(h: &dyn Harness) {
        let creates = (0..50).map(|_| Sandbox::new(h));
        let sandboxes = futures::future::join_all(creates).await;
        let runs = sandboxes.iter().enumerate().map(|(i, sb)| async move {
            sb.sh(&format!("echo {i} > /workspace/n; cat /workspace/n; hostname"))
                .await
        });
        let outs = futures::future::join_all(runs).await;
        let mut hostnames = std::collections::BTreeSet::new();
        for (i, out) in outs.iter().enumerate() {
            let s = text(&out.stdout);
            let mut lines = s.lines();
            assert_eq!(lines.next(), Some(i.to_string().as_str()));
            hostnames.insert(lines.next().unwrap_or_default().to_owned());
        }
        assert_eq!(hostnames.len(), 50, "each sandbox has its own hostname");
        let ids: std::collections::BTreeSet<_> = sandboxes.iter().map(|s| s.id.clone()).collect();
        let listed = h.driver().list().await.unwrap();
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| {
                !listed
                    .iter()
                    .any(|s| &s.id == *id && s.status == SandboxStatus::Running)
            })
            .map(|id| {
                let seen = listed.iter().find(|s| &s.id == id);
                format!(
                    "{id}: {:?}",
                    seen.map(|s| (s.status, s.details.get("engine_error")))
                )
            })
            .collect();
        assert!(missing.is_empty(), "not listed as running: {missing:?}");
    }

    pub async fn reattach_by_id_from_a_new_driver(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        sb.sh("echo kept > /workspace/state").await;
        let other = h.driver();
        let info = other.get(sb.id.as_str()).await.unwrap();
        assert_eq!(info.status, SandboxStatus::Running);
        let out = other
            .exec(&sb.id, ExecRequest::new(["cat", "/workspace/state"]))
            .await
            .unwrap()
            .output()
            .await
            .unwrap();
        assert_eq!(out.stdout, b"kept\n");
    }

    /// Pause freezes the sandbox: a spinning process gains (next to) no CPU time over two paused
    /// seconds, execs are refused naming the state, pausing twice is refused; resume lets the
    /// same process go on. Stop works from paused.
    pub async fn pause_stops_a_spinner_and_resume_goes_on(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        let d = &sb.driver;
        let _spinner = d
            .exec(
                &sb.id,
                ExecRequest::new(["sh", "-c", "echo $$ > /tmp/spinner; while :; do :; done"]),
            )
            .await
            .unwrap();
        // pid, then utime + stime in clock ticks (100 a second).
        let read = "pid=$(cat /tmp/spinner 2>/dev/null) && set -- $(cut -d' ' -f14,15 /proc/$pid/stat) && echo $pid $(($1 + $2))";
        let sample = || async {
            let out = text(&sb.sh(read).await.stdout);
            let mut words = out.split_whitespace();
            match (words.next(), words.next().and_then(|t| t.parse::<u64>().ok())) {
                (Some(pid), Some(ticks)) => Some((pid.to_owned(), ticks)),
                _ => None,
            }
        };
        let mut before = None;
        for _ in 0..100 {
            before = sample().await;
            if before.as_ref().is_some_and(|(_, ticks)| *ticks > 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (pid, ticks_before) = before.expect("the spinner started");
        d.pause(&sb.id).await.unwrap();
        assert_eq!(d.get(sb.id.as_str()).await.unwrap().status, SandboxStatus::Paused);
        let err = d.exec(&sb.id, ExecRequest::new(["true"])).await.err().unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongState, "{err}");
        assert!(err.to_string().contains("paused"), "{err}");
        let twice = d.pause(&sb.id).await.unwrap_err();
        assert_eq!(twice.kind(), ErrorKind::WrongState, "{twice}");
        tokio::time::sleep(Duration::from_secs(2)).await;
        d.resume(&sb.id).await.unwrap();
        let (pid_after, ticks_after) = sample().await.expect("the spinner after resume");
        assert_eq!(pid_after, pid, "the spinner is the same process");
        // Unpaused, two seconds of spinning is up to 200 ticks; the reads around the pause
        // (one exec each side) are what may count.
        assert!(
            ticks_after - ticks_before <= 40,
            "the spinner ran while paused: {ticks_before} -> {ticks_after} ticks"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, later) = sample().await.expect("the spinner goes on");
        assert!(later > ticks_after, "the spinner did not run after resume");
        let not_paused = d.resume(&sb.id).await.unwrap_err();
        assert_eq!(not_paused.kind(), ErrorKind::WrongState, "{not_paused}");
        d.pause(&sb.id).await.unwrap();
        d.stop(&sb.id).await.unwrap();
        assert_eq!(
            d.get(sb.id.as_str()).await.unwrap().status,
            SandboxStatus::Stopped
        );
    }

    pub async fn stop_start_keeps_files(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        sb.sh("echo persisted > /workspace/f; echo upper > /root/in-home")
            .await;
        sb.driver.stop(&sb.id).await.unwrap();
        assert_eq!(
            sb.driver.get(sb.id.as_str()).await.unwrap().status,
            SandboxStatus::Stopped
        );
        let err = sb
            .driver
            .exec(&sb.id, ExecRequest::new(["true"]))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), ErrorKind::WrongState, "{err:?}");
        sb.driver.start(&sb.id).await.unwrap();
        assert_eq!(
            sb.sh("cat /workspace/f /root/in-home").await.stdout,
            b"persisted\nupper\n"
        );
    }

    pub async fn a_non_root_user_owns_the_workspace(h: &dyn Harness) {
        let mut spec = h.spec();
        spec.user = Some("1000:1000".into());
        let sb = Sandbox::with_spec(h, spec).await;
        // The owner as the kernel reports it (python's stat(2), not coreutils' statx, which
        // gVisor's 2022 release refuses with EINVAL).
        let out = sb.sh("id -u; id -g; touch /workspace/mine && python3 -c 'import os; print(os.stat(\"/workspace/mine\").st_uid)'; touch /etc/x 2>/dev/null || echo denied").await;
        assert_eq!(
            text(&out.stdout),
            "1000\n1000\n1000\ndenied\n",
            "{}",
            text(&out.stderr)
        );
        // A request can still ask for root.
        let mut req = ExecRequest::new(["id", "-u"]);
        req.user = Some("root".into());
        assert_eq!(sb.run(req).await.stdout, b"0\n");
    }

    pub async fn stats_report_usage(h: &dyn Harness) {
        let sb = Sandbox::new(h).await;
        sb.sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done").await;
        let stats = sb.driver.stats(&sb.id).await.unwrap();
        assert!(stats.pids >= 1, "{stats:?}");
        assert!(stats.memory_bytes > 0, "{stats:?}");
        assert!(stats.cpu_usec > 0, "{stats:?}");
    }
}
