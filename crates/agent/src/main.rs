//! `stockade-agent`: the in-sandbox agent, and the native driver's supervisor.
//!
//! ```text
//! stockade-agent init --listen-fd N      serve the agent protocol on an inherited socket
//! stockade-agent init --listen PATH      ... on a new socket at PATH (container drivers)
//! stockade-agent init --vm-port-fd N    ... over an inherited virtio-serial port (a VM guest's agent)
//! stockade-agent vm-init                 a VM guest's first stage, as the initramfs's /init
//!                                        (how the kernel starts it: argv[0] /init, no arguments)
//! stockade-agent connect PATH           bridge stdin/stdout to the agent socket at PATH (how
//!                                        container drivers reach the agent through `docker exec`)
//! stockade-agent supervise              supervise the native sandbox named by STOCKADE_SUPERVISE_HOME
//!                                        and STOCKADE_SUPERVISE_ID (set by the driver)
//! stockade-agent vm-supervise           supervise the microvm sandbox named by STOCKADE_MICROVM_HOME
//!                                        and STOCKADE_MICROVM_ID (set by the driver)
//! ```
#![forbid(unsafe_code)]

use std::os::unix::net::UnixListener;

use stockade_agent::{AgentConfig, CONFIG_ENV};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.first().map(String::as_str) == Some("/init") && std::process::id() == 1 {
        stockade_agent::vm::stage_one();
    }
    let code = match args.get(1).map(String::as_str) {
        Some("vm-init") => stockade_agent::vm::stage_one(),
        Some("init") if args.get(2).map(String::as_str) == Some("--vm-port-fd") => match &args[3..] {
            [fd] => {
                let served = fd
                    .parse::<i32>()
                    .map_err(|_| std::io::Error::other(format!("--vm-port-fd {fd:?} is not a number")))
                    .and_then(stockade_sys::claim_inherited_fd)
                    .and_then(stockade_agent::vm::serve);
                match served {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("stockade-agent: {e}");
                        1
                    }
                }
            }
            _ => usage(),
        },
        Some("init") => init(&args[2..]),
        Some("connect") => match &args[2..] {
            [path] => connect(path),
            _ => usage(),
        },
        #[cfg(feature = "native")]
        Some("supervise") => {
            // The supervisor's log is its stderr (the sandbox's log file, once it is set up).
            let _ = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_target(false)
                .with_writer(std::io::stderr)
                .try_init();
            let home = std::env::var_os(stockade_native::supervisor::HOME_ENV);
            let id = std::env::var(stockade_native::supervisor::ID_ENV);
            match (home, id) {
                (Some(home), Ok(id)) => {
                    stockade_native::supervisor::main(std::path::Path::new(&home), &id, stockade_agent::run)
                }
                _ => usage(),
            }
        }
        #[cfg(feature = "microvm")]
        Some("vm-supervise") => {
            let _ = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_target(false)
                .with_writer(std::io::stderr)
                .try_init();
            let home = std::env::var_os(stockade_microvm::supervisor::HOME_ENV);
            let id = std::env::var(stockade_microvm::supervisor::ID_ENV);
            match (home, id) {
                (Some(home), Ok(id)) => stockade_microvm::supervisor::main(std::path::Path::new(&home), &id),
                _ => usage(),
            }
        }
        _ => usage(),
    };
    std::process::exit(code);
}

fn usage() -> i32 {
    eprintln!(
        "usage: stockade-agent init (--listen-fd N | --listen PATH | --vm-port-fd N) | stockade-agent vm-init | stockade-agent connect PATH | stockade-agent supervise"
    );
    2
}

fn init(args: &[String]) -> i32 {
    let config = match std::env::var(CONFIG_ENV) {
        Ok(json) => match serde_json::from_str::<AgentConfig>(&json) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("stockade-agent: bad {CONFIG_ENV}: {e}");
                return 2;
            }
        },
        Err(_) => AgentConfig {
            workdir: "/".into(),
            ..Default::default()
        },
    };
    // Not for the commands we start: they get exactly the environment the plan builds.
    std::env::remove_var(CONFIG_ENV);
    if let [flag, _] = args {
        // As a container's init: the default user owns the workdir (the host may not be able to
        // chown it, as with rootless engines; we hold CAP_CHOWN until the bounding set goes).
        if flag == "--listen" {
            if let Err(e) = stockade_agent::give_workdir_to_default_user(&config) {
                eprintln!("stockade-agent: {e}");
                return 1;
            }
        }
    }
    let listener = match args {
        [flag, fd] if flag == "--listen-fd" => fd
            .parse::<i32>()
            .map_err(|_| std::io::Error::other(format!("--listen-fd {fd:?} is not a number")))
            .and_then(stockade_sys::claim_inherited_fd)
            .map(UnixListener::from),
        [flag, path] if flag == "--listen" => {
            let _ = std::fs::remove_file(path);
            UnixListener::bind(path)
        }
        _ => return usage(),
    };
    let result = listener.and_then(|l| stockade_agent::run(l, config));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("stockade-agent: {e}");
            1
        }
    }
}

/// Copies stdin to the socket at `path` and the socket to stdout until both directions end.
fn connect(path: &str) -> i32 {
    let sock = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stockade-agent: connect {path}: {e}");
            return 1;
        }
    };
    let mut to_agent = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stockade-agent: {e}");
            return 1;
        }
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut to_agent);
        let _ = to_agent.shutdown(std::net::Shutdown::Write);
    });
    // Stdout is line-buffered and frames are binary: flush after every chunk.
    use std::io::{Read, Write};
    let mut from_agent = sock;
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from_agent.read(&mut buf) {
            Ok(0) => return 0,
            Ok(n) => n,
            Err(e) => {
                eprintln!("stockade-agent: {e}");
                return 1;
            }
        };
        if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
            return 1;
        }
    }
}
