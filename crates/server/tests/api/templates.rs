//! Templates for the E2B-compatible API: registered, listed, used by an E2B create, removed.

use super::*;

#[tokio::test]
async fn a_registered_template_is_listed_used_and_removed() {
    let d = daemon().await;
    let listed = d.get("/api/templates").await;
    listed.ok(200);
    assert_eq!(listed.json(), json!([{"name": "base"}]), "base is built in");
    let t = json!({"name": "py", "driver": "fake", "image": "python:3", "user": "root", "home": "/srv"});
    let added = d.json("POST", "/api/templates", t.clone()).await;
    added.ok(201);
    assert_eq!(added.json(), t);
    let names: Vec<String> = d
        .get("/api/templates")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["base", "py"]);
    // An E2B create naming it gets its driver and image.
    let made = d.json("POST", "/v2/sandboxes", json!({"templateID": "py"})).await;
    made.ok(201);
    assert_eq!(made.json()["templateID"], "py");
    let id = made.json()["sandboxID"].as_str().unwrap().to_owned();
    let info = d.get(&format!("/api/sandboxes/{id}")).await.json();
    assert_eq!(
        (info["driver"].as_str(), info["spec"]["image"].as_str()),
        (Some("fake"), Some("python:3"))
    );
    d.call("DELETE", "/api/templates/py").await.ok(204);
    d.call("DELETE", "/api/templates/py")
        .await
        .error(404, "not_found", None);
    let m = d
        .call("DELETE", "/api/templates/base")
        .await
        .error(404, "not_found", None);
    assert!(m.contains("built in"), "{m}");
    let unknown = d.json("POST", "/v2/sandboxes", json!({"templateID": "py"})).await;
    assert_eq!(unknown.status.as_u16(), 404, "{}", unknown.text());
}

#[tokio::test]
async fn bad_templates_are_400s_naming_the_field() {
    let d = daemon().await;
    for (body, field) in [
        (json!({"name": "Not Ok"}), "name"),
        (json!({"name": "t", "driver": "nope"}), "driver"),
        (json!({"name": "t", "image": ""}), "image"),
        (json!({"name": "t", "user": "a b"}), "user"),
        (json!({"name": "t", "home": "relative"}), "home"),
    ] {
        d.json("POST", "/api/templates", body)
            .await
            .error(400, "invalid", Some(field));
    }
    // Unknown fields are refused, as everywhere in the API.
    let m = d
        .json("POST", "/api/templates", json!({"name": "t", "imge": "x"}))
        .await
        .error(400, "invalid", Some("body"));
    assert!(m.contains("imge"), "{m}");
    assert_eq!(
        d.get("/api/templates").await.json(),
        json!([{"name": "base"}]),
        "nothing stored"
    );
}
