//! The private servers of `test_support::servers` survive what they exist for: a
//! PostgreSQL restart and a Redis crash.

use test_support::servers::{PgServer, RedisServer};
use tokio_postgres::NoTls;

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

#[tokio::test]
async fn pg_server_restarts_and_keeps_databases() {
    let pg = PgServer::start().await;
    pg.create_database("t1").await;
    let url = pg.url("t1");

    let client = connect(&url).await;
    client
        .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)")
        .await
        .expect("creating a table before the restart");

    pg.restart().await;
    assert!(
        client.is_closed() || client.simple_query("SELECT 1").await.is_err(),
        "the connection from before the restart still works"
    );

    let client = connect(&url).await;
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("SELECT 1 after the restart")
        .get(0);
    assert_eq!(one, 1);
    let kept: i32 = client
        .query_one("SELECT id FROM kept", &[])
        .await
        .expect("reading the table created before the restart")
        .get(0);
    assert_eq!(kept, 7);
}

#[tokio::test]
async fn redis_server_with_aof_keeps_keys_across_a_kill() {
    let mut redis = RedisServer::start(true).await;
    let client = redis::Client::open(redis.url()).expect("redis client");

    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connecting before the kill");
    redis::cmd("SET")
        .arg("survivor")
        .arg("still here")
        .query_async::<()>(&mut conn)
        .await
        .expect("SET before the kill");
    drop(conn);

    redis.kill().await;
    redis.start_again().await;

    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connecting after the restart");
    let value: Option<String> = redis::cmd("GET")
        .arg("survivor")
        .query_async(&mut conn)
        .await
        .expect("GET after the restart");
    assert_eq!(value.as_deref(), Some("still here"));
}
