//! Code in sandboxes. A [`CodeSource`] is parsed and fetched on the host (so a missing repo, an
//! unknown ref or a missing directory is an error before any sandbox exists, and credentials
//! never enter one), copied into the sandbox's workdir through any driver's exec, and recorded as
//! a baseline commit (`refs/stockade/baseline`), so "what changed" is always defined. Patches come
//! out as `git diff --binary` against the baseline (new and deleted files included, ignored files
//! not) and go in with `git apply`.
//!
//! Everything inside the sandbox runs as ordinary execs of `git`, `tar` and `sh`, which the
//! native driver (the host's `/usr`) and Stockade's base image both have.
#![forbid(unsafe_code)]

pub mod source;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use stockade_core::{Driver, Error, ExecRequest, Result, SandboxId};
use tokio::io::AsyncReadExt;

pub use source::CodeSource;

/// The ref the baseline commit is kept under, inside the sandbox's repository.
pub const BASELINE_REF: &str = "refs/stockade/baseline";

/// Progress for steps that take more than a moment.
pub type Progress<'a> = &'a mut (dyn FnMut(&str) + Send);

/// A source made ready on the host: the directory to copy in (none for `empty`).
#[derive(Debug)]
pub struct Prepared {
    pub dir: Option<PathBuf>,
    /// The commit checked out, for git sources.
    pub commit: Option<String>,
    /// Removed on drop: the clone this made.
    scratch: Option<PathBuf>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

async fn git_on_host(args: &[&str], dir: Option<&Path>) -> std::result::Result<String, String> {
    git_on_host_with(args, dir, &[]).await
}

/// `env` is for configuration that must not show on a command line (`GIT_CONFIG_*`).
async fn git_on_host_with(
    args: &[&str],
    dir: Option<&Path>,
    env: &[(String, String)],
) -> std::result::Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    let out = cmd
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "/bin/false")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("git: {e} (install git)"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(last_line(&err, "git failed"))
    }
}

/// The last non-blank line of `text` (where tools put the reason), or `otherwise`.
fn last_line(text: &str, otherwise: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(otherwise)
        .trim()
        .to_owned()
}

/// Fetches or checks `source` on the host. `scratch` is where clones go (removed when the
/// returned value drops).
pub async fn prepare(source: &CodeSource, scratch: &Path, progress: Progress<'_>) -> Result<Prepared> {
    match source {
        CodeSource::Empty => Ok(Prepared {
            dir: None,
            commit: None,
            scratch: None,
        }),
        CodeSource::Dir(dir) => Ok(Prepared {
            dir: Some(dir.clone()),
            commit: None,
            scratch: None,
        }),
        CodeSource::Git { url, reference } => {
            std::fs::create_dir_all(scratch)
                .map_err(|e| Error::backend(format!("create {}", scratch.display()), e))?;
            let dir = scratch.join(format!("clone-{}-{}", std::process::id(), nanos()));
            let mut prepared = Prepared {
                dir: Some(dir.clone()),
                commit: None,
                scratch: Some(dir.clone()),
            };
            let started = Instant::now();
            let ticker = Ticker::new(started);
            let d = dir.to_string_lossy().into_owned();
            let fetched = match reference {
                None => git_on_host(&["clone", "-q", "--depth", "1", url, &d], None).await,
                Some(r) => {
                    // Only the needed commit where the server allows it; a full clone otherwise.
                    let shallow = async {
                        git_on_host(&["init", "-q", &d], None).await?;
                        git_on_host(&["fetch", "-q", "--depth", "1", url, r], Some(&dir)).await?;
                        git_on_host(&["checkout", "-q", "FETCH_HEAD"], Some(&dir)).await
                    }
                    .await;
                    match shallow {
                        Ok(out) => Ok(out),
                        Err(_) => {
                            let _ = std::fs::remove_dir_all(&dir);
                            ticker.say(progress, &format!("cloning {url} in full to find {r}"));
                            match git_on_host(&["clone", "-q", "--no-checkout", url, &d], None).await {
                                Ok(_) => git_on_host(&["checkout", "-q", r], Some(&dir))
                                    .await
                                    .map_err(|e| format!("ref {r:?} not found: {e}")),
                                Err(e) => Err(e),
                            }
                        }
                    }
                }
            };
            if let Err(e) = fetched {
                return Err(Error::invalid("code", format!("{}: {e}", source.describe())));
            }
            // The clone's origin must not carry a user or password into the sandbox.
            if git_on_host(&["remote", "get-url", "origin"], Some(&dir))
                .await
                .is_ok()
            {
                let clean = source::without_credentials(url);
                let _ = git_on_host(&["remote", "set-url", "origin", &clean], Some(&dir)).await;
            }
            let commit = git_on_host(&["rev-parse", "HEAD"], Some(&dir))
                .await
                .map_err(|e| Error::invalid("code", format!("{}: {e}", source.describe())))?;
            if started.elapsed() > Duration::from_secs(2) {
                progress(&format!(
                    "fetched {} at {commit} in {:.1?}",
                    source.describe(),
                    started.elapsed()
                ));
            }
            prepared.commit = Some(commit);
            Ok(prepared)
        }
    }
}

fn nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Says things only once a step has taken more than a moment.
struct Ticker {
    started: Instant,
}

impl Ticker {
    fn new(started: Instant) -> Self {
        Ticker { started }
    }
    fn say(&self, progress: Progress<'_>, what: &str) {
        if self.started.elapsed() > Duration::from_millis(500) {
            progress(what);
        }
    }
}

/// The git flags every in-sandbox git call takes: no hooks, no signing, any owner.
const GIT: &str = "git -c safe.directory='*' -c core.hooksPath=/dev/null -c commit.gpgsign=false";

fn script_request(script: &str, workdir: &str) -> ExecRequest {
    let mut req = ExecRequest::new(["sh", "-c", script, "stockade-code", workdir]);
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "Stockade"),
        ("GIT_AUTHOR_EMAIL", "stockade@localhost"),
        ("GIT_COMMITTER_NAME", "Stockade"),
        ("GIT_COMMITTER_EMAIL", "stockade@localhost"),
        ("GIT_TERMINAL_PROMPT", "0"),
    ] {
        req.env.insert(k.into(), v.into());
    }
    req
}

async fn run_script(driver: &dyn Driver, id: &SandboxId, what: &str, req: ExecRequest) -> Result<Vec<u8>> {
    let out = driver.exec(id, req).await?.output().await?;
    if (what == "diff" && out.exit.code == Some(3)) || (what == "read the baseline" && !out.exit.success()) {
        return Err(Error::WrongState {
            id: id.to_string(),
            status: "without a baseline commit".into(),
            operation: what.into(),
            needed: "made with code (--code) or a git baseline in its workdir".into(),
        });
    }
    if !out.exit.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::backend(
            format!("{what} in sandbox {id}"),
            last_line(&err, "failed"),
        ));
    }
    Ok(out.stdout)
}

/// Creates a sandbox for `spec` and loads `code` into its workdir with a baseline commit. The
/// source is fetched or checked first, so a bad one fails before any sandbox exists; a load that
/// fails destroys the sandbox.
pub async fn create_with_code(
    driver: &dyn Driver,
    spec: stockade_core::SandboxSpec,
    code: Option<&str>,
    scratch: &Path,
    progress: Progress<'_>,
) -> Result<stockade_core::SandboxInfo> {
    let Some(code) = code else {
        return driver.create(spec).await;
    };
    let source = CodeSource::parse(code)?;
    let prepared = prepare(&source, scratch, progress).await?;
    let info = driver.create(spec).await?;
    match load(driver, &info.id, &info.spec.workdir, &prepared, progress).await {
        Ok(_baseline) => Ok(info),
        Err(e) => {
            let _ = driver.destroy(&info.id).await;
            Err(e)
        }
    }
}

/// Copies `prepared` into `workdir` of the sandbox (through `tar` over an exec's stdin) and
/// records the baseline commit, which it returns.
pub async fn load(
    driver: &dyn Driver,
    id: &SandboxId,
    workdir: &str,
    prepared: &Prepared,
    progress: Progress<'_>,
) -> Result<String> {
    if let Some(dir) = &prepared.dir {
        copy_in(driver, id, dir, workdir, progress).await?;
    }
    let out = run_script(
        driver,
        id,
        "record the baseline",
        script_request(BASELINE_SCRIPT, workdir),
    )
    .await?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

/// Sends `dir` as a tar stream into `workdir`; says how far it got when it takes a while.
async fn copy_in(
    driver: &dyn Driver,
    id: &SandboxId,
    dir: &Path,
    workdir: &str,
    progress: Progress<'_>,
) -> Result<()> {
    let mut tar = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::backend("tar", e))?;
    let mut req = ExecRequest::new(["tar", "-C", workdir, "--no-same-owner", "-xf", "-"]);
    req.stdin = true;
    let session = driver.exec(id, req).await?;
    let mut stdout = tar
        .stdout
        .take()
        .ok_or_else(|| Error::backend("tar", "no stdout"))?;
    // Drained as it comes: thousands of warnings must not fill the pipe and stall tar.
    let stderr_task = tar.stderr.take().map(|mut e| {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text).await;
            text
        })
    });
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(1);
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = stdout
            .read(&mut buf)
            .await
            .map_err(|e| Error::backend(format!("read {}", dir.display()), e))?;
        if n == 0 {
            break;
        }
        session.control.write_stdin(&buf[..n]).await?;
        sent += n as u64;
        if Instant::now() > next_report {
            next_report += Duration::from_secs(1);
            progress(&format!("copying {}: {} MiB", dir.display(), sent >> 20));
        }
    }
    session.control.close_stdin().await?;
    let status = tar.wait().await.map_err(|e| Error::backend("tar", e))?;
    let out = session.output().await?;
    // 1: "some files differ" (changed while read, such as a git gc packing in the background);
    // the copy is whole, only not a snapshot of one instant.
    if status.code() == Some(1) {
        progress(&format!(
            "note: files in {} changed while they were copied",
            dir.display()
        ));
    } else if !status.success() {
        let err = match stderr_task {
            Some(t) => t.await.unwrap_or_default(),
            None => String::new(),
        };
        return Err(Error::invalid(
            "code",
            format!("{}: {}", dir.display(), last_line(&err, "tar failed")),
        ));
    }
    if !out.exit.success() {
        return Err(Error::backend(
            format!("copy {} into sandbox {id}", dir.display()),
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    if started.elapsed() > Duration::from_secs(1) {
        progress(&format!(
            "copied {} ({} MiB) in {:.1?}",
            dir.display(),
            sent >> 20,
            started.elapsed()
        ));
    }
    Ok(())
}

/// `$1` is the workdir. A directory without `.git` is made a repository with one commit; the
/// baseline is a commit of the tree as loaded (HEAD itself when the tree is HEAD's), kept under
/// BASELINE_REF; the index it leaves (`stockade-index` in the git dir, not the user's index)
/// makes later diffs re-read only changed files.
const BASELINE_SCRIPT: &str = r#"set -e
cd "$1"
g() { git -c safe.directory='*' -c core.hooksPath=/dev/null -c commit.gpgsign=false "$@"; }
if [ ! -e .git ]; then
  g init -q
  g add -A
  g commit -q --allow-empty -m "baseline"
fi
# Credentials never come in with the code: no extra auth headers, no user:password in remotes.
for k in $(g config --local --name-only --get-regexp '\.extraheader$' 2>/dev/null); do g config --local --unset-all "$k"; done
for r in $(g remote); do
  u=$(g remote get-url "$r")
  case "$u" in *://*@*) g remote set-url "$r" "$(printf %s "$u" | sed -E 's#(://)[^/@]*@#\1#')" ;; esac
done
GIT_INDEX_FILE="$(g rev-parse --absolute-git-dir)/stockade-index"
export GIT_INDEX_FILE
rm -f "$GIT_INDEX_FILE"
# From HEAD's tree, so tracked files that an ignore rule matches stay tracked.
g read-tree HEAD 2>/dev/null || true
g add -A
tree=$(g write-tree)
if head=$(g rev-parse -q --verify HEAD); then
  if [ "$(g rev-parse HEAD^{tree})" = "$tree" ]; then c=$head; else c=$(g commit-tree "$tree" -p "$head" -m "stockade baseline"); fi
else
  c=$(g commit-tree "$tree" -m "stockade baseline")
fi
g update-ref refs/stockade/baseline "$c"
echo "$c"
"#;

/// `$1` is the workdir, `$2` `--stat` or empty.
const DIFF_SCRIPT: &str = r#"set -e
cd "$1"
g() { git -c safe.directory='*' -c core.hooksPath=/dev/null "$@"; }
if ! g rev-parse -q --verify refs/stockade/baseline >/dev/null; then
  echo "no baseline in $1 (was .git removed, or was no code loaded?)" >&2
  exit 3
fi
GIT_INDEX_FILE="$(g rev-parse --absolute-git-dir)/stockade-index"
export GIT_INDEX_FILE
[ -f "$GIT_INDEX_FILE" ] || g read-tree refs/stockade/baseline
g add -A
if [ "$2" = --stat ]; then
  g diff --cached --stat refs/stockade/baseline
else
  g diff --cached --binary --full-index refs/stockade/baseline
fi
"#;

/// The patch of everything changed in `workdir` since the baseline (or its `--stat` summary).
pub async fn diff(driver: &dyn Driver, id: &SandboxId, workdir: &str, stat: bool) -> Result<Vec<u8>> {
    let mut req = script_request(DIFF_SCRIPT, workdir);
    req.argv.push(if stat { "--stat".into() } else { String::new() });
    run_script(driver, id, "diff", req).await
}

/// Applies `patch` to `workdir` with `git apply` (binary patches included), fed on stdin so it
/// works whatever user the sandbox's execs run as.
pub async fn apply(driver: &dyn Driver, id: &SandboxId, workdir: &str, patch: Vec<u8>) -> Result<()> {
    let script = format!("cd \"$1\" && {GIT} apply --binary --whitespace=nowarn -");
    let mut req = script_request(&script, workdir);
    req.stdin = true;
    let session = driver.exec(id, req).await?;
    for chunk in patch.chunks(256 << 10) {
        session.control.write_stdin(chunk).await?;
    }
    session.control.close_stdin().await?;
    let out = session.output().await?;
    if !out.exit.success() {
        return Err(Error::invalid(
            "patch",
            format!(
                "does not apply in {workdir}: {}",
                last_line(&String::from_utf8_lossy(&out.stderr), "git apply failed")
            ),
        ));
    }
    Ok(())
}

/// What `push` needs besides the sandbox.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// Where to push (any git URL the host can reach).
    pub remote: String,
    /// The branch to create or update there.
    pub branch: String,
    pub message: String,
    /// For https remotes: sent by the host's git only, as a basic-auth header; never enters the
    /// sandbox.
    pub token: Option<String>,
}

/// Standard base64 of `data` (for the basic-auth header).
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The environment that gives the host's git the token for `remote`: `GIT_CONFIG_*` variables,
/// so it never shows on a command line. Only for https remotes; a token for plain http is an
/// error, not a leak.
fn auth_env(req: &PushRequest) -> Result<Vec<(String, String)>> {
    match &req.token {
        Some(_) if req.remote.starts_with("http://") => Err(Error::invalid(
            "remote",
            format!("{}: refusing to send the token over plain http", req.remote),
        )),
        Some(token) if req.remote.starts_with("https://") => Ok(vec![
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
            (
                "GIT_CONFIG_VALUE_0".into(),
                format!(
                    "Authorization: Basic {}",
                    base64(format!("x-access-token:{token}").as_bytes())
                ),
            ),
        ]),
        _ => Ok(Vec::new()),
    }
}

/// Takes the change out of the sandbox as a patch, and on the host commits it on the baseline
/// commit (fetched from `req.remote`) and pushes it to `req.branch`. Returns the new commit.
pub async fn push(
    driver: &dyn Driver,
    id: &SandboxId,
    workdir: &str,
    req: &PushRequest,
    scratch: &Path,
) -> Result<String> {
    let script = format!("cd \"$1\" && {GIT} rev-parse {BASELINE_REF}");
    let baseline = run_script(driver, id, "read the baseline", script_request(&script, workdir)).await?;
    let baseline = String::from_utf8_lossy(&baseline).trim().to_owned();
    // It comes out of the sandbox: only a commit id may reach the host's git.
    if !matches!(baseline.len(), 40 | 64) || !baseline.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::backend(
            format!("read the baseline of sandbox {id}"),
            "not a commit id",
        ));
    }
    if req.remote.starts_with('-') {
        return Err(Error::invalid(
            "remote",
            format!("{:?} cannot start with '-'", req.remote),
        ));
    }
    let patch = diff(driver, id, workdir, false).await?;
    if patch.is_empty() {
        return Err(Error::invalid(
            "push",
            format!("nothing to push: no change in {workdir} since the baseline"),
        ));
    }
    std::fs::create_dir_all(scratch)
        .map_err(|e| Error::backend(format!("create {}", scratch.display()), e))?;
    let dir = scratch.join(format!("push-{}-{}", std::process::id(), nanos()));
    let guard = Prepared {
        dir: None,
        commit: None,
        scratch: Some(dir.clone()),
    };
    let d = dir.to_string_lossy().into_owned();
    let auth = auth_env(req)?;
    let with_auth = |args: &[&str]| -> Vec<String> { args.iter().map(|s| (*s).to_owned()).collect() };
    let host_git = |args: Vec<String>| {
        let d = d.clone();
        let auth = auth.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            git_on_host_with(&refs, Some(Path::new(&d)), &auth).await
        }
    };
    git_on_host(&["init", "-q", &dir.to_string_lossy()], None)
        .await
        .map_err(|e| Error::backend("git init", e))?;
    let remote_err = |e: String| Error::invalid("remote", format!("{}: {e}", req.remote));
    // The baseline commit alone where the server allows it; its branches otherwise.
    if host_git(with_auth(&[
        "fetch",
        "-q",
        "--depth",
        "1",
        &req.remote,
        &baseline,
    ]))
    .await
    .is_err()
    {
        host_git(with_auth(&[
            "fetch",
            "-q",
            &req.remote,
            "+refs/heads/*:refs/remotes/origin/*",
        ]))
        .await
        .map_err(remote_err)?;
    }
    host_git(vec!["checkout".into(), "-q".into(), baseline.clone()])
        .await
        .map_err(|_| {
            Error::invalid(
                "remote",
                format!(
                    "{} does not have the sandbox's baseline commit {baseline}; push needs the code loaded from this remote",
                    req.remote
                ),
            )
        })?;
    let patch_file = dir.join(".git/stockade-push.patch");
    std::fs::write(&patch_file, &patch).map_err(|e| Error::backend("write patch", e))?;
    host_git(vec![
        "apply".into(),
        "--index".into(),
        "--binary".into(),
        patch_file.display().to_string(),
    ])
    .await
    .map_err(|e| Error::backend("apply the sandbox's patch on the host", e))?;
    host_git(vec![
        "-c".into(),
        "user.name=Stockade".into(),
        "-c".into(),
        "user.email=stockade@localhost".into(),
        "-c".into(),
        "commit.gpgsign=false".into(),
        "commit".into(),
        "-q".into(),
        "-m".into(),
        req.message.clone(),
    ])
    .await
    .map_err(|e| Error::backend("commit", e))?;
    let commit = host_git(vec!["rev-parse".into(), "HEAD".into()])
        .await
        .map_err(|e| Error::backend("commit", e))?;
    let target = format!("HEAD:refs/heads/{}", req.branch);
    host_git(with_auth(&["push", "-q", &req.remote, &target]))
        .await
        .map_err(remote_err)?;
    drop(guard);
    Ok(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn tokens_go_only_to_http_remotes() {
        let mut req = PushRequest {
            remote: "https://example.com/r.git".into(),
            branch: "b".into(),
            message: "m".into(),
            token: Some("t0k".into()),
        };
        let env = auth_env(&req).unwrap();
        assert_eq!(
            env[2].1,
            format!("Authorization: Basic {}", base64(b"x-access-token:t0k"))
        );
        req.remote = "file:///srv/r.git".into();
        assert!(auth_env(&req).unwrap().is_empty());
        req.remote = "http://example.com/r.git".into();
        assert!(auth_env(&req).unwrap_err().to_string().contains("plain http"));
    }
}
