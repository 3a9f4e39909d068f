//! The OpenAPI description (`/api-docs/openapi.json`) against the server that serves
//! it: every route is described and every described route answers, every documented
//! example fits its schema, Swagger UI is at `/api/` without shadowing an API route,
//! and a schemathesis run against a live API and worker finds nothing.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, parts, spawn_app, TestApp};

/// Every route the router serves (`startup::routes`), as the description names them:
/// method and path template.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/api/auth/signup"),
    ("POST", "/api/auth/login"),
    ("GET", "/api/goods"),
    ("POST", "/api/goods"),
    ("GET", "/api/goods/{id}"),
    ("PATCH", "/api/goods/{id}"),
    ("DELETE", "/api/goods/{id}"),
    ("POST", "/api/goods/{id}/bookings"),
    ("DELETE", "/api/goods/{id}/bookings/me"),
    ("POST", "/api/goods/{id}/bookings/me/confirm"),
    ("POST", "/api/booking/{id}"),
    ("DELETE", "/api/booking/{id}"),
    ("GET", "/api/bookings/requests/{requestId}"),
    ("GET", "/api/me/bookings"),
];

/// The routes that serve the description itself, left out of it on purpose.
const DOCS_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api-docs/openapi.json"),
    ("GET", "/api"),
    ("GET", "/api/"),
    ("GET", "/api/swagger-ui.css"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn fetch_spec(app: &TestApp) -> Value {
    let response = app.get("/api-docs/openapi.json", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json")));
    response.json().await.expect("the description is JSON")
}

/// `(METHOD, path)` of every operation the description holds.
fn described(spec: &Value) -> BTreeSet<(String, String)> {
    let paths = spec["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(|m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

/// A concrete path for a template: ids that exist in no test database.
fn concrete(template: &str) -> String {
    template
        .replace("{id}", "987654321")
        .replace("{requestId}", "0193b6f2-8c1e-7d3a-9f4b-2a6c1e0d0001")
}

#[tokio::test]
async fn the_description_is_openapi_3_1_and_names_every_route_the_server_answers() {
    let app = spawn_app().await;
    let spec = fetch_spec(&app).await;
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        spec["openapi"]
    );

    let expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let got = described(&spec);
    // Operation ids are unique (tools such as schemathesis name operations by them).
    let mut ids = BTreeSet::new();
    for (method, path) in &got {
        let id = spec["paths"][path][method.to_lowercase()]["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
    }
    assert_eq!(
        got.difference(&expected).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "described but not in the route table"
    );
    assert_eq!(
        expected.difference(&got).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed but not described"
    );

    // Every described operation is routed: not the 404 of an unknown route, nor a 405.
    for (method, path) in &got {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let response = app
            .http
            .request(method.clone(), app.url(&concrete(path)))
            .send()
            .await
            .expect("send");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["error"]["code"] == "not_found"),
            "{method} {path} is described but not routed"
        );
    }

    // Every other method on a described path is a 405 whose `Allow` lists exactly the
    // described methods.
    let by_path = got.iter().fold(
        std::collections::BTreeMap::<&str, BTreeSet<&str>>::new(),
        |mut acc, (m, p)| {
            acc.entry(p.as_str()).or_default().insert(m.as_str());
            acc
        },
    );
    for (path, methods) in by_path {
        for other in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if methods.contains(other) {
                continue;
            }
            let method = Method::from_bytes(other.as_bytes()).expect("method");
            let response = app
                .http
                .request(method, app.url(&concrete(path)))
                .send()
                .await
                .expect("send");
            let allow: BTreeSet<String> = response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_owned())
                .filter(|m| !m.is_empty())
                .collect();
            let (status, body) = parts(response).await;
            assert_error(
                status,
                &body,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
            );
            let described: BTreeSet<String> = methods.iter().map(|m| (*m).to_owned()).collect();
            assert_eq!(allow, described, "Allow of {other} {path}");
        }
    }

    // The routes that serve the description answer, and are not in it.
    for (method, path) in DOCS_ROUTES {
        assert!(!expected.contains(&((*method).to_owned(), (*path).to_owned())));
        let response = app.get(path, None).await;
        assert!(
            response.status().is_success() || response.status().is_redirection(),
            "{method} {path}: {}",
            response.status()
        );
    }
    // A route nobody serves is still the API's 404.
    let (status, body) = parts(app.get("/api/no-such-route", None).await).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

/// Every example in the description with the schema it illustrates: a media type's or
/// parameter's `example`/`examples` against its `schema`, and a schema's own `example`
/// (or `examples`) against itself.
fn examples(node: &Value, in_schema: bool, found: &mut Vec<(Value, Value, String)>, at: &str) {
    match node {
        Value::Object(map) => {
            if let Some(schema) = map.get("schema") {
                if let Some(example) = map.get("example") {
                    found.push((schema.clone(), example.clone(), format!("{at}/example")));
                }
                if let Some(Value::Object(named)) = map.get("examples") {
                    for (name, example) in named {
                        if let Some(value) = example.get("value") {
                            found.push((
                                schema.clone(),
                                value.clone(),
                                format!("{at}/examples/{name}"),
                            ));
                        }
                    }
                }
            }
            if in_schema {
                let mut bare = map.clone();
                let one = bare.remove("example");
                let many = bare.remove("examples");
                let bare = Value::Object(bare);
                if let Some(example) = one {
                    found.push((bare.clone(), example, format!("{at}/example")));
                }
                if let Some(Value::Array(many)) = many {
                    for (i, example) in many.into_iter().enumerate() {
                        found.push((bare.clone(), example, format!("{at}/examples/{i}")));
                    }
                }
            }
            for (key, child) in map {
                if matches!(key.as_str(), "example" | "examples") {
                    continue;
                }
                // Below a `schema` (or in `components/schemas`), objects are schemas,
                // except the maps of `properties`, whose values are.
                let child_in_schema = match key.as_str() {
                    "schema" => true,
                    "properties" => false,
                    _ => in_schema || at.ends_with("/properties") || at == "/components/schemas",
                };
                examples(child, child_in_schema, found, &format!("{at}/{key}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                examples(item, in_schema, found, &format!("{at}/{i}"));
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_documented_example_validates_against_its_schema() {
    let app = spawn_app().await;
    let spec = fetch_spec(&app).await;
    let mut found = Vec::new();
    examples(&spec, false, &mut found, "");
    // Every body type and every error response has at least one.
    assert!(found.len() >= 40, "only {} examples found", found.len());
    let mut failures = Vec::new();
    for (schema, example, at) in &found {
        // The spec's components travel with each schema, so `#/components/schemas/...`
        // resolves inside it; OpenAPI's own keywords (`example`) are unknown to JSON
        // Schema, which ignores them.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": spec["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema at {at} does not compile: {e}"));
        for error in validator.iter_errors(example) {
            failures.push(format!("{at}: {error} (at {})", error.instance_path()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And a wrong one is caught: the error body's code is enumerated.
    let body = json!({ "error": { "code": "no_such_code", "message": "x" } });
    let root = json!({
        "components": spec["components"],
        "$ref": "#/components/schemas/ErrorBody",
    });
    let validator = jsonschema::validator_for(&root).expect("ErrorBody compiles");
    assert!(!validator.is_valid(&body));
}

#[tokio::test]
async fn swagger_ui_is_at_api_and_shadows_no_api_route() {
    let app = spawn_app().await;
    let response = app.get("/api", None).await;
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok()),
        Some("/api/")
    );
    let response = app.get("/api/", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let page = response.text().await.expect("page");
    assert!(page.contains("swagger-ui"), "{page}");
    // Every file the page loads is served.
    let linked: Vec<&str> = page
        .split(['"', '\''])
        .filter(|s| s.ends_with(".js") || s.ends_with(".css") || s.ends_with(".png"))
        .map(|s| s.trim_start_matches("./"))
        .collect();
    assert!(linked.len() >= 6, "{linked:?}");
    for file in linked {
        let response = app.get(&format!("/api/{file}"), None).await;
        assert_eq!(response.status(), StatusCode::OK, "/api/{file}");
    }
    let initializer = app.get("/api/swagger-initializer.js", None).await;
    assert_eq!(initializer.status(), StatusCode::OK);
    let script = initializer.text().await.expect("script");
    assert!(script.contains("/api-docs/openapi.json"), "{script}");
    let css = app.get("/api/swagger-ui.css", None).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/css")));

    // A file Swagger UI does not have, and any other unknown path, is the API's 404.
    for path in [
        "/api/no-such-file.js",
        "/api/nothing",
        "/api/goods/1/nothing",
    ] {
        let (status, body) = parts(app.get(path, None).await).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    // The API's routes under /api still answer as before.
    let (status, body) = parts(app.get("/api/goods", None).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.is_array());
    let (status, body) = parts(app.get("/api/goods/abc", None).await).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_path");
    let (status, body) = parts(
        app.get(
            "/api/bookings/requests/0193b6f2-8c1e-7d3a-9f4b-2a6c1e0d0001",
            None,
        )
        .await,
    )
    .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (_, token) = app.customers("docs", 1).await.remove(0);
    let (status, _) = parts(app.get("/api/me/bookings", Some(&token)).await).await;
    assert_eq!(status, StatusCode::OK);
    // Metrics keep route templates, not paths.
    let metrics = app
        .get("/metrics", None)
        .await
        .text()
        .await
        .expect("metrics");
    assert!(!metrics.contains("no-such-file"));
}

/// The schemathesis command: `TICKETNEST_SCHEMATHESIS`, else the one
/// `scripts/test.sh` installs into `.dev/venv`.
fn schemathesis() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("TICKETNEST_SCHEMATHESIS") {
        return Some(path.into());
    }
    let installed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev/venv/bin/schemathesis");
    installed.exists().then_some(installed)
}

/// A bounded schemathesis run (every check, examples and coverage and fuzzing phases)
/// against the API with a worker deciding, as an organizer (so goods can be created
/// and booked): no 5xx, no answer the description does not allow.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_against_the_description() {
    let Some(command) = schemathesis() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "schemathesis is not installed: scripts/test.sh installs it into .dev/venv"
        );
        eprintln!("skipped: schemathesis not installed (scripts/test.sh installs it)");
        return;
    };
    let app = spawn_app().await;
    app.in_process_worker().await;
    let (_, token) = app.organizer().await;
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    // Run in a directory of its own, so nothing it writes lands in the work tree.
    let scratch = std::env::temp_dir().join(format!("schemathesis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let mut run = tokio::process::Command::new(&command);
    run.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/api-docs/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .current_dir(&scratch)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(std::time::Duration::from_secs(240), run.output())
        .await
        .expect("schemathesis ran over 240 s")
        .expect("start schemathesis");
    let _ = std::fs::remove_dir_all(&scratch);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        output.status
    );
    println!("{stdout}");
}
