//! The OpenAPI 3.1 description of the API, generated from the code with `utoipa`: every
//! handler carries `#[utoipa::path]` (its route, parameters, body and answers), every
//! body type derives `ToSchema`, and [`ApiDoc`] gathers them. Served at
//! `/api-docs/openapi.json`, with Swagger UI at `/api/` (`routes::docs`).
//!
//! Error answers are not written out by hand per handler: each handler names the codes
//! it can answer ([`errors!`], next to it), and [`error_responses`] groups them by
//! their status (`ErrorCode::status`, the same table `ApiError` answers with), each
//! response's schema narrowing `code` to the codes it names, with an example per code.
//! [`Finish`] then adds what every answer has (`x-request-id`) and the enumerations
//! that come from `shared` (`seen`, the request statuses).

use std::collections::BTreeMap;

use utoipa::{
    openapi::{
        example::ExampleBuilder,
        header::HeaderBuilder,
        path::Operation,
        schema::{AllOfBuilder, ObjectBuilder, SchemaType, Type},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, OpenApi as Spec, Ref, RefOr, Response, ResponseBuilder, Schema,
    },
    Modify, OpenApi,
};

use crate::{
    error::{ErrorBody, ErrorCode, ErrorDetail},
    routes::{auth, bookings, goods, health, me},
};

/// Where the description is served.
pub const SPEC_PATH: &str = "/api-docs/openapi.json";

/// Name of the bearer (JWT in `Authorization: Bearer`) security scheme.
pub const BEARER: &str = "bearer";
/// Name of the cookie (`Authorization` cookie set at login) security scheme.
pub const COOKIE: &str = "cookie";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "TicketNest API",
        description = "Ticket booking for the moment a show goes on sale: bookings are \
            accepted at once (`202`) and decided in order by workers; poll the request's \
            status URL for the decision. Every answer carries `x-request-id`. Errors have \
            one shape, `{\"error\": {\"code\", \"message\", \"field\"?}}`, with a stable \
            `code` (see `ErrorCode`)."
    ),
    paths(
        auth::signup,
        auth::login,
        goods::list,
        goods::create,
        goods::detail,
        goods::update,
        goods::delete,
        bookings::create,
        bookings::cancel,
        bookings::confirm,
        bookings::create_original,
        bookings::cancel_original,
        bookings::status,
        me::bookings,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(ErrorBody<'_>, ErrorDetail<'_>, ErrorCode)),
    modifiers(&Finish),
    tags(
        (name = "auth", description = "Sign-up and login"),
        (name = "goods", description = "Shows on sale; organizers create and change their own"),
        (name = "bookings", description = "Booking, cancelling and confirming seats; request statuses"),
        (name = "me", description = "The caller's own bookings"),
        (name = "health", description = "Probes and metrics for operators"),
    )
)]
pub struct ApiDoc;

/// The description, as served.
pub fn spec() -> Spec {
    ApiDoc::openapi()
}

/// Declares `$name`, the error answers of a handler: one response per status among
/// the codes listed, as [`error_responses`] builds them.
macro_rules! errors {
    ($name:ident: $($code:ident),+ $(,)?) => {
        /// The error answers of one operation, for its `#[utoipa::path]`.
        pub struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::openapi::error_responses(&[$($crate::error::ErrorCode::$code),+])
            }
        }
    };
}
pub(crate) use errors;

/// One response per status among `codes`: the error body, its `code` one of the codes
/// of that status, an example of each, and `Retry-After` where the API sends it.
pub fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        by_status
            .entry(code.status().as_u16())
            .or_default()
            .push(*code);
    }
    by_status
        .into_iter()
        .map(|(status, codes)| (status.to_string(), error_response(&codes).into()))
        .collect()
}

fn error_response(codes: &[ErrorCode]) -> Response {
    let description = codes
        .iter()
        .map(|c| format!("`{}`: {}", c.as_str(), c.when()))
        .collect::<Vec<_>>()
        .join("; ");
    // The shared body, with `code` narrowed to this response's codes.
    let narrowed = ObjectBuilder::new().property(
        "error",
        ObjectBuilder::new().property(
            "code",
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .enum_values(Some(codes.iter().map(|c| c.as_str()))),
        ),
    );
    let schema = AllOfBuilder::new()
        .item(Ref::from_schema_name("ErrorBody"))
        .item(narrowed);
    let examples = codes.iter().map(|c| {
        let mut error = serde_json::json!({ "code": c.as_str(), "message": c.when() });
        if *c == ErrorCode::ValidationFailed {
            error["field"] = "quantity".into();
        }
        (
            c.as_str(),
            ExampleBuilder::new()
                .summary(c.as_str())
                .value(Some(serde_json::json!({ "error": error })))
                .build(),
        )
    });
    let content = ContentBuilder::new()
        .schema(Some(Schema::from(schema.build())))
        .examples_from_iter(examples)
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    let status = codes.first().map(|c| c.status());
    if status.is_some_and(|s| s.as_u16() == 429 || s.as_u16() == 503) {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(integer(1))
                .description(Some("Seconds to wait before trying again"))
                .build(),
        );
    }
    if codes.contains(&ErrorCode::MethodNotAllowed) {
        response = response.header(
            "Allow",
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(SchemaType::new(Type::String)))
                .description(Some("The methods the route takes"))
                .build(),
        );
    }
    response.build()
}

fn integer(minimum: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Integer))
        .minimum(Some(minimum))
}

/// What every operation shares, added after the paths are gathered: the security
/// schemes, `x-request-id` on every answer, and the words of `seen` (from
/// `shared::decision::RequestStatus`, which knows nothing of OpenAPI).
struct Finish;

impl Modify for Finish {
    fn modify(&self, spec: &mut Spec) {
        if let Some(components) = spec.components.as_mut() {
            components.add_security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("JWT")
                        .description(Some(
                            "The `accessToken` from `POST /api/auth/login`, as \
                             `Authorization: Bearer <accessToken>`",
                        ))
                        .build(),
                ),
            );
            components.add_security_scheme(
                COOKIE,
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                    crate::extract::AUTH_COOKIE,
                    "The cookie login sets. A POST, PATCH or DELETE it authenticates is \
                     refused (403 `cross_origin_refused`) when its `Origin` or `Referer` \
                     names another site",
                ))),
            );
        }
        let request_id = HeaderBuilder::new()
            .schema(ObjectBuilder::new().schema_type(SchemaType::new(Type::String)))
            .description(Some(
                "The caller's `x-request-id` when it sent a sane one, else a new UUID; on \
                 every log line of the request",
            ))
            .build();
        let statuses: Vec<&str> = shared::decision::RequestStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        for item in spec.paths.paths.values_mut() {
            for operation in operations(item) {
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .insert("x-request-id".into(), request_id.clone());
                    }
                }
                for parameter in operation.parameters.iter_mut().flatten() {
                    if parameter.name == "seen" {
                        parameter.schema = Some(
                            ObjectBuilder::new()
                                .schema_type(SchemaType::new(Type::String))
                                .enum_values(Some(statuses.iter().copied()))
                                .into(),
                        );
                    }
                }
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_openapi_3_1_and_names_every_error_code_it_uses() {
        let spec = serde_json::to_value(spec()).expect("serialisable");
        assert!(spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")));
        let codes = &spec["components"]["schemas"]["ErrorCode"]["enum"];
        for code in ErrorCode::ALL {
            assert!(
                codes
                    .as_array()
                    .is_some_and(|all| all.contains(&code.as_str().into())),
                "{}",
                code.as_str()
            );
        }
    }

    #[test]
    fn error_responses_are_grouped_by_status() {
        let responses = error_responses(&[
            ErrorCode::InvalidPath,
            ErrorCode::ValidationFailed,
            ErrorCode::QueueFull,
        ]);
        let statuses: Vec<&str> = responses.keys().map(String::as_str).collect();
        assert_eq!(statuses, ["400", "503"]);
    }
}
