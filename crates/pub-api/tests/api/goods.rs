use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, assert_invalid_field, page_parts, parts, spawn_app};

#[tokio::test]
async fn an_organizer_creates_goods_and_anyone_reads_them_with_seat_counts() {
    let app = spawn_app().await;
    let (org_id, org) = app.organizer().await;
    let (status, body) = parts(
        app.post_json(
            "/api/goods",
            &json!({
                "title": "  Swan Lake ",
                "content": "Ballet",
                "price": 120000,
                "imgUrl": "https://img.example/swan.png",
                "showDate": "2026-12-24T19:30:00+09:00",
                "bookingLimit": 300,
                "maxPerBooking": 4
            }),
            Some(&org),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["title"], "Swan Lake");
    assert_eq!(body["organizerId"], org_id);
    assert_eq!(body["showDate"], "2026-12-24T10:30:00Z");
    assert_eq!(body["bookingLimit"], 300);
    assert_eq!(body["maxPerBooking"], 4);
    assert_eq!(body["bookingCount"], 0);
    assert_eq!(body["remaining"], 300);
    let id = body["id"].as_i64().expect("id");

    app.db
        .client()
        .await
        .execute("UPDATE goods SET booked_count = 120 WHERE id = $1", &[&id])
        .await
        .expect("simulate bookings");
    let (status, body) = parts(app.get(&format!("/api/goods/{id}"), None).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["bookingCount"], 120);
    assert_eq!(body["remaining"], 180);
}

#[tokio::test]
async fn the_goods_list_pages_with_a_stable_cursor() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.create_goods_as(&org, 10, 1).await);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<i64> = None;
    let mut pages = 0;
    loop {
        let path = match cursor {
            Some(c) => format!("/api/goods?limit=2&cursor={c}"),
            None => "/api/goods?limit=2".to_owned(),
        };
        let (status, body, link) = page_parts(app.get(&path, None).await).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        let items = body.as_array().expect("a bare array");
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|g| g["id"].as_i64().expect("id")));
        match link {
            Some(link) => {
                let last = items.last().expect("a page before the next")["id"].clone();
                assert_eq!(
                    link,
                    format!("</api/goods?limit=2&cursor={last}>; rel=\"next\"")
                );
                cursor = last.as_i64();
            }
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn invalid_goods_are_400_naming_the_field_and_not_stored() {
    let app = spawn_app().await;
    let (_, org) = app.organizer().await;
    let valid = json!({
        "title": "Show", "content": "", "price": 1, "imgUrl": "",
        "showDate": "2026-12-24", "bookingLimit": 10
    });
    let with = |key: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        body[key] = value;
        body
    };
    let long = "x".repeat(101);
    let cases = [
        (with("price", json!(-1)), "price"),
        (with("bookingLimit", json!(0)), "bookingLimit"),
        (with("bookingLimit", json!(-3)), "bookingLimit"),
        (with("showDate", json!("next friday")), "showDate"),
        (with("title", json!("")), "title"),
        (with("title", json!(long)), "title"),
        (with("maxPerBooking", json!(11)), "maxPerBooking"),
        (with("imgUrl", json!("javascript:alert(1)")), "imgUrl"),
    ];
    for (body, field) in cases {
        let (status, response) = parts(app.post_json("/api/goods", &body, Some(&org)).await).await;
        assert_invalid_field(status, &response, field);
    }
    let (status, response) = parts(
        app.post_json("/api/goods", &with("price", json!("free")), Some(&org))
            .await,
    )
    .await;
    assert_error(status, &response, StatusCode::BAD_REQUEST, "invalid_json");
    assert!(
        response["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("price")),
        "{response}"
    );
    let goods = app.db.count("goods").await;
    assert_eq!(goods, 0);
}

#[tokio::test]
async fn unknown_goods_is_404_and_bad_list_queries_are_400() {
    let app = spawn_app().await;
    let (status, body) = parts(app.get("/api/goods/999", None).await).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "goods_not_found");
    for query in ["limit=0", "limit=101", "limit=abc", "cursor=-1", "bogus=1"] {
        let (status, body) = parts(app.get(&format!("/api/goods?{query}"), None).await).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    }
}
