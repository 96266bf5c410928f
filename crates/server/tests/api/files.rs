//! Files of a running sandbox, and archives (which need `tar` in the sandbox).

use serde_json::json;

use crate::daemon;

#[tokio::test]
async fn files_round_trip() {
    let d = daemon().await;
    let s = d.create(json!({})).await;
    let file = |query: &str| format!("/api/sandboxes/{s}/files?{query}");
    let reply = d
        .raw("PUT", &file("path=/w/a.txt"), "application/octet-stream", "hello")
        .await;
    reply.ok(204);
    assert!(reply.body.is_empty());
    d.raw(
        "PUT",
        &file("path=/w/run.sh&mode=755"),
        "application/octet-stream",
        "#!/bin/sh\n",
    )
    .await
    .ok(204);
    let reply = d.get(&file("path=/w/a.txt")).await;
    reply.ok(200);
    assert_eq!(reply.content_type(), "application/octet-stream");
    assert_eq!(&reply.body[..], b"hello");

    let reply = d.get(&format!("/api/sandboxes/{s}/stat?path=/w/a.txt")).await;
    reply.ok(200);
    let stat: stockade_core::FileStat = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(stat.size, 5);
    let reply = d.get(&format!("/api/sandboxes/{s}/dir?path=/w")).await;
    reply.ok(200);
    let entries: Vec<stockade_core::DirEntry> = serde_json::from_slice(&reply.body).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "run.sh"]);
    d.call("POST", &format!("/api/sandboxes/{s}/mkdir?path=/w/sub"))
        .await
        .ok(204);

    let reply = d
        .json(
            "POST",
            &format!("/api/sandboxes/{s}/rename"),
            json!({"from": "/w/a.txt", "to": "/w/b.txt"}),
        )
        .await;
    reply.ok(204);
    d.get(&file("path=/w/a.txt"))
        .await
        .error(400, "file", Some("/w/a.txt"));
    assert_eq!(&d.get(&file("path=/w/b.txt")).await.body[..], b"hello");

    d.call("DELETE", &file("path=/w/b.txt")).await.ok(204);
    d.call("DELETE", &file("path=/w/run.sh&recursive=true"))
        .await
        .ok(204);
    let message = d
        .get(&file("path=/w/b.txt"))
        .await
        .error(400, "file", Some("/w/b.txt"));
    assert!(message.contains("No such file"), "{message}");
    d.get(&format!("/api/sandboxes/{s}/stat?path=/w/b.txt"))
        .await
        .error(400, "file", Some("/w/b.txt"));
    d.call("DELETE", &file("path=/w/b.txt"))
        .await
        .error(400, "file", Some("/w/b.txt"));
    let reply = d.get(&format!("/api/sandboxes/{s}/dir?path=/w")).await;
    assert_eq!(reply.json(), json!([]));
}

/// Every route that takes `?path=`: method and route under the sandbox.
const PATH_ROUTES: &[(&str, &str)] = &[
    ("GET", "files"),
    ("PUT", "files"),
    ("DELETE", "files"),
    ("GET", "dir"),
    ("GET", "stat"),
    ("POST", "mkdir"),
    ("GET", "archive"),
    ("PUT", "archive"),
];

#[tokio::test]
async fn bad_file_requests_are_4xx_naming_the_problem() {
    let d = daemon().await;
    let s = d.create(json!({})).await;
    let stopped = d.stopped().await;
    let call = |method: &'static str, uri: String| {
        let d = &d;
        async move { d.raw(method, &uri, "application/octet-stream", "data").await }
    };
    for (method, route) in PATH_ROUTES {
        let what = format!("{method} {route}");
        let message = call(method, format!("/api/sandboxes/{s}/{route}?path=relative"))
            .await
            .error(400, "invalid", Some("path"));
        assert!(message.contains("absolute"), "{what}: {message}");
        call(method, format!("/api/sandboxes/{s}/{route}?path=/a%00b"))
            .await
            .error(400, "invalid", Some("path"));
        let message =
            call(method, format!("/api/sandboxes/{s}/{route}"))
                .await
                .error(400, "invalid", Some("query"));
        assert!(message.contains("path"), "{what}: {message}");
        call(method, format!("/api/sandboxes/{s}/{route}?path=/w&owner=me"))
            .await
            .error(400, "invalid", Some("query"));
        let message = call(method, format!("/api/sandboxes/nosuchbox/{route}?path=/w"))
            .await
            .error(404, "not_found", None);
        assert!(message.contains("nosuchbox"), "{what}: {message}");
        call(method, format!("/api/sandboxes/%FF/{route}?path=/w"))
            .await
            .error(400, "invalid", Some("path"));
        let message = call(method, format!("/api/sandboxes/{stopped}/{route}?path=/w"))
            .await
            .error(409, "wrong_state", None);
        assert!(message.contains("stopped"), "{what}: {message}");
    }
    for mode in ["999", "rwx", "17777"] {
        let message = call("PUT", format!("/api/sandboxes/{s}/files?path=/w/a&mode={mode}"))
            .await
            .error(400, "invalid", Some("mode"));
        assert!(message.contains(mode), "{message}");
    }
    call(
        "DELETE",
        format!("/api/sandboxes/{s}/files?path=/w&recursive=yes"),
    )
    .await
    .error(400, "invalid", Some("query"));
}

#[tokio::test]
async fn bad_renames_are_4xx_naming_the_problem() {
    let d = daemon().await;
    let s = d.create(json!({})).await;
    let uri = format!("/api/sandboxes/{s}/rename");
    d.raw("POST", &uri, "application/json", "{")
        .await
        .error(400, "invalid", Some("body"));
    let message = d
        .json("POST", &uri, json!({"from": "/a"}))
        .await
        .error(400, "invalid", Some("body"));
    assert!(message.contains("to"), "{message}");
    d.json("POST", &uri, json!({"from": "/a", "to": "/b", "force": true}))
        .await
        .error(400, "invalid", Some("body"));
    d.json("POST", &uri, json!({"from": "/a", "to": "b"}))
        .await
        .error(400, "invalid", Some("path"));
    d.json("POST", &uri, json!({"from": "/missing", "to": "/b"}))
        .await
        .error(400, "file", Some("/missing"));
    d.json(
        "POST",
        "/api/sandboxes/nosuchbox/rename",
        json!({"from": "/a", "to": "/b"}),
    )
    .await
    .error(404, "not_found", None);
    let stopped = d.stopped().await;
    d.json(
        "POST",
        &format!("/api/sandboxes/{stopped}/rename"),
        json!({"from": "/a", "to": "/b"}),
    )
    .await
    .error(409, "wrong_state", None);
}

#[tokio::test]
async fn archives_need_tar_in_the_sandbox() {
    let d = daemon().await;
    let s = d.create(json!({})).await;
    // The checks above pass; then `tar` runs in the sandbox, and the fake has none.
    let message =
        d.get(&format!("/api/sandboxes/{s}/archive?path=/w"))
            .await
            .error(422, "command_not_found", None);
    assert!(message.contains("tar"), "{message}");
    let message = d
        .raw(
            "PUT",
            &format!("/api/sandboxes/{s}/archive?path=/w"),
            "application/octet-stream",
            "not a tar",
        )
        .await
        .error(422, "command_not_found", None);
    assert!(message.contains("tar"), "{message}");
}
