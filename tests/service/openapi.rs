//! `docs/openapi.json` (served at `GET /openapi.json`) against the proto.
//!
//! The document is generated from the API's descriptor set (the one
//! reflection serves) by [`generate`] below and committed; the test fails
//! when the committed file differs from what the proto gives today
//! (drift), naming the first RPC or field that differs. After changing the
//! proto, regenerate with
//! `UPDATE_OPENAPI=1 cargo test --test service openapi::` and commit the file.
//!
//! Independently of the generator, [`every_rpc_and_field_is_documented`]
//! walks the descriptor and checks that every unary RPC has a path and
//! every field of every message is present under its proto3 JSON name with
//! its JSON type.

use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};

use crate::common::{spawn_app, spawn_app_with};

const PACKAGE: &str = "agora.token.v1";
const SERVICE: &str = "TokenService";
const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

fn descriptor() -> FileDescriptorProto {
    let set = FileDescriptorSet::decode(token_authority::pb::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .into_iter()
        .find(|f| f.package() == PACKAGE)
        .expect("the API's file in the descriptor set")
}

/// Leading comments by source path (message 4, field 2, service 6, method 2,
/// enum 5), cut to their first paragraph.
fn comments(file: &FileDescriptorProto) -> BTreeMap<Vec<i32>, String> {
    let mut out = BTreeMap::new();
    if let Some(info) = &file.source_code_info {
        for loc in &info.location {
            if let Some(c) = &loc.leading_comments {
                let para = c
                    .trim()
                    .split("\n\n")
                    .next()
                    .unwrap_or("")
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ");
                if !para.is_empty() {
                    out.insert(loc.path.clone(), para);
                }
            }
        }
    }
    out
}

fn short_name(type_name: &str) -> &str {
    type_name
        .strip_prefix(&format!(".{PACKAGE}."))
        .unwrap_or_else(|| panic!("type {type_name} outside {PACKAGE}: extend the generator"))
}

/// The JSON schema of one field's value (proto3 JSON canonical form).
fn field_schema(f: &prost_types::FieldDescriptorProto) -> Value {
    let one = match f.r#type() {
        Type::String => json!({ "type": "string" }),
        Type::Bool => json!({ "type": "boolean" }),
        Type::Uint32 => json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX }),
        Type::Int32 => json!({ "type": "integer", "format": "int32" }),
        Type::Enum | Type::Message => {
            json!({ "$ref": format!("#/components/schemas/{}", short_name(f.type_name())) })
        }
        other => panic!(
            "field {}: type {other:?} not mapped: extend the generator",
            f.name()
        ),
    };
    if f.label() == Label::Repeated {
        json!({ "type": "array", "items": one })
    } else {
        one
    }
}

fn message_schema(m: &DescriptorProto, path: &[i32], docs: &BTreeMap<Vec<i32>, String>) -> Value {
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    let is_response = m.name().ends_with("Response");
    for (i, f) in m.field.iter().enumerate() {
        let mut s = field_schema(f);
        let mut fpath = path.to_vec();
        fpath.extend([2, i32::try_from(i).unwrap()]);
        if let Some(d) = docs.get(&fpath) {
            // Beside a $ref too: allowed in OpenAPI 3.1 (JSON Schema 2020-12).
            s["description"] = json!(d);
        }
        props.insert(f.json_name().to_owned(), s);
        // Responses carry every field (defaults included) except proto3
        // `optional` fields and oneof members that are unset (both have a
        // oneof index: `optional` is a synthetic oneof).
        if is_response && f.oneof_index.is_none() {
            required.push(json!(f.json_name()));
        }
    }
    let mut s = json!({ "type": "object", "properties": props });
    if let Some(d) = docs.get(path) {
        s["description"] = json!(d);
    }
    if !required.is_empty() {
        s["required"] = Value::Array(required);
    }
    s
}

/// The unary RPCs of the service (streams are served over gRPC only).
fn unary_rpcs(file: &FileDescriptorProto) -> Vec<&prost_types::MethodDescriptorProto> {
    let service = file
        .service
        .iter()
        .find(|s| s.name() == SERVICE)
        .expect("the service");
    service
        .method
        .iter()
        .filter(|m| !m.server_streaming() && !m.client_streaming())
        .collect()
}

/// The messages and enums the unary RPCs use, transitively.
fn reachable(file: &FileDescriptorProto) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut todo: Vec<String> = unary_rpcs(file)
        .iter()
        .flat_map(|r| [r.input_type(), r.output_type()])
        .map(|t| short_name(t).to_owned())
        .collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(m) = file.message_type.iter().find(|m| m.name() == name) {
            for f in &m.field {
                if matches!(f.r#type(), Type::Message | Type::Enum) {
                    todo.push(short_name(f.type_name()).to_owned());
                }
            }
        }
    }
    seen
}

/// The OpenAPI 3.1 document for the proto.
pub fn generate() -> Value {
    let file = descriptor();
    let docs = comments(&file);
    let used = reachable(&file);
    let mut schemas = serde_json::Map::new();
    for (i, m) in file.message_type.iter().enumerate() {
        if !used.contains(m.name()) {
            continue;
        }
        assert!(
            m.nested_type.is_empty() && m.enum_type.is_empty(),
            "{}: nested types are not mapped: extend the generator",
            m.name()
        );
        schemas.insert(
            m.name().to_owned(),
            message_schema(m, &[4, i32::try_from(i).unwrap()], &docs),
        );
    }
    for (i, e) in file.enum_type.iter().enumerate() {
        if !used.contains(e.name()) {
            continue;
        }
        let names: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
        let mut s = json!({ "type": "string", "enum": names });
        if let Some(d) = docs.get(&vec![5, i32::try_from(i).unwrap()]) {
            s["description"] = json!(d);
        }
        schemas.insert(e.name().to_owned(), s);
    }
    schemas.insert(
        "ConnectError".into(),
        json!({
            "type": "object",
            "description": "An error in the Connect protocol's JSON form: a Connect code (the gRPC code in lower snake case) and a message naming the field and the rule.",
            "properties": {
                "code": { "type": "string", "enum": [
                    "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
                    "already_exists", "permission_denied", "resource_exhausted",
                    "failed_precondition", "aborted", "out_of_range", "unimplemented",
                    "internal", "unavailable", "data_loss", "unauthenticated"
                ] },
                "message": { "type": "string" },
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": { "type": "string" },
                            "value": { "type": "string" },
                            "debug": {}
                        }
                    }
                }
            },
            "required": ["code"]
        }),
    );

    let service = file
        .service
        .iter()
        .position(|s| s.name() == SERVICE)
        .expect("the service");
    let mut paths = serde_json::Map::new();
    for (i, rpc) in file.service[service].method.iter().enumerate() {
        if rpc.server_streaming() || rpc.client_streaming() {
            // Streams are served over gRPC only.
            continue;
        }
        let summary = docs
            .get(&vec![
                6,
                i32::try_from(service).unwrap(),
                2,
                i32::try_from(i).unwrap(),
            ])
            .cloned()
            .unwrap_or_default();
        let input = short_name(rpc.input_type());
        let output = short_name(rpc.output_type());
        paths.insert(
            format!("/{PACKAGE}.{SERVICE}/{}", rpc.name()),
            json!({ "post": {
                "operationId": rpc.name(),
                "tags": [SERVICE],
                "description": summary,
                "security": [{}, { "bearer": [] }],
                "requestBody": {
                    "required": true,
                    "content": { "application/json": {
                        "schema": { "$ref": format!("#/components/schemas/{input}") }
                    } }
                },
                "responses": {
                    "200": {
                        "description": "The result.",
                        "content": { "application/json": {
                            "schema": { "$ref": format!("#/components/schemas/{output}") }
                        } }
                    },
                    "default": { "$ref": "#/components/responses/ConnectError" }
                }
            } }),
        );
    }
    paths.insert(
        "/api/agora/token".into(),
        json!({ "get": {
            "operationId": "GetToken",
            "tags": ["compatible"],
            "description": "The compatible endpoint: an RTC token (uid-based) as plain text.",
            "security": [{}, { "bearer": [] }],
            "parameters": [
                { "name": "channelName", "in": "query", "required": true,
                  "description": "The channel (an empty value means any channel).",
                  "schema": { "type": "string" } },
                { "name": "uid", "in": "query", "required": false,
                  "description": "The uid (0 to 4294967295) or a user account.",
                  "schema": { "type": "string" } },
                { "name": "role", "in": "query", "required": false,
                  "description": "publisher (the default) or subscriber.",
                  "schema": { "type": "string", "enum": ["publisher", "subscriber"] } },
                { "name": "expireSeconds", "in": "query", "required": false,
                  "description": "Token lifetime in seconds.",
                  "schema": { "type": "integer", "minimum": 0, "maximum": u32::MAX } }
            ],
            "responses": {
                "200": {
                    "description": "The token (AccessToken2, starting with 007).",
                    "content": { "text/plain": { "schema": { "type": "string" } } }
                },
                "default": {
                    "description": "One line naming the parameter and the rule.",
                    "content": { "text/plain": { "schema": { "type": "string" } } }
                }
            }
        } }),
    );

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "token-authority",
            "version": PACKAGE,
            "description": "The JSON routes of agora.token.v1.TokenService (proto3 JSON mapping, Connect unary: POST /agora.token.v1.TokenService/<Method>) and the compatible GET /api/agora/token. Generated from proto/agora/token/v1/token_service.proto (tests/service/openapi.rs). The schemas give the canonical proto3 JSON forms (what the service answers); requests may also use the proto field names, numbers as strings and enum numbers. WatchToken is a server stream (gRPC, gRPC-Web and Connect streaming; docs/PROTOCOLS.md), not described here. Callers authenticate with Authorization: Bearer <API key or JWT> unless the service runs without callers."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                "ConnectError": {
                    "description": "An error: its HTTP status follows the Connect code.",
                    "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/ConnectError" }
                    } }
                }
            },
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer",
                  "description": "An API key or a JWT of a configured caller." }
            }
        }
    })
}

#[test]
fn committed_document_is_current() {
    let want = generate();
    let pretty = format!("{}\n", serde_json::to_string_pretty(&want).unwrap());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(FILE, &pretty).unwrap();
    }
    let have: Value = serde_json::from_str(
        &std::fs::read_to_string(FILE).unwrap_or_else(|e| panic!("{FILE}: {e}")),
    )
    .unwrap_or_else(|e| panic!("{FILE} is not JSON: {e}"));
    if have != want {
        let mut diffs = Vec::new();
        diff("", &have, &want, &mut diffs);
        panic!(
            "{FILE} differs from the proto ({} places, first: {}); regenerate with \
             UPDATE_OPENAPI=1 cargo test --test service openapi:: and commit it",
            diffs.len(),
            diffs.first().map_or("", String::as_str)
        );
    }
}

fn diff(at: &str, have: &Value, want: &Value, out: &mut Vec<String>) {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            for (k, wv) in w {
                match h.get(k) {
                    Some(hv) => diff(&format!("{at}/{k}"), hv, wv, out),
                    None => out.push(format!("{at}/{k} missing")),
                }
            }
            for k in h.keys().filter(|k| !w.contains_key(*k)) {
                out.push(format!("{at}/{k} not in the proto"));
            }
        }
        _ if have != want => out.push(format!("{at}: {have} instead of {want}")),
        _ => {}
    }
}

/// The proto3 JSON type of a field, as the document must give it.
fn json_type(f: &prost_types::FieldDescriptorProto) -> &'static str {
    match f.r#type() {
        Type::String | Type::Enum => "string",
        Type::Bool => "boolean",
        Type::Uint32 | Type::Int32 => "integer",
        Type::Message => "object",
        _ => "unmapped",
    }
}

#[test]
fn every_rpc_and_field_is_documented() {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    let file = descriptor();
    let schemas = &doc["components"]["schemas"];
    let resolve = |s: &Value| -> Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => schemas[r.trim_start_matches("#/components/schemas/")].clone(),
            None => s.clone(),
        }
    };
    let service = file.service.iter().find(|s| s.name() == SERVICE).unwrap();
    let mut rpcs = 0;
    for rpc in &service.method {
        if rpc.server_streaming() {
            continue;
        }
        rpcs += 1;
        let op = &doc["paths"][format!("/{PACKAGE}.{SERVICE}/{}", rpc.name())]["post"];
        let req = &op["requestBody"]["content"]["application/json"]["schema"]["$ref"];
        let resp = &op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(
            req.as_str(),
            Some(format!("#/components/schemas/{}", short_name(rpc.input_type())).as_str()),
            "{}: request",
            rpc.name()
        );
        assert_eq!(
            resp.as_str(),
            Some(format!("#/components/schemas/{}", short_name(rpc.output_type())).as_str()),
            "{}: response",
            rpc.name()
        );
    }
    assert_eq!(rpcs, 11, "the unary RPCs");
    let mut fields = 0;
    let used = reachable(&file);
    assert!(used.len() > 30, "{used:?}");
    for m in file.message_type.iter().filter(|m| used.contains(m.name())) {
        let s = &schemas[m.name()];
        assert_eq!(s["type"], "object", "{} missing", m.name());
        let props = s["properties"].as_object().unwrap();
        assert_eq!(props.len(), m.field.len(), "{}: fields", m.name());
        for f in &m.field {
            fields += 1;
            // The proto3 JSON name is the lowerCamelCase of the field name.
            let camel: String = {
                let mut up = false;
                let mut out = String::new();
                for c in f.name().chars() {
                    if c == '_' {
                        up = true;
                    } else if up {
                        out.push(c.to_ascii_uppercase());
                        up = false;
                    } else {
                        out.push(c);
                    }
                }
                out
            };
            let p = props
                .get(&camel)
                .unwrap_or_else(|| panic!("{}.{} missing as {camel}", m.name(), f.name()));
            let (p, repeated) = match p.get("items") {
                Some(items) => (items, true),
                None => (p, false),
            };
            assert_eq!(
                repeated,
                f.label() == Label::Repeated,
                "{}.{}",
                m.name(),
                f.name()
            );
            let p = resolve(p);
            assert_eq!(
                p["type"].as_str(),
                Some(json_type(f)),
                "{}.{}: type",
                m.name(),
                f.name()
            );
            if f.r#type() == Type::Enum {
                let e = file
                    .enum_type
                    .iter()
                    .find(|e| e.name() == short_name(f.type_name()))
                    .unwrap();
                let names: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
                assert_eq!(p["enum"], json!(names), "{}.{}", m.name(), f.name());
            }
        }
    }
    assert!(fields > 100, "{fields} fields checked");
}

#[tokio::test]
async fn served_at_openapi_json() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers.get("content-type").unwrap().to_str().unwrap(),
        "application/json"
    );
    let file: Value = serde_json::from_str(&std::fs::read_to_string(FILE).unwrap()).unwrap();
    assert!(r.json() == file, "the served document is not {FILE}");
    // Not on the admin port (it serves operations only).
    let admin = app.handle.admin_addr().unwrap();
    let r = app
        .request_to(admin, "GET", "/openapi.json", None, Vec::new())
        .await;
    assert_eq!(r.status, 404);
}

/// CORS like the other browser-facing GET routes: the configured origin
/// may read it, another may not.
#[tokio::test]
async fn openapi_json_has_cors_for_the_configured_origins() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let app = spawn_app_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let req = hyper::Request::get(format!("http://{}/openapi.json", app.addr()))
            .header("origin", origin)
            .body(Empty::new())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let acao = resp
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            acao.as_deref() == Some(origin),
            allowed,
            "{origin}: {acao:?}"
        );
        resp.into_body().collect().await.unwrap();
    }
}
