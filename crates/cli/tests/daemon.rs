//! `stockade serve` end to end: the real binary, real sandboxes, real HTTP, SSE and WebSocket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Home;
use serde_json::{json, Value};

/// A running daemon on a free loopback port, logging to a file.
struct Daemon {
    port: u16,
    token: String,
    extra: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    home: PathBuf,
}

/// The Postgres database the daemon tests use instead of SQLite, when `scripts/with-postgres`
/// runs them (all tests share it; every row they make is keyed by a fresh id).
fn postgres() -> Option<String> {
    std::env::var("STOCKADE_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    fn start(home: &Home) -> Daemon {
        Daemon::start_with(home, &[])
    }

    fn start_with(home: &Home, extra: &[&str]) -> Daemon {
        std::fs::create_dir_all(&home.dir).unwrap();
        let out = home
            .cmd(&["token", "create", "--name", "test"])
            .envs(postgres().map(|url| ("STOCKADE_DB", url)))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut d = Daemon {
            port: free_port(),
            token,
            extra: extra
                .iter()
                .map(|s| s.to_string())
                .chain(postgres().into_iter().flat_map(|url| ["--db".to_owned(), url]))
                .collect(),
            child: None,
            log: home.dir.join("serve.log"),
            home: home.dir.clone(),
        };
        d.restart();
        d
    }

    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stockade"))
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--socket")
            .arg(self.home.join("d.sock"))
            .args(&self.extra)
            .env("STOCKADE_HOME", &self.home)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, _)) = self.try_call("GET", "/healthz", None) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the daemon did not come up: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn try_call(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
        let req = ureq::request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(120));
        let res = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        match res {
            Ok(r) => Ok((r.status(), r.into_string().map_err(|e| e.to_string())?)),
            Err(ureq::Error::Status(code, r)) => Ok((code, r.into_string().unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Calls and returns (status, JSON body).
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        let (status, out) = self.try_call(method, path, text.as_deref()).unwrap();
        let value = serde_json::from_str(&out).unwrap_or(Value::String(out));
        (status, value)
    }

    /// Reads an exec's SSE stream to its end: (event name, JSON data) pairs.
    fn sse(&self, path: &str, last_event_id: Option<u64>) -> Vec<(String, Value)> {
        self.read_sse(path, last_event_id, "exited")
    }

    /// Reads an SSE stream until the event `last`.
    fn sse_until(&self, path: &str, last: &str) -> Vec<(String, Value)> {
        self.read_sse(path, None, last)
    }

    fn read_sse(&self, path: &str, last_event_id: Option<u64>, last: &str) -> Vec<(String, Value)> {
        let mut req = ureq::get(&self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token))
            .timeout(Duration::from_secs(120));
        if let Some(id) = last_event_id {
            req = req.set("Last-Event-ID", &id.to_string());
        }
        let reader = BufReader::new(req.call().unwrap().into_reader());
        let mut events = Vec::new();
        let mut name = String::new();
        for line in reader.lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                events.push((name.clone(), serde_json::from_str(d).unwrap()));
                if name == last {
                    break;
                }
            }
        }
        events
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn decode(event: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(event["data"].as_str().unwrap_or(""))
        .unwrap()
}

fn create(d: &Daemon, body: Value) -> String {
    let (status, info) = d.call("POST", "/api/sandboxes", Some(body));
    assert_eq!(status, 201, "{info}");
    info["id"].as_str().unwrap().to_owned()
}

fn start_exec(d: &Daemon, sandbox: &str, body: Value) -> String {
    let (status, exec) = d.call("POST", &format!("/api/sandboxes/{sandbox}/execs"), Some(body));
    assert_eq!(status, 201, "{exec}");
    exec["id"].as_str().unwrap().to_owned()
}

/// Checks one exec's full replay: contiguous seqs from 0, every line of both streams in order,
/// and the exit code.
fn check_replay(events: &[(String, Value)], lines: usize, code: i64) {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(
            data["seq"].as_u64(),
            Some(i as u64),
            "gap or duplicate at {i}: {data}"
        );
        assert_eq!(data["type"].as_str(), Some(name.as_str()));
        match name.as_str() {
            "stdout" => stdout.extend(decode(data)),
            "stderr" => stderr.extend(decode(data)),
            _ => {}
        }
    }
    let (last_name, last) = events.last().expect("events");
    assert_eq!(last_name, "exited");
    assert_eq!(last["exit"]["code"].as_i64(), Some(code), "{last}");
    let want_out: String = (1..=lines).map(|i| format!("out {i}\n")).collect();
    let want_err: String = (1..=lines).map(|i| format!("err {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&stdout), want_out);
    assert_eq!(String::from_utf8_lossy(&stderr), want_err);
}

#[test]
fn kill_9_the_daemon_mid_stream_and_nothing_is_lost() {
    let Some(home) = Home::new("daemon-kill") else {
        return;
    };
    let mut d = Daemon::start(&home);
    let sandboxes: Vec<String> = (0..4)
        .map(|i| create(&d, json!({"name": format!("k{i}")})))
        .collect();
    // Six seconds of output: most execs still run after a slow restart on a loaded CI machine.
    const LINES: usize = 60;
    let script = format!(
        "for i in $(seq 1 {LINES}); do echo \"out $i\"; echo \"err $i\" >&2; sleep 0.1; done; exit $CODE"
    );
    let mut execs = Vec::new();
    for i in 0..20 {
        let sandbox = &sandboxes[i % 4];
        let code = (i % 7 + 1) as i64;
        let id = start_exec(
            &d,
            sandbox,
            json!({"argv": ["sh", "-c", script], "env": {"CODE": code.to_string()}}),
        );
        execs.push((sandbox.clone(), id, code));
    }
    std::thread::sleep(Duration::from_millis(1500));
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    d.restart();

    // Every sandbox is still listed.
    let (status, list) = d.call("GET", "/api/sandboxes", None);
    assert_eq!(status, 200);
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for s in &sandboxes {
        assert!(listed.contains(&s.as_str()), "{s} missing from {listed:?}");
    }
    // Re-attach to every exec while it still runs, from seq 0, and follow it to its end.
    let mut still_running = 0;
    let followers: Vec<_> = execs
        .iter()
        .map(|(sandbox, id, code)| {
            let (_, exec) = d.call("GET", &format!("/api/sandboxes/{sandbox}/execs/{id}"), None);
            if exec["status"] == "running" {
                still_running += 1;
            }
            let path = format!("/api/sandboxes/{sandbox}/execs/{id}/events?from_seq=0");
            let daemon = (d.port, d.token.clone());
            let code = *code;
            std::thread::spawn(move || {
                let d = Daemon {
                    port: daemon.0,
                    token: daemon.1,
                    extra: Vec::new(),
                    child: None,
                    log: PathBuf::new(),
                    home: PathBuf::new(),
                };
                check_replay(&d.sse(&path, None), LINES, code);
            })
        })
        .collect();
    assert!(
        still_running >= 10,
        "only {still_running} execs were still running after the restart"
    );
    for f in followers {
        f.join().unwrap();
    }
    // The stored record agrees: exited, with the code, and no gap in what was stored.
    for (sandbox, id, code) in &execs {
        let (_, exec) = d.call("GET", &format!("/api/sandboxes/{sandbox}/execs/{id}"), None);
        assert_eq!(exec["status"], "exited", "{exec}");
        assert_eq!(exec["exit"]["code"].as_i64(), Some(*code));
    }
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("re-attached"), "{log}");
    for s in &sandboxes {
        assert_eq!(d.call("DELETE", &format!("/api/sandboxes/{s}"), None).0, 204);
    }
}

#[test]
fn sse_and_websocket_keep_streams_apart_and_resume_from_seq() {
    let Some(home) = Home::new("daemon-streams") else {
        return;
    };
    let d = Daemon::start(&home);
    let sandbox = create(&d, json!({}));
    let exec = start_exec(
        &d,
        &sandbox,
        json!({"argv": ["sh", "-c", "for i in 1 2 3 4 5; do echo \"out $i\"; echo \"err $i\" >&2; sleep 0.05; done; exit 9"]}),
    );
    let path = format!("/api/sandboxes/{sandbox}/execs/{exec}/events");
    let all = d.sse(&path, None);
    check_replay(&all, 5, 9);
    // Resuming from seq k gives exactly the events from k on, by query or by Last-Event-ID.
    for k in [1u64, 4, 7] {
        let tail = d.sse(&format!("{path}?from_seq={k}"), None);
        assert_eq!(tail.len(), all.len() - k as usize);
        for (got, want) in tail.iter().zip(&all[k as usize..]) {
            assert_eq!(got, want);
        }
        let after = d.sse(&path, Some(k - 1));
        assert_eq!(after, tail);
    }
    // Text encoding for people.
    let text = d.sse(&format!("{path}?from_seq=1&encoding=text"), None);
    assert!(text.iter().any(|(_, e)| e["data"] == "out 1\n"));

    // WebSocket: stdin in, stdout and stderr out apart, the exit last; then a reconnect from a seq.
    let exec = start_exec(
        &d,
        &sandbox,
        json!({"argv": ["sh", "-c", "cat; echo done >&2; exit 4"], "stdin": true}),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ws_path = format!("/api/sandboxes/{sandbox}/execs/{exec}/ws");
    let first = rt.block_on(websocket(&d, &ws_path, true));
    let kinds: Vec<&str> = first.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"exited"));
    let out: Vec<u8> = first
        .iter()
        .filter(|e| e["type"] == "stdout")
        .flat_map(decode)
        .collect();
    let err: Vec<u8> = first
        .iter()
        .filter(|e| e["type"] == "stderr")
        .flat_map(decode)
        .collect();
    assert_eq!(out, b"hello over ws\n");
    assert_eq!(err, b"done\n");
    assert_eq!(first.last().unwrap()["exit"]["code"], 4);
    let again = rt.block_on(websocket(&d, &format!("{ws_path}?from_seq=1"), false));
    assert_eq!(again, first[1..]);
}

/// Reads an exec's WebSocket to its end; sends stdin first when asked.
async fn websocket(d: &Daemon, path: &str, send_stdin: bool) -> Vec<Value> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let mut req = format!("ws://127.0.0.1:{}{path}", d.port)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {}", d.token).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    if send_stdin {
        let data = base64::engine::general_purpose::STANDARD.encode("hello over ws\n");
        ws.send(Message::text(json!({"type": "stdin", "data": data}).to_string()))
            .await
            .unwrap();
        ws.send(Message::text(json!({"type": "close_stdin"}).to_string()))
            .await
            .unwrap();
    }
    let mut events = Vec::new();
    while let Some(msg) = ws.next().await {
        match msg.unwrap() {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                let end = v["type"] == "exited";
                events.push(v);
                if end {
                    break;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    events
}

#[test]
fn a_secret_reaches_the_exec_and_nowhere_else() {
    let Some(home) = Home::new("daemon-secret") else {
        return;
    };
    std::fs::create_dir_all(&home.dir).unwrap();
    let value = "s3cr3t-Value-9f8e7d";
    let mut set = home
        .cmd(&["secret", "set", "API_KEY"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(set.stdin.as_mut().unwrap(), value.as_bytes()).unwrap();
    drop(set.stdin.take());
    assert!(set.wait().unwrap().success());
    let digest = String::from_utf8(
        Command::new("sh")
            .args(["-c", &format!("printf %s '{value}' | md5sum")])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim_end()
    .to_owned();
    let mut d = Daemon::start(&home);
    let mut responses = String::new();
    let mut record = |r: &(u16, Value)| responses.push_str(&r.1.to_string());
    let created = d.call("POST", "/api/sandboxes", Some(json!({"name": "sec"})));
    record(&created);
    let ran = d.call(
        "POST",
        "/api/sandboxes/sec/execs?wait=true&encoding=text",
        Some(json!({
            "argv": ["sh", "-c", format!("test \"$(printf %s \"$API_KEY\" | md5sum)\" = '{digest}' && echo match; printf %s \"$API_KEY\" | wc -c")],
            "secrets": ["API_KEY"],
        })),
    );
    record(&ran);
    assert_eq!(ran.0, 200, "{}", ran.1);
    assert_eq!(ran.1["stdout"], format!("match\n{}\n", value.len()));
    let exec_id = ran.1["id"].as_str().unwrap().to_owned();
    // A command that prints the value: the stored and returned output names the secret instead.
    let leaked = d.call(
        "POST",
        "/api/sandboxes/sec/execs?wait=true&encoding=text",
        Some(json!({
            "argv": ["sh", "-c", "echo \"key=$API_KEY\"; echo \"$API_KEY\" >&2"],
            "secrets": ["API_KEY"],
        })),
    );
    record(&leaked);
    assert_eq!(leaked.1["stdout"], "key=[secret:API_KEY]\n", "{}", leaked.1);
    assert_eq!(leaked.1["stderr"], "[secret:API_KEY]\n");
    // And one that prints it after the daemon was killed and restarted: redacted all the same.
    let late = start_exec(
        &d,
        "sec",
        json!({"argv": ["sh", "-c", "sleep 2; echo \"late=$API_KEY\""], "secrets": ["API_KEY"]}),
    );
    d.kill9();
    d.restart();
    let late_events = d.sse(
        &format!("/api/sandboxes/sec/execs/{late}/events?encoding=text"),
        None,
    );
    let late_out: String = late_events
        .iter()
        .filter(|(n, _)| n == "stdout")
        .map(|(_, e)| e["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(late_out, "late=[secret:API_KEY]\n");
    for (_, e) in &late_events {
        record(&(200, e.clone()));
    }
    for path in [
        "/api/sandboxes".to_owned(),
        "/api/sandboxes/sec".to_owned(),
        "/api/sandboxes/sec/execs".to_owned(),
        format!("/api/sandboxes/sec/execs/{exec_id}"),
        "/api/drivers".to_owned(),
        "/metrics".to_owned(),
    ] {
        record(&d.call("GET", &path, None));
    }
    let events = d.sse(
        &format!("/api/sandboxes/sec/execs/{exec_id}/events?encoding=text"),
        None,
    );
    for (_, e) in &events {
        responses.push_str(&e.to_string());
    }
    // The stored request names the secret, and keeps no value.
    let (_, exec) = d.call("GET", &format!("/api/sandboxes/sec/execs/{exec_id}"), None);
    assert_eq!(exec["request"]["secrets"], json!(["API_KEY"]));
    assert!(exec["request"]["env"].get("API_KEY").is_none());
    // A missing secret is a 400 naming it; nothing runs.
    let missing = d.call(
        "POST",
        "/api/sandboxes/sec/execs",
        Some(json!({"argv": ["true"], "secrets": ["NOPE"]})),
    );
    assert_eq!(missing.0, 400);
    assert!(
        missing.1["error"]["message"].as_str().unwrap().contains("NOPE"),
        "{}",
        missing.1
    );
    assert!(!responses.contains(value), "an API response carried the secret");
    // The database, read while the daemon runs (so the exec's rows are there).
    if let Some(url) = postgres() {
        let dump = Command::new(std::env::var("PG_DUMP").unwrap_or_else(|_| "pg_dump".into()))
            .arg(&url)
            .output()
            .unwrap();
        assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
        assert!(
            contains(&dump.stdout, exec_id.as_bytes()),
            "the dump lacks the exec"
        );
        assert!(
            !contains(&dump.stdout, value.as_bytes()),
            "the database carries the secret"
        );
    } else {
        let mut db_bytes = Vec::new();
        for entry in std::fs::read_dir(&home.dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("stockade.db")
            {
                std::fs::File::open(&path)
                    .unwrap()
                    .read_to_end(&mut db_bytes)
                    .unwrap();
            }
        }
        assert!(
            contains(&db_bytes, exec_id.as_bytes()),
            "the database files lack the exec"
        );
        assert!(
            !contains(&db_bytes, value.as_bytes()),
            "the database carries the secret"
        );
    }
    assert_eq!(d.call("DELETE", "/api/sandboxes/sec", None).0, 204);
    drop(d);
    let log = std::fs::read(home.dir.join("serve.log")).unwrap();
    assert!(!contains(&log, value.as_bytes()), "the log carries the secret");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn bad_requests_get_4xx_json_errors_that_name_the_problem() {
    let Some(home) = Home::new("daemon-bad") else {
        return;
    };
    let d = Daemon::start(&home);
    let sandbox = create(&d, json!({}));
    let raw = |method: &str, path: &str, body: &str, token: Option<&str>| {
        let mut req = ureq::request(method, &d.url(path)).set("Content-Type", "application/json");
        if let Some(t) = token {
            req = req.set("Authorization", t);
        }
        match req.send_string(body) {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    };
    let bearer = format!("Bearer {}", d.token);
    // method, path, body, Authorization, expected status, what the error must mention
    type Case<'a> = (&'a str, String, String, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/sandboxes".into(),
            "{not json".into(),
            Some(&bearer),
            400,
            "body",
        ),
        (
            "POST",
            "/api/sandboxes".into(),
            r#"{"memroy":"1g"}"#.into(),
            Some(&bearer),
            400,
            "memroy",
        ),
        (
            "POST",
            "/api/sandboxes".into(),
            r#"{"memory":"lots"}"#.into(),
            Some(&bearer),
            400,
            "memory",
        ),
        (
            "POST",
            "/api/sandboxes".into(),
            r#"{"network":"some"}"#.into(),
            Some(&bearer),
            400,
            "network",
        ),
        (
            "POST",
            "/api/sandboxes".into(),
            r#"{"cpus":"0.001"}"#.into(),
            Some(&bearer),
            400,
            "cpus",
        ),
        (
            "POST",
            "/api/sandboxes".into(),
            r#"{"pids":"4294967295"}"#.into(),
            Some(&bearer),
            400,
            "pids",
        ),
        (
            "POST",
            "/api/sandboxes".into(),
            r#"{"workdir":"/proc/x"}"#.into(),
            Some(&bearer),
            400,
            "workdir",
        ),
        (
            "POST",
            "/api/sandboxes".into(),
            r#"{"ttl":"0s"}"#.into(),
            Some(&bearer),
            400,
            "ttl",
        ),
        (
            "POST",
            "/api/sandboxes".into(),
            r#"{"image":"!!!"}"#.into(),
            Some(&bearer),
            400,
            "image",
        ),
        (
            "GET",
            format!("/api/sandboxes/{sandbox}/files?path=/dev/zero"),
            String::new(),
            Some(&bearer),
            400,
            "not a regular file",
        ),
        (
            "GET",
            "/api/sandboxes/nosuchbox".into(),
            String::new(),
            Some(&bearer),
            404,
            "nosuchbox",
        ),
        (
            "GET",
            format!("/api/sandboxes/{sandbox}/execs/xnope"),
            String::new(),
            Some(&bearer),
            404,
            "xnope",
        ),
        (
            "POST",
            format!("/api/sandboxes/{sandbox}/execs"),
            r#"{"argv":[]}"#.into(),
            Some(&bearer),
            400,
            "command",
        ),
        (
            "POST",
            format!("/api/sandboxes/{sandbox}/execs"),
            r#"{"argv":["nope-cmd"]}"#.into(),
            Some(&bearer),
            422,
            "nope-cmd",
        ),
        (
            "GET",
            format!("/api/sandboxes/{sandbox}/files?path=relative"),
            String::new(),
            Some(&bearer),
            400,
            "path",
        ),
        (
            "GET",
            format!("/api/sandboxes/{sandbox}/files?path=/nope"),
            String::new(),
            Some(&bearer),
            400,
            "/nope",
        ),
        (
            "GET",
            "/api/sandboxes?status=happy".into(),
            String::new(),
            Some(&bearer),
            400,
            "status",
        ),
        ("GET", "/api/sandboxes".into(), String::new(), None, 401, "token"),
        (
            "GET",
            "/api/sandboxes".into(),
            String::new(),
            Some("Bearer stk_wrong"),
            401,
            "not valid",
        ),
        (
            "GET",
            "/api/sandboxes".into(),
            String::new(),
            Some("Basic abc"),
            401,
            "Bearer",
        ),
        (
            "PATCH",
            "/api/sandboxes".into(),
            String::new(),
            Some(&bearer),
            405,
            "method",
        ),
        (
            "GET",
            "/api/nothing-here".into(),
            String::new(),
            Some(&bearer),
            404,
            "route",
        ),
    ];
    for (method, path, body, token, want, mentions) in cases {
        let (status, text) = raw(method, &path, &body, token);
        assert_eq!(status, want, "{method} {path} {body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        let message = format!("{} {}", v["error"]["message"], v["error"]["field"]);
        assert!(
            message.contains(mentions),
            "{method} {path}: {message} does not mention {mentions}"
        );
    }
    // An oversized body is refused before it is read whole.
    let big = vec![b'a'; 65 << 20];
    let res = ureq::put(&d.url(&format!("/api/sandboxes/{sandbox}/files?path=/tmp/big")))
        .set("Authorization", &bearer)
        .send_bytes(&big);
    match res {
        Err(ureq::Error::Status(413, r)) => assert!(r.into_string().unwrap().contains("error")),
        Err(ureq::Error::Status(code, _)) => panic!("oversized body got {code}"),
        // The server may close the connection before the client has sent everything.
        Err(ureq::Error::Transport(_)) => {}
        Ok(r) => panic!("oversized body accepted: {}", r.status()),
    }
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(!log.contains(" 500 ") && !log.contains("panicked"), "{log}");
}

#[test]
fn two_hundred_concurrent_execs_through_the_api_all_succeed() {
    let Some(home) = Home::new("daemon-200") else {
        return;
    };
    let d = Daemon::start(&home);
    let sandboxes: Vec<String> = (0..4).map(|_| create(&d, json!({}))).collect();
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let (port, token) = (d.port, d.token.clone());
            let sandbox = sandboxes[i % 4].clone();
            std::thread::spawn(move || {
                let res = ureq::post(&format!(
                    "http://127.0.0.1:{port}/api/sandboxes/{sandbox}/execs?wait=true&encoding=text"
                ))
                .set("Authorization", &format!("Bearer {token}"))
                .timeout(Duration::from_secs(120))
                .send_json(json!({"argv": ["sh", "-c", format!("echo {i}")]}));
                let v: Value = res
                    .map_err(|e| e.to_string())?
                    .into_json()
                    .map_err(|e| e.to_string())?;
                if v["stdout"] != format!("{i}\n") || v["exit"]["code"] != 0 {
                    return Err(format!("exec {i}: {v}"));
                }
                Ok(())
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap().err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of 200 failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn a_command_task_through_the_api_streams_its_log_and_yields_a_patch() {
    let Some(home) = Home::new("daemon-task") else {
        return;
    };
    let d = Daemon::start(&home);
    let (status, bad) = d.call(
        "POST",
        "/api/tasks",
        Some(json!({"code": "empty", "agent": "nobody"})),
    );
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["field"], "agent", "{bad}");
    let (status, task) = d.call(
        "POST",
        "/api/tasks",
        Some(json!({"code": "empty", "agent": "command:echo working; echo hi > hi.txt", "prompt": "say hi"})),
    );
    assert_eq!(status, 202, "{task}");
    assert_eq!(task["status"], "running");
    let id = task["id"].as_str().unwrap().to_owned();
    let events = d.sse_until(&format!("/api/tasks/{id}/events"), "done");
    assert!(
        events
            .iter()
            .any(|(n, e)| n == "stdout" && e["line"] == "working"),
        "{events:?}"
    );
    assert!(events.iter().any(|(n, _)| n == "progress"), "{events:?}");
    let (name, done) = events.last().unwrap();
    assert_eq!(name, "done");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["patch"]["files"], 1);
    let (status, patch) = d
        .try_call("GET", &format!("/api/tasks/{id}/patch"), None)
        .unwrap();
    assert_eq!(status, 200);
    assert!(patch.contains("+++ b/hi.txt") && patch.contains("+hi"), "{patch}");
    let (_, list) = d.call("GET", "/api/tasks", None);
    assert!(list.as_array().unwrap().iter().any(|t| t["id"] == id.as_str()));
    // The task's sandbox is gone with it.
    let (_, sandboxes) = d.call("GET", "/api/sandboxes", None);
    assert_eq!(sandboxes, json!([]));

    // A task running when the daemon dies is closed as an error at restart, its sandbox removed.
    let mut d = d;
    let (status, task) = d.call(
        "POST",
        "/api/tasks",
        Some(json!({"code": "empty", "agent": "command:sleep 60", "prompt": "wait"})),
    );
    assert_eq!(status, 202, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, sandboxes) = d.call("GET", "/api/sandboxes", None);
        if sandboxes.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task's sandbox never appeared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.kill9();
    d.restart();
    let (_, task) = d.call("GET", &format!("/api/tasks/{id}"), None);
    assert_eq!(task["status"], "error", "{task}");
    assert!(
        task["error"].as_str().unwrap().contains("daemon stopped"),
        "{task}"
    );
    assert_eq!(task["prompt"], "wait");
    let (_, sandboxes) = d.call("GET", "/api/sandboxes", None);
    assert_eq!(sandboxes, json!([]));
    // And nothing of it runs on: the daemon may have died while the sandbox was still starting,
    // and the restart destroyed its record before the supervisor came up (it ends itself then).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = supervisors_of(&home.dir);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "supervisor or pid 1 of a removed sandbox still running: pids {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Live processes of sandboxes in `home`: supervisors and their pid 1s, which carry the home in
/// their environment.
fn supervisors_of(home: &std::path::Path) -> Vec<u32> {
    let wanted = format!("STOCKADE_SUPERVISE_HOME={}", home.display());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesized command name; zombies hold nothing.
        if stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
        {
            continue;
        }
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|var| var == wanted.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn the_cli_through_the_daemon_prints_what_it_prints_alone() {
    let Some(home) = Home::new("daemon-cli") else {
        return;
    };
    let d = Daemon::start(&home);
    let socket = format!("unix://{}", home.dir.join("d.sock").display());
    let local = |args: &[&str]| home.cmd(args).env_remove("STOCKADE_HOST").output().unwrap();
    let remote = |args: &[&str]| home.cmd(args).env("STOCKADE_HOST", &socket).output().unwrap();
    let tcp = |args: &[&str]| {
        home.cmd(args)
            .env("STOCKADE_HOST", format!("http://127.0.0.1:{}", d.port))
            .env("STOCKADE_TOKEN", &d.token)
            .output()
            .unwrap()
    };
    assert!(remote(&["create", "--name", "same"]).status.success());
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", "--", "sh", "-c", "echo hello; echo oops >&2; exit 3"],
        vec![
            "exec",
            "same",
            "--",
            "sh",
            "-c",
            "echo $((6*7)); cat /etc/hostname",
        ],
        vec!["exec", "nope", "--", "true"],
        vec!["exec", "same", "--", "no-such-command"],
        vec!["exec", "same", "--timeout", "200ms", "--", "sleep", "5"],
        vec!["diff", "same"],
        vec!["create", "--memory", "lots"],
        vec!["ls", "-q"],
    ];
    for args in &cases {
        let (a, b, c) = (local(args), remote(args), tcp(args));
        for (how, other) in [("unix socket", &b), ("tcp", &c)] {
            assert_eq!(
                a.status.code(),
                other.status.code(),
                "{args:?} exit code via {how}"
            );
            assert_eq!(a.stdout, other.stdout, "{args:?} stdout via {how}");
            assert_eq!(
                String::from_utf8_lossy(&a.stderr),
                String::from_utf8_lossy(&other.stderr),
                "{args:?} stderr via {how}"
            );
        }
    }
    // stdin streams through, and a secret goes by name (its value never leaves the daemon's host).
    let mut child = home
        .cmd(&[
            "exec",
            "-i",
            "same",
            "--",
            "sh",
            "-c",
            "cat; test \"$K\" = v1 && echo secret-ok",
        ])
        .env("STOCKADE_HOST", &socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"piped in\n").unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\n");
    let mut set = home
        .cmd(&["secret", "set", "K"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(set.stdin.as_mut().unwrap(), b"v1").unwrap();
    drop(set.stdin.take());
    assert!(set.wait().unwrap().success());
    let out = remote(&[
        "exec",
        "--secret",
        "K",
        "same",
        "--",
        "sh",
        "-c",
        "test \"$K\" = v1 && echo secret-ok",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "secret-ok\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(remote(&["rm", "-f", "same"]).status.success());
    let out = tcp(&["ls", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    // No token on TCP: the daemon's refusal, as one line.
    let out = home
        .cmd(&["ls"])
        .env("STOCKADE_HOST", format!("http://127.0.0.1:{}", d.port))
        .env_remove("STOCKADE_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "not allowed by the daemon");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bearer token is required"));
}

#[test]
fn host_paths_need_opt_in_and_a_change_is_pushed_from_the_host() {
    let Some(home) = Home::new("daemon-push") else {
        return;
    };
    // A bare repository with one commit, on the daemon's host.
    std::fs::create_dir_all(&home.dir).unwrap();
    let work = home.dir.join("work");
    let bare = home.dir.join("remote.git");
    std::fs::create_dir_all(&work).unwrap();
    common::git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), "one\n").unwrap();
    common::git(&work, &["add", "-A"]);
    common::git(&work, &["commit", "-qm", "first"]);
    common::git(
        &home.dir,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let url = format!("file://{}", bare.display());

    let strict = Daemon::start(&home);
    for (body, field) in [
        (json!({"volumes": ["/tmp:/data"]}), "volumes"),
        (json!({"rootfs": "/"}), "rootfs"),
        (json!({"code": url}), "code"),
        (json!({"code": "/etc"}), "code"),
    ] {
        let (status, err) = strict.call("POST", "/api/sandboxes", Some(body));
        assert_eq!(status, 403, "{err}");
        assert_eq!(err["error"]["field"], field);
        assert!(err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--allow-host-paths"));
    }
    let (status, _) = strict.call(
        "POST",
        "/api/tasks",
        Some(json!({"code": "/etc", "agent": "command:true"})),
    );
    assert_eq!(status, 403);
    drop(strict);

    let d = Daemon::start_with(&home, &["--allow-host-paths"]);
    let id = create(&d, json!({"code": url, "name": "pusher"}));
    let (status, out) = d.call(
        "POST",
        &format!("/api/sandboxes/{id}/execs?wait=true&encoding=text"),
        Some(json!({"argv": ["sh", "-c", "echo two >> README && echo new > NEW"]})),
    );
    assert_eq!((status, &out["exit"]["code"]), (200, &json!(0)), "{out}");
    let (status, patch) = d
        .try_call("GET", &format!("/api/sandboxes/{id}/diff"), None)
        .unwrap();
    assert_eq!(status, 200);
    assert!(patch.contains("+two") && patch.contains("+++ b/NEW"), "{patch}");
    let (status, pushed) = d.call(
        "POST",
        &format!("/api/sandboxes/{id}/push"),
        Some(json!({"remote": url, "branch": "agent/change", "message": "from the API"})),
    );
    assert_eq!(status, 200, "{pushed}");
    let commit = pushed["commit"].as_str().unwrap();
    assert_eq!(common::git(&bare, &["rev-parse", "agent/change"]), commit);
    assert_eq!(
        common::git(&bare, &["log", "-1", "--format=%s", "agent/change"]),
        "from the API"
    );
    assert_eq!(common::git(&bare, &["show", "agent/change:NEW"]), "new");
    let (status, err) = d.call(
        "POST",
        &format!("/api/sandboxes/{id}/push"),
        Some(json!({"remote": url, "branch": "--force"})),
    );
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["error"]["field"], "branch");
    // A sandbox with no code has no baseline: 409, not a server error.
    let plain = create(&d, json!({}));
    let (status, err) = d.call("GET", &format!("/api/sandboxes/{plain}/diff"), None);
    assert_eq!(status, 409, "{err}");
}
