//! The `stockade` command with the docker driver, as a user runs it: `run` with an image, the
//! errors for a missing engine, image or runtime, and `gc`. Needs Docker running
//! (`scripts/engines`); under CI=true a missing engine fails the tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

mod common;

use common::Home;

/// A home with Docker running and the base image built (once per machine; later calls find it
/// by its recipe hash).
fn docker_home(tag: &str) -> Option<Home> {
    if !common::docker_running() {
        return None;
    }
    let home = Home::new(&format!("docker-cli-{tag}"))?;
    let out = home.run(&["image", "base"]);
    assert!(out.status.success(), "image base: {}", stderr(&out));
    Some(home)
}

/// The `stockade.owner` label of this home's containers.
fn owner(home: &Home) -> String {
    let host = String::from_utf8(std::fs::read("/proc/sys/kernel/hostname").unwrap()).unwrap();
    format!("{}:{}", host.trim(), home.dir.display())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn labelled(kind: &str, label: &str) -> Vec<String> {
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-aq", "--filter", label],
        _ => vec!["network", "ls", "-q", "--filter", label],
    };
    let out = Command::new("docker").args(&args).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn run_with_an_image_exits_with_the_command_code_and_leaves_nothing() {
    let Some(home) = docker_home("run") else { return };
    let out = home.run(&[
        "run",
        "--driver",
        "docker",
        "--image",
        "stockade/base:latest",
        "--",
        "sh",
        "-c",
        "echo hello from $(id -un); exit 4",
    ]);
    assert_eq!(stdout(&out), "hello from root\n", "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(stdout(&home.run(&["ls", "-q"])), "");
    assert_eq!(
        labelled("container", &format!("label=stockade.owner={}", owner(&home))),
        Vec::<String>::new()
    );
}

#[test]
fn a_named_sandbox_is_used_from_other_processes_and_inspected() {
    let Some(home) = docker_home("named") else { return };
    let out = home.run(&[
        "create", "--driver", "docker", "--name", "box", "--memory", "256m", "--pids", "128",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = home.run(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo kept > /workspace/f; cat /workspace/f",
    ]);
    assert_eq!(stdout(&out), "kept\n", "{}", stderr(&out));
    let inspect: serde_json::Value = serde_json::from_slice(&home.run(&["inspect", "box"]).stdout).unwrap();
    assert_eq!(inspect["driver"], "docker");
    assert_eq!(inspect["status"], "running");
    assert_eq!(inspect["details"]["transport"], "socket");
    let container = inspect["details"]["container"].as_str().unwrap().to_owned();
    // The engine shows the limits and hardening asked for.
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.NetworkMode}}",
            &container,
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out).trim(),
        "268435456 128 true [ALL] [no-new-privileges] none"
    );
    let stats: serde_json::Value =
        serde_json::from_slice(&home.run(&["stats", "box", "--json"]).stdout).unwrap();
    assert!(stats["memory_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["pids"].as_u64().unwrap() >= 1, "{stats}");
    let out = home.run(&["rm", "-f", "box"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(labelled("container", &format!("name={container}")).is_empty());
}

#[test]
fn engine_image_and_runtime_errors_say_what_to_do() {
    let Some(home) = docker_home("errors") else { return };
    let out = home
        .cmd(&["create", "--driver", "docker"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no container engine is running"), "{err}");
    assert!(
        err.contains("/nonexistent/docker.sock (DOCKER_HOST): no such socket"),
        "{err}"
    );
    assert!(err.contains("dockerd"), "{err}");

    let out = home.run(&[
        "create",
        "--driver",
        "docker",
        "--image",
        "stockade/no-such-image:1",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("stockade: invalid image: stockade/no-such-image:1 is not on the engine"),
        "{err}"
    );
    assert!(err.contains("stockade image base"), "{err}");

    let out = home.run(&["create", "--driver", "docker", "--runtime", "no-such-runtime"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("invalid runtime: \"no-such-runtime\""), "{err}");
    assert!(err.contains("runc"), "{err}");

    let out = home.run(&["create", "--driver", "docker", "--disk", "1g"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("disk limit"), "{}", stderr(&out));
    // None of that left anything behind.
    assert_eq!(stdout(&home.run(&["ls", "-q"])), "");
    assert!(labelled("container", &format!("label=stockade.owner={}", owner(&home))).is_empty());
}

#[test]
fn gc_removes_labelled_containers_and_networks_without_a_record() {
    let Some(home) = docker_home("gc") else { return };
    let out = home.run(&["create", "--driver", "docker", "--name", "kept"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = home.run(&["create", "--driver", "docker", "--network", "full"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let orphan = stdout(&out).trim().to_owned();
    // The record goes away (a crash, a deleted home): the container and network are garbage.
    std::fs::remove_file(home.dir.join(format!("docker/records/{orphan}.json"))).unwrap();
    let label = format!("label=stockade.id={orphan}");
    assert_eq!(labelled("container", &label).len(), 1);
    assert_eq!(labelled("network", &label).len(), 1);
    let out = home.run(&["gc"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(&format!("docker: container stockade-{orphan}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("docker: network stockade-{orphan}")),
        "{said}"
    );
    assert!(labelled("container", &label).is_empty());
    assert!(labelled("network", &label).is_empty());
    // The recorded sandbox is untouched.
    let out = home.run(&["exec", "kept", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
