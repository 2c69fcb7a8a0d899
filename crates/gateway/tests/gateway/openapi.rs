//! `proto-docs/openapi.yaml` and the router must list the same routes: a route in the code but not in the
//! document (or the other way round) fails this test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// (method, path) pairs registered in `src/routes/mod.rs` (`.route("/path", get(..).post(..))`).
fn routes_in_code() -> BTreeSet<(String, String)> {
    let source = include_str!("../../src/routes/mod.rs");
    let mut routes = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        // The arguments of this `.route(...)` call: up to its closing parenthesis.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .unwrap()
            .0;
        let args = &call[..end];
        let path = args.split('"').nth(1).unwrap().to_owned();
        let handlers = args.split_once(',').unwrap().1;
        for token in handlers.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
            if METHODS.contains(&token) {
                routes.insert((token.to_owned(), path.clone()));
            }
        }
    }
    routes
}

fn routes_in_document() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../proto-docs/openapi.yaml"
    ))
    .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "the document is OpenAPI 3.1"
    );
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if METHODS.contains(&method) {
                routes.insert((method.to_owned(), path.as_str().unwrap().to_owned()));
            }
        }
    }
    routes
}

#[test]
fn every_route_is_documented_and_every_documented_route_exists() {
    let code = routes_in_code();
    let doc = routes_in_document();
    assert!(
        code.len() >= 10,
        "the route parser found too few routes: {code:?}"
    );
    let undocumented: Vec<_> = code.difference(&doc).collect();
    let phantom: Vec<_> = doc.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from proto-docs/openapi.yaml: {undocumented:?}"
    );
    assert!(
        phantom.is_empty(),
        "documented routes the gateway does not serve: {phantom:?}"
    );
}
