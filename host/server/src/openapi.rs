//! The OpenAPI 3 document of the REST API, written by hand next to the routes it describes
//! (a test checks that every documented operation is routed; schemathesis fuzzes them all).

use serde_json::{Value, json};

fn error_responses(codes: &[&str]) -> Value {
    let mut responses = serde_json::Map::new();
    for code in codes {
        responses.insert(
            code.to_string(),
            json!({ "description": "error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    Value::Object(responses)
}

fn merge(mut base: Value, more: Value) -> Value {
    if let (Some(base), Value::Object(more)) = (base.as_object_mut(), more) {
        base.extend(more);
    }
    base
}

fn json_body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn ok(code: &str, description: &str, schema: Option<Value>) -> Value {
    let mut response = json!({ "description": description });
    if let Some(schema) = schema {
        response["content"] = json!({ "application/json": { "schema": schema } });
    }
    json!({ code: response })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn name_param(name: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } })
}

/// Every route of [`crate::api::router`], with its parameters, bodies and answers.
pub fn document() -> Value {
    let auth_errors = ["401", "403", "404"];
    let function = [name_param("name")];
    json!({
        "openapi": "3.0.3",
        "info": { "title": "sluice control plane", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": { "type": "object", "required": ["error", "cause"],
                    "properties": { "error": { "type": "string" }, "cause": { "type": "string" } } },
                "Quotas": { "type": "object", "properties": {
                    "functions": { "type": "integer", "minimum": 0, "maximum": 4294967295u64 },
                    "instances": { "type": "integer", "minimum": 1, "maximum": 4294967295u64 },
                    "memory_mb": { "type": "integer", "minimum": 1 },
                    "timeout_ms": { "type": "integer", "minimum": 1 },
                    "gpu_memory_mb": { "type": "integer", "minimum": 0 },
                    "sink_bytes": { "type": "integer", "minimum": 0 } },
                    "additionalProperties": false },
                "NewTenant": { "type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                    "name": { "type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$" },
                    "quotas": schema("Quotas") } },
                "CreatedTenant": { "type": "object", "required": ["name", "token", "quotas"], "properties": {
                    "name": { "type": "string" }, "token": { "type": "string" }, "quotas": schema("Quotas") } },
                "Tenant": { "type": "object", "required": ["name", "quotas", "functions"], "properties": {
                    "name": { "type": "string" }, "quotas": schema("Quotas"), "functions": { "type": "integer" } } },
                "TenantQuotas": { "type": "object", "required": ["name", "quotas"], "properties": {
                    "name": { "type": "string" }, "quotas": schema("Quotas") } },
                "Version": { "type": "object", "required": ["version", "hash", "size_bytes", "deployed_at"], "properties": {
                    "version": { "type": "integer" }, "hash": { "type": "string" },
                    "size_bytes": { "type": "integer" }, "deployed_at": { "type": "string" } } },
                "Function": { "type": "object",
                    "required": ["name", "status", "active_version", "versions", "instances", "last_error"], "properties": {
                    "name": { "type": "string" }, "status": { "type": "string", "enum": ["running", "failed"] },
                    "active_version": { "type": "integer" },
                    "versions": { "type": "array", "items": schema("Version") },
                    "instances": { "type": "integer" }, "last_error": { "type": "string", "nullable": true },
                    "http_path": { "type": "string", "nullable": true } } },
                "FunctionSummary": { "type": "object", "required": ["name", "active_version", "status"], "properties": {
                    "name": { "type": "string" }, "active_version": { "type": "integer" }, "status": { "type": "string" } } },
                "Rollback": { "type": "object", "required": ["version"], "additionalProperties": false,
                    "properties": { "version": { "type": "integer", "minimum": 0 } } },
                "LogLine": { "type": "object", "properties": {
                    "ts": { "type": "string" }, "level": { "type": "string" }, "tenant": { "type": "string" },
                    "function": { "type": "string" }, "version": { "type": "integer" },
                    "invocation": { "type": "integer" }, "message": { "type": "string" } } },
                "Logs": { "type": "object", "required": ["lines"],
                    "properties": { "lines": { "type": "array", "items": schema("LogLine") }, "dropped": { "type": "integer" } } }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/healthz": { "get": { "summary": "the process is up", "security": [],
                "responses": ok("200", "up", None) } },
            "/readyz": { "get": { "summary": "the store is loaded and its functions started", "security": [],
                "responses": merge(ok("200", "ready", None), error_responses(&["503"])) } },
            "/metrics": { "get": { "summary": "Prometheus metrics (a tenant sees its own label sets)",
                "responses": merge(json!({ "200": { "description": "Prometheus text exposition",
                    "content": { "text/plain": { "schema": { "type": "string" } } } } }), error_responses(&["401", "404"])) } },
            "/openapi.json": { "get": { "summary": "this document", "security": [],
                "responses": ok("200", "OpenAPI 3 document", Some(json!({ "type": "object" }))) } },
            "/v1/tenants": {
                "post": { "summary": "create a tenant (admin); its token is shown once", "requestBody": json_body("NewTenant"),
                    "responses": merge(ok("201", "created", Some(schema("CreatedTenant"))), error_responses(&["400", "401", "403", "409", "422"])) },
                "get": { "summary": "list tenants (admin)",
                    "responses": merge(ok("200", "tenants", Some(json!({ "type": "array", "items": schema("Tenant") }))), error_responses(&["401", "403"])) } },
            "/v1/tenants/{tenant}": {
                "delete": { "summary": "delete a tenant and stop its functions (admin)", "parameters": [name_param("tenant")],
                    "responses": merge(ok("204", "deleted", None), error_responses(&auth_errors)) } },
            "/v1/tenants/{tenant}/quotas": {
                "put": { "summary": "set a tenant's quotas (admin); fields left out keep their values",
                    "parameters": [name_param("tenant")], "requestBody": json_body("Quotas"),
                    "responses": merge(ok("200", "updated", Some(schema("TenantQuotas"))), error_responses(&["400", "401", "403", "404", "422"])) } },
            "/v1/functions": {
                "get": { "summary": "list the tenant's functions",
                    "responses": merge(ok("200", "functions", Some(json!({ "type": "array", "items": schema("FunctionSummary") }))), error_responses(&["401", "403"])) } },
            "/v1/functions/{name}": {
                "put": { "summary": "deploy a new version: the manifest and the component", "parameters": function,
                    "requestBody": { "required": true, "content": { "multipart/form-data": { "schema": {
                        "type": "object", "required": ["manifest", "component"], "properties": {
                            "manifest": { "type": "string" }, "component": { "type": "string", "format": "binary" } } } } } },
                    "responses": merge(ok("201", "deployed", Some(schema("Function"))), error_responses(&["400", "401", "403", "404", "413", "422"])) },
                "get": { "summary": "a function: status, versions, instances, last error", "parameters": function,
                    "responses": merge(ok("200", "the function", Some(schema("Function"))), error_responses(&auth_errors)) },
                "delete": { "summary": "stop a function and delete its versions", "parameters": function,
                    "responses": merge(ok("204", "deleted", None), error_responses(&auth_errors)) } },
            "/v1/functions/{name}/rollback": {
                "post": { "summary": "make an earlier version active", "parameters": function, "requestBody": json_body("Rollback"),
                    "responses": merge(ok("200", "rolled back", Some(schema("Function"))), error_responses(&["400", "401", "403", "404", "422"])) } },
            "/v1/functions/{name}/invoke": {
                "post": { "summary": "run the function on one event (the body) and answer its reply", "parameters": function,
                    "requestBody": { "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                    "responses": merge(json!({ "200": { "description": "the handler's reply (its status and content type)" },
                        "204": { "description": "the handler replied nothing" } }), error_responses(&["401", "403", "404", "409", "422"])) } },
            "/v1/functions/{name}/logs": {
                "get": { "summary": "recent guest log lines, or a live ndjson stream with follow=true",
                    "parameters": [name_param("name"),
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                        { "name": "follow", "in": "query", "schema": { "type": "boolean" } }],
                    "responses": merge(json!({ "200": { "description": "log lines", "content": {
                        "application/json": { "schema": schema("Logs") },
                        "application/x-ndjson": { "schema": { "type": "string" } } } } }), error_responses(&["400", "401", "403", "404"])) } },
            "/t/{tenant}/functions/{name}": {
                "post": { "summary": "a deployed function's HTTP trigger (no token: the function's public endpoint)",
                    "security": [], "parameters": [name_param("tenant"), name_param("name")],
                    "requestBody": { "content": { "application/json": { "schema": {} } } },
                    "responses": merge(json!({ "200": { "description": "the handler's reply" } }), error_responses(&["404", "413", "429"])) } }
        }
    })
}
