//! The command line, as clap types.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stockade",
    version,
    about = "Sandboxes for AI coding agents",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a sandbox and print its id.
    Create(CreateArgs),
    /// Run a command in a sandbox; exits with the command's exit code.
    Exec(ExecArgs),
    /// Create a sandbox, run one command in it, destroy it; exits with the command's exit code.
    Run(RunArgs),
    /// List sandboxes.
    #[command(alias = "ps")]
    Ls(ListArgs),
    /// Show everything about a sandbox (JSON).
    Inspect(TargetArgs),
    /// Show a sandbox's resource usage.
    Stats(TargetArgs),
    /// Copy files between the host and a sandbox (`SANDBOX:PATH` on either side).
    Cp(CopyArgs),
    /// Open an interactive shell in a sandbox.
    Shell(ShellArgs),
    /// Stop a sandbox's processes, keeping its files.
    Stop(TargetArgs),
    /// Start a stopped sandbox again.
    Start(TargetArgs),
    /// Freeze a running sandbox: its processes and memory kept, no CPU, until resume.
    Pause(TargetArgs),
    /// Thaw a paused sandbox.
    Resume(TargetArgs),
    /// Destroy sandboxes.
    Rm(RemoveArgs),
    /// What this host supports and which drivers are usable.
    Info(JsonArgs),
    /// Container images: make the base image, build, import, list.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Remove containers and networks Stockade labelled but has no record of.
    Gc(JsonArgs),
    /// Print the patch of everything changed in a sandbox's workdir since its baseline.
    Diff(DiffArgs),
    /// Apply a patch file to a sandbox's workdir.
    Apply(ApplyArgs),
    /// Run a coding agent on some code with a prompt; get logs, events and a patch.
    Task(TaskArgs),
    /// Named secrets, encrypted at rest, injected into execs with --secret.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Commit a sandbox's change on its baseline and push it from the host (the token, from
    /// STOCKADE_GIT_TOKEN, never enters the sandbox).
    Push(PushArgs),
    /// Run the daemon: the HTTP API on TCP (bearer tokens) and a unix socket (peer uid checked).
    Serve(ServeArgs),
    /// API tokens for the daemon's TCP listener.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Templates for the daemon's E2B-compatible API: what a create's `templateID` runs on and as.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Measure Stockade against baselines run beside it.
    Bench(stockade_bench::BenchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// A unique name for the sandbox.
    #[arg(long)]
    pub name: Option<String>,
    /// Driver to use (`stockade info` lists them); the first registered when absent.
    #[arg(long)]
    pub driver: Option<String>,
    /// Image (container drivers; default stockade/base:latest, made by `stockade image base`).
    #[arg(long)]
    pub image: Option<String>,
    /// OCI runtime the engine should use, e.g. runsc for gVisor (container drivers).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Code to load into the workdir, with a baseline commit: empty, github:OWNER/REPO[@REF], a
    /// git URL[@REF] (https, ssh, file://) or a local directory.
    #[arg(long)]
    pub code: Option<String>,
    /// Root filesystem directory (the host / read-only when absent).
    #[arg(long)]
    pub rootfs: Option<String>,
    /// Memory limit, e.g. 512m.
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit, e.g. 1.5.
    #[arg(long)]
    pub cpus: Option<String>,
    // Process limit; the help names the drivers' default.
    #[arg(long, help = format!("Process limit (default {})", stockade_core::sandbox::DEFAULT_PIDS))]
    pub pids: Option<String>,
    /// Writable-layer size limit, e.g. 1g.
    #[arg(long)]
    pub disk: Option<String>,
    /// Open files per process.
    #[arg(long)]
    pub open_files: Option<String>,
    /// Largest file a process may write, e.g. 100m.
    #[arg(long)]
    pub file_size: Option<String>,
    /// Network: none (loopback only) or full.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Environment variable for every exec (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Mount a host path (repeatable): HOST:PATH[:ro].
    #[arg(short = 'v', long = "volume", value_name = "HOST:PATH[:ro]")]
    pub volumes: Vec<String>,
    /// Working directory for execs.
    #[arg(long, default_value = stockade_core::DEFAULT_WORKDIR)]
    pub workdir: String,
    /// User for execs (name, uid or uid:gid).
    #[arg(long)]
    pub user: Option<String>,
    /// Label (repeatable): K=V.
    #[arg(short = 'l', long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Destroy the sandbox after this long, e.g. 30m.
    #[arg(long)]
    pub ttl: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ExecOptions {
    /// Environment variable (repeatable).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User (name, uid or uid:gid).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Kill the command's whole process tree after this long, e.g. 30s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Stream this terminal's stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run under a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Print the exec's events as JSON lines instead of raw output.
    #[arg(long)]
    pub json: bool,
    /// A stored secret as an environment variable (repeatable): NAME, or ENV=NAME.
    #[arg(long = "secret", value_name = "[ENV=]NAME")]
    pub secrets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub opts: ExecOptions,
    /// Sandbox id or name.
    pub sandbox: String,
    /// Command and arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub create: CreateArgs,
    /// Kill the command's whole process tree after this long, e.g. 30s.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Stream this terminal's stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run under a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// A stored secret as an environment variable of the command (repeatable): NAME, or ENV=NAME.
    #[arg(long = "secret", value_name = "[ENV=]NAME")]
    pub secrets: Vec<String>,
    /// Command and arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Print ids only.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Sandbox id or name.
    pub sandbox: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Source: a host path or SANDBOX:PATH.
    pub src: String,
    /// Destination: a host path or SANDBOX:PATH.
    pub dst: String,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Sandbox id or name.
    pub sandbox: String,
    /// Shell to run.
    #[arg(long, default_value = "/bin/bash")]
    pub shell: String,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Also destroy running sandboxes.
    #[arg(short, long)]
    pub force: bool,
    /// Sandbox ids or names.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Make Stockade's base image (Debian with bash, coreutils, git, python3, curl,
    /// ca-certificates) with debootstrap; built once per engine, keyed by its recipe.
    Base(ImageEngineArgs),
    /// Build an image from a directory with a Dockerfile.
    Build {
        /// The build context.
        dir: String,
        /// Name the image.
        #[arg(short = 't', long = "tag", required = true)]
        tag: String,
        #[command(flatten)]
        engine: ImageEngineArgs,
    },
    /// Import a root filesystem tarball as an image.
    Import {
        /// The tarball (tar, tar.gz, ...).
        tarball: String,
        /// Name the image.
        name: String,
        #[command(flatten)]
        engine: ImageEngineArgs,
    },
}

#[derive(Debug, Args)]
pub struct ImageEngineArgs {
    /// The driver whose images to build; the first registered driver that runs images when
    /// absent.
    #[arg(long)]
    pub driver: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Sandbox id or name.
    pub sandbox: String,
    /// A summary (files and lines changed) instead of the patch.
    #[arg(long)]
    pub stat: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Sandbox id or name.
    pub sandbox: String,
    /// The patch (as `stockade diff` or `git diff --binary` writes it).
    pub patch: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Sandbox id or name.
    pub sandbox: String,
    /// The git remote (the one the code was loaded from, or any that has its baseline commit).
    #[arg(long)]
    pub remote: String,
    /// Branch to create or update on the remote.
    #[arg(long)]
    pub branch: String,
    /// Commit message.
    #[arg(short, long, default_value = "Changes made in a Stockade sandbox")]
    pub message: String,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TaskArgs {
    #[command(subcommand)]
    pub action: Option<TaskAction>,
    /// Code: empty, github:OWNER/REPO[@REF], a git URL[@REF] or a local directory.
    #[arg(long)]
    pub code: Option<String>,
    /// Agent: claude-code, codex, gemini, cursor, opencode, aider (each AGENT[:PROVIDER:MODEL]),
    /// or command:SHELL.
    #[arg(long)]
    pub agent: Option<String>,
    /// What the agent should do.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Driver for the sandbox; the first registered when absent.
    #[arg(long)]
    pub driver: Option<String>,
    /// Image (container drivers; else STOCKADE_<AGENT>_IMAGE or the base image).
    #[arg(long)]
    pub image: Option<String>,
    /// Network (default: full for agents that call a model API, none for command:).
    #[arg(long)]
    pub network: Option<String>,
    /// Stop the agent after this long.
    #[arg(long, default_value = stockade_tasks::DEFAULT_TIMEOUT)]
    pub timeout: String,
    /// MCP servers file (JSON) for agents that take one.
    #[arg(long)]
    pub mcp: Option<String>,
    /// Run tasks × agents × drivers from a JSON file, in parallel.
    #[arg(long)]
    pub matrix: Option<String>,
    /// Keep the sandbox afterwards (its id is in the result).
    #[arg(long)]
    pub keep: bool,
    /// A helper to start in the sandbox before the agent and stop after it (a local model
    /// server, a proxy), run with `sh -c`.
    #[arg(long)]
    pub service: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TaskAction {
    /// List tasks.
    Ls(JsonArgs),
    /// Show one task's result.
    Show {
        /// Task id (or a unique prefix).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a secret; its value is read from stdin (one trailing newline dropped).
    Set {
        /// Letters, digits and '_'.
        name: String,
    },
    /// List secret names (never values).
    Ls(JsonArgs),
    /// Remove a secret.
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Log lines as `text` or `json` (one object per line, for log collectors); `RUST_LOG`
    /// filters them (default `info`).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// TCP address to listen on; every request needs a token from `stockade token create`.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// Do not listen on TCP (the unix socket only).
    #[arg(long)]
    pub no_tcp: bool,
    /// Unix socket to listen on ($STOCKADE_HOME/stockade.sock by default).
    #[arg(long)]
    pub socket: Option<std::path::PathBuf>,
    /// Database: postgres://USER@HOST:PORT/DB, a SQLite file or sqlite://PATH
    /// ($STOCKADE_HOME/stockade.db by default). `stockade token` reads STOCKADE_DB.
    #[arg(long, env = "STOCKADE_DB")]
    pub db: Option<String>,
    /// Keep the output of finished execs this long.
    #[arg(long, default_value = "7d")]
    pub retention: String,
    /// Let API callers name paths on this host: volumes, a rootfs, code from a directory or a
    /// file:// repository, a push to a local repository. Off by default.
    #[arg(long)]
    pub allow_host_paths: bool,
    /// The driver sandboxes made through the E2B-compatible API run on (`stockade info` lists
    /// them); the default driver when absent.
    #[arg(long, env = "STOCKADE_E2B_DRIVER")]
    pub e2b_driver: Option<String>,
    /// Give sandboxes made through the E2B-compatible API outbound network unless a create
    /// refuses it (`allow_internet_access: false`). Off by default: loopback only.
    #[arg(long)]
    pub e2b_allow_internet: bool,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Register a template (or replace the one of that name; `base` replaces the built-in).
    Add {
        /// The E2B `templateID`.
        name: String,
        /// Driver its sandboxes run on (the daemon's --e2b-driver when absent).
        #[arg(long)]
        driver: Option<String>,
        /// Image (container drivers; their default when absent).
        #[arg(long)]
        image: Option<String>,
        /// OCI runtime (container drivers), e.g. runsc.
        #[arg(long)]
        runtime: Option<String>,
        /// User processes run as (root when absent; the image must know it).
        #[arg(long)]
        user: Option<String>,
        /// Home: where processes start (/root for root, else /home/USER).
        #[arg(long)]
        home: Option<String>,
    },
    /// List templates, the built-in `base` included.
    Ls(JsonArgs),
    /// Remove a registered template.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once and stored only as a hash.
    Create {
        /// A name to recognise it by.
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// List tokens (names and ids, never the tokens).
    Ls(JsonArgs),
    /// Remove a token by id or name.
    Rm { id: String },
}
