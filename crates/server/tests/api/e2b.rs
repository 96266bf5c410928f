//! The E2B-compatible surface on the fake: E2B's status codes and error bodies, its list
//! filters and paging, envd's routing by header, access tokens and Connect framing. (E2B's own
//! SDKs drive it on real drivers in `e2b/python` and `e2b/js`, run by `scripts/e2b-sdk-test`.)

use super::*;

fn envd_request(
    id: &str,
    token: Option<&str>,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Request<Body> {
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header("e2b-sandbox-id", id)
        .header("e2b-sandbox-port", "49983")
        .header("content-type", content_type)
        .header("connect-protocol-version", "1");
    if let Some(token) = token {
        req = req.header("x-access-token", token);
    }
    req.body(Body::from(body)).unwrap()
}

/// One Connect envelope.
fn envelope(json: &Value) -> Vec<u8> {
    let body = json.to_string().into_bytes();
    let mut out = vec![0];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A streamed answer's envelopes: (flags, message).
fn frames(mut body: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push((body[0], serde_json::from_slice(&body[5..5 + len]).unwrap()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "a partial envelope at the end");
    out
}

/// An E2B error body: exactly `{"code": status, "message"}`.
#[track_caller]
fn e2b_error(reply: &Reply, status: u16) -> String {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.text());
    let body = reply.json();
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message"], "{body}");
    assert_eq!(body["code"], status, "{body}");
    body["message"].as_str().unwrap().to_owned()
}

/// A sandbox made through E2B's create: (id, access token).
async fn create(d: &Daemon, body: Value) -> (String, String) {
    let reply = d.json("POST", "/v2/sandboxes", body).await;
    reply.ok(201);
    let v = reply.json();
    for field in ["templateID", "sandboxID", "clientID", "envdVersion"] {
        assert!(v[field].is_string(), "{field} is required: {v}");
    }
    (
        v["sandboxID"].as_str().unwrap().to_owned(),
        v["envdAccessToken"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn create_get_list_and_kill_answer_as_e2b_does() {
    let d = daemon().await;
    let (id, _) = create(
        &d,
        json!({"templateID": "base", "timeout": 60, "metadata": {"team": "a"}}),
    )
    .await;
    // The older SDKs' path makes the same.
    let old = d.json("POST", "/sandboxes", json!({"templateID": "base"})).await;
    old.ok(201);
    let detail = d.get(&format!("/sandboxes/{id}")).await;
    detail.ok(200);
    let v = detail.json();
    assert_eq!(v["state"], "running");
    assert_eq!(v["metadata"], json!({"team": "a"}));
    for field in ["startedAt", "endAt", "cpuCount", "memoryMB", "diskSizeMB"] {
        assert!(!v[field].is_null(), "{field} is required: {v}");
    }
    let started = chrono_ms(v["startedAt"].as_str().unwrap());
    let end = chrono_ms(v["endAt"].as_str().unwrap());
    assert!(
        (59_000..=61_000).contains(&(end - started)),
        "endAt is the timeout after the start: {v}"
    );

    let listed = d.get("/v2/sandboxes?metadata=team%3Da").await;
    listed.ok(200);
    let listed = listed.json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sandboxID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "only the sandbox with that metadata");

    d.call("DELETE", &format!("/sandboxes/{id}")).await.ok(204);
    e2b_error(&d.call("DELETE", &format!("/sandboxes/{id}")).await, 404);
    e2b_error(&d.get(&format!("/sandboxes/{id}")).await, 404);
    e2b_error(
        &d.json(
            "POST",
            &format!("/sandboxes/{id}/connect"),
            json!({"timeout": 10}),
        )
        .await,
        404,
    );
}

fn chrono_ms(rfc3339: &str) -> i64 {
    // "2026-12-04T01:02:03.456Z": good enough for differences within a day.
    let time = &rfc3339[11..23];
    let (h, m, s) = (&time[0..2], &time[3..5], &time[6..12]);
    let secs: f64 =
        h.parse::<f64>().unwrap() * 3600.0 + m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap();
    (secs * 1000.0) as i64
}

#[tokio::test]
async fn the_list_pages_with_x_next_token() {
    let d = daemon().await;
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(
            create(&d, json!({"templateID": "base", "metadata": {"page": "yes"}}))
                .await
                .0,
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..4 {
        let uri = match &next {
            Some(token) => format!("/v2/sandboxes?order=asc&limit=1&metadata=page%3Dyes&nextToken={token}"),
            None => "/v2/sandboxes?order=asc&limit=1&metadata=page%3Dyes".to_owned(),
        };
        let page = d.get(&uri).await;
        page.ok(200);
        let items = page.json();
        assert_eq!(items.as_array().unwrap().len(), 1, "{items}");
        seen.push(items[0]["sandboxID"].as_str().unwrap().to_owned());
        next = page
            .headers
            .get("x-next-token")
            .map(|v| v.to_str().unwrap().to_owned());
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen, made, "three pages, oldest first, then no next token");
    // Newest first unless asked otherwise, as E2B lists.
    let newest_first = d.get("/v2/sandboxes?metadata=page%3Dyes").await.json();
    assert_eq!(newest_first[0]["sandboxID"], made[2].as_str());
}

#[tokio::test]
async fn bad_input_gets_e2b_status_codes_never_a_5xx() {
    let d = daemon().await;
    let m = e2b_error(
        &d.json("POST", "/v2/sandboxes", json!({"templateID": "nope"}))
            .await,
        404,
    );
    assert!(m.contains("nope"), "{m}");
    e2b_error(
        &d.raw("POST", "/v2/sandboxes", "application/json", "{not json")
            .await,
        400,
    );
    e2b_error(&d.json("POST", "/v2/sandboxes", json!({})).await, 400);
    let m = e2b_error(
        &d.json(
            "POST",
            "/v2/sandboxes",
            json!({"templateID": "base", "timeout": 999_999}),
        )
        .await,
        400,
    );
    assert!(m.starts_with("timeout"), "{m}");
    let m = e2b_error(&d.get("/v2/sandboxes?state=gone").await, 400);
    assert!(m.starts_with("state"), "{m}");
    e2b_error(&d.get("/sandboxes/000000000000").await, 404);
    // E2B has no names or prefixes: an id is exact.
    let (id, _) = create(&d, json!({"templateID": "base"})).await;
    e2b_error(&d.get(&format!("/sandboxes/{}", &id[..6])).await, 404);
    e2b_error(&d.call("POST", &format!("/sandboxes/{id}/resume")).await, 409);
    d.call("POST", &format!("/sandboxes/{id}/pause")).await.ok(204);
    e2b_error(&d.call("POST", &format!("/sandboxes/{id}/pause")).await, 409);
    assert_eq!(d.get(&format!("/sandboxes/{id}")).await.json()["state"], "paused");
    // Connect starts a paused sandbox again: 201, where a running one answers 200.
    d.json(
        "POST",
        &format!("/sandboxes/{id}/connect"),
        json!({"timeout": 30}),
    )
    .await
    .ok(201);
    d.json(
        "POST",
        &format!("/sandboxes/{id}/connect"),
        json!({"timeout": 30}),
    )
    .await
    .ok(200);
}

#[tokio::test]
async fn the_api_key_is_a_stockade_token_and_a_missing_one_is_an_e2b_401() {
    let d = daemon().await;
    let app = stockade_server::tcp_app(Arc::clone(&d.state));
    let send = |key: Option<&str>| {
        let mut req = Request::builder().method("GET").uri("/v2/sandboxes");
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        let app = app.clone();
        let req = req.body(Body::empty()).unwrap();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            Reply {
                status,
                headers: HeaderMap::new(),
                body,
            }
        }
    };
    e2b_error(&send(None).await, 401);
    e2b_error(&send(Some("stk_wrong")).await, 401);
    d.state
        .db
        .create_token("t1", "e2b", "stk_right", 0)
        .await
        .unwrap();
    send(Some("stk_right")).await.ok(200);
}

#[tokio::test]
async fn envd_is_chosen_by_header_and_wants_the_sandboxs_access_token() {
    let d = daemon().await;
    let (id, token) = create(&d, json!({"templateID": "base"})).await;
    let health = |id: &str| {
        Request::builder()
            .uri("/health")
            .header("e2b-sandbox-id", id)
            .body(Body::empty())
            .unwrap()
    };
    d.send(health(&id)).await.ok(204);
    let gone = d.send(health("ffffffffffff")).await;
    assert_eq!(gone.status.as_u16(), 502);
    assert_eq!(
        gone.json(),
        json!({"sandboxId": "ffffffffffff", "message": "The sandbox was not found", "code": 502})
    );
    let list = "/process.Process/List";
    for wrong in [None, Some("not-the-token")] {
        let reply = d
            .send(envd_request(&id, wrong, list, "application/json", b"{}".to_vec()))
            .await;
        assert_eq!(reply.status.as_u16(), 401, "{}", reply.text());
        assert_eq!(reply.json()["code"], "unauthenticated");
    }
    let reply = d
        .send(envd_request(
            &id,
            Some(&token),
            list,
            "application/json",
            b"{}".to_vec(),
        ))
        .await;
    reply.ok(200);
    assert_eq!(reply.json(), json!({"processes": []}));
    // Binary protobuf is refused by name, not misread.
    let reply = d
        .send(envd_request(
            &id,
            Some(&token),
            list,
            "application/proto",
            Vec::new(),
        ))
        .await;
    assert_eq!(reply.json()["code"], "unimplemented");
}

#[tokio::test]
async fn a_started_process_streams_start_data_end_then_the_end_of_stream() {
    let d = daemon().await;
    let (id, token) = create(&d, json!({"templateID": "base"})).await;
    let start = envelope(&json!({"process": {"cmd": "echo", "args": ["hi"]}, "stdin": false}));
    let reply = d
        .send(envd_request(
            &id,
            Some(&token),
            "/process.Process/Start",
            "application/connect+json",
            start,
        ))
        .await;
    reply.ok(200);
    assert_eq!(reply.content_type(), "application/connect+json");
    let frames = frames(&reply.body);
    let (flags, messages): (Vec<u8>, Vec<Value>) = frames.into_iter().unzip();
    assert_eq!(flags, [0, 0, 0, 2], "{messages:?}");
    assert!(messages[0]["event"]["start"]["pid"].is_u64(), "{messages:?}");
    assert_eq!(messages[1], json!({"event": {"data": {"stdout": "aGkK"}}}));
    assert_eq!(
        messages[2],
        json!({"event": {"end": {"exitCode": 0, "exited": true, "status": "exit status 0"}}})
    );
    assert_eq!(messages[3], json!({}));
    // An unknown pid is a stream error: HTTP 200 and the end frame says not_found.
    let attach = envelope(&json!({"process": {"pid": 424242}}));
    let reply = d
        .send(envd_request(
            &id,
            Some(&token),
            "/process.Process/Connect",
            "application/connect+json",
            attach,
        ))
        .await;
    reply.ok(200);
    let frames = super::e2b::frames(&reply.body);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 2);
    assert_eq!(frames[0].1["error"]["code"], "not_found");
    // So is a signal to it, as a unary error (the SDK's kill then answers False).
    let signal = json!({"process": {"pid": 424242}, "signal": "SIGNAL_SIGKILL"})
        .to_string()
        .into_bytes();
    let reply = d
        .send(envd_request(
            &id,
            Some(&token),
            "/process.Process/SendSignal",
            "application/json",
            signal,
        ))
        .await;
    assert_eq!(reply.status.as_u16(), 404);
    assert_eq!(reply.json()["code"], "not_found");
}
