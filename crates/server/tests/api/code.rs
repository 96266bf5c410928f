//! Diff, apply and push: git runs in the sandbox, which the fake cannot do, so only what the
//! daemon refuses before that is tested here (see `COVERAGE` for where the rest runs).

use serde_json::{json, Value};

use crate::daemon;

#[tokio::test]
async fn diff_and_apply_need_git_in_a_running_sandbox() {
    let d = daemon().await;
    let s = d.create(json!({})).await;
    let stopped = d.stopped().await;
    let dr = &d;
    let diff = move |sandbox: &str, query: &str| {
        let uri = format!("/api/sandboxes/{sandbox}/diff{query}");
        async move { dr.get(&uri).await }
    };
    let apply = move |sandbox: &str| {
        let uri = format!("/api/sandboxes/{sandbox}/apply");
        async move { dr.raw("POST", &uri, "text/x-diff", "--- a/x\n+++ b/x\n").await }
    };
    for query in ["?stat=maybe", "?format=raw"] {
        d.get(&format!("/api/sandboxes/{s}/diff{query}"))
            .await
            .error(400, "invalid", Some("query"));
    }
    let message = diff("nosuchbox", "").await.error(404, "not_found", None);
    assert!(message.contains("nosuchbox"), "{message}");
    apply("nosuchbox").await.error(404, "not_found", None);
    diff(&"x".repeat(129), "").await.error(400, "invalid", Some("id"));
    apply("%FF").await.error(400, "invalid", Some("path"));
    let message = diff(&stopped, "?stat=true").await.error(409, "wrong_state", None);
    assert!(message.contains("diff"), "{message}");
    let message = apply(&stopped).await.error(409, "wrong_state", None);
    assert!(message.contains("apply"), "{message}");
    // The checks pass; then the git script runs in the sandbox, and the fake has no `sh`.
    for reply in [diff(&s, "").await, apply(&s).await] {
        let message = reply.error(422, "command_not_found", None);
        assert!(message.contains("sh"), "{message}");
    }
}

#[tokio::test]
async fn bad_pushes_are_4xx_naming_the_problem() {
    let d = daemon().await;
    let s = d.create(json!({})).await;
    let uri = format!("/api/sandboxes/{s}/push");
    let push = |body: Value| d.json("POST", &uri, body);
    let remote = "https://example.invalid/repo.git";
    d.raw("POST", &uri, "application/json", "{")
        .await
        .error(400, "invalid", Some("body"));
    let message = push(json!({"remote": remote}))
        .await
        .error(400, "invalid", Some("body"));
    assert!(message.contains("branch"), "{message}");
    push(json!({"remote": remote, "branch": "b", "force": true}))
        .await
        .error(400, "invalid", Some("body"));
    for branch in ["", "-f", "a..b", "a b"] {
        push(json!({"remote": remote, "branch": branch}))
            .await
            .error(400, "invalid", Some("branch"));
    }
    push(json!({"remote": remote, "branch": "b", "token_secret": "not a name"}))
        .await
        .error(400, "invalid", Some("token_secret"));
    let message = push(json!({"remote": remote, "branch": "b", "token_secret": "GH_TOKEN"}))
        .await
        .error(400, "invalid", Some("token_secret"));
    assert!(message.contains("no secret named GH_TOKEN"), "{message}");
    for host_path in ["/srv/repo.git", "file:///srv/repo.git", "./repo"] {
        let message =
            push(json!({"remote": host_path, "branch": "b"}))
                .await
                .error(403, "forbidden", Some("remote"));
        assert!(message.contains("--allow-host-paths"), "{message}");
    }
    let message = d
        .json(
            "POST",
            "/api/sandboxes/nosuchbox/push",
            json!({"remote": remote, "branch": "b"}),
        )
        .await
        .error(404, "not_found", None);
    assert!(message.contains("nosuchbox"), "{message}");
    let stopped = d.stopped().await;
    d.json(
        "POST",
        &format!("/api/sandboxes/{stopped}/push"),
        json!({"remote": remote, "branch": "b"}),
    )
    .await
    .error(409, "wrong_state", None);
    // The checks pass; then git runs in the sandbox, and the fake has no `sh`.
    push(json!({"remote": remote, "branch": "b"}))
        .await
        .error(422, "command_not_found", None);
}
