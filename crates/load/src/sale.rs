//! Preparing and running a sale: users and a goods made fast through the operator
//! path, bookings fired, the backlog watched until every accepted request is decided,
//! then the report and the correctness check.

use std::{
    collections::HashSet,
    io::IsTerminal,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use deadpool_postgres::Pool;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Url;
use shared::{
    auth::{PasswordHashing, Role, TokenKeys},
    config::{process_env, AuthConfig, DatabaseConfig, Environment, FromVars},
};
use tokio::sync::watch;

use shared::decision::Decision;

use crate::{
    cpu, db,
    driver::{Endpoint, Fire, Fired, Live, Mode, Requests},
    report::{Outcomes, Percentiles, SaleReport, Sample},
};

/// How often the monitor samples progress and the backlog.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// What the tool needs from the TicketNest deployment it tests: the database (to make
/// users in bulk and read the decision log) and the JWT secret (to mint their tokens).
pub struct Deployment {
    pub pool: Pool,
    pub tokens: TokenKeys,
    pub passwords: PasswordHashing,
}

impl Deployment {
    /// From the same `TICKETNEST_*` variables the services read.
    ///
    /// # Errors
    /// Invalid configuration.
    pub fn from_env() -> anyhow::Result<Self> {
        let environment = Environment::from_vars(&process_env)?;
        let database = DatabaseConfig::from_env()?;
        let auth = AuthConfig::from_vars(&process_env, environment)?;
        Ok(Self {
            pool: shared::db::build_pool(&database)?,
            tokens: TokenKeys::from_config(&auth),
            passwords: PasswordHashing::new(auth.argon2)?,
        })
    }

    /// `count` users made in one statement (the operator path behind
    /// `ticketnest-admin user bulk-create`), with their tokens.
    ///
    /// # Errors
    /// Database errors.
    pub async fn users(
        &self,
        tag: &str,
        count: u64,
        role: Role,
    ) -> anyhow::Result<Vec<(i64, String)>> {
        let hash = self.passwords.hash(&uuid::Uuid::new_v4().to_string())?;
        let count = i64::try_from(count).context("user count")?;
        let ids = shared::db::bulk_create_users(&self.pool, tag, count, role, &hash).await?;
        ids.into_iter()
            .map(|id| Ok((id, self.tokens.mint(id, role)?)))
            .collect()
    }

    /// A goods made through the API by a fresh organizer.
    ///
    /// # Errors
    /// The API refused it.
    pub async fn goods(
        &self,
        client: &reqwest::Client,
        base: &Url,
        seats: i64,
        max_per_booking: i32,
    ) -> anyhow::Result<i64> {
        let tag = format!("lo{}x", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let (_, token) = self
            .users(&tag, 1, Role::Organizer)
            .await?
            .pop()
            .context("organizer")?;
        let response = client
            .post(base.join("/api/goods")?)
            .bearer_auth(token)
            .json(&serde_json::json!({
                "title": "ticketnest-load sale",
                "content": "",
                "price": 0,
                "imgUrl": "",
                "showDate": "2030-01-01",
                "bookingLimit": seats,
                "maxPerBooking": max_per_booking,
            }))
            .send()
            .await
            .context("creating the goods")?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.as_u16() != 201 {
            bail!("creating the goods answered {status}: {body}");
        }
        body["id"].as_i64().context("goods id in the answer")
    }
}

/// Everything a sale run needs.
pub struct SaleOptions {
    pub url: Url,
    pub users: u64,
    /// Bookings each user sends (round robin over the users: every user once, then
    /// every user again, ...); all but the first of a user are `already_booked` while
    /// its first stands. With more than one, the deployment's per-user rate limit
    /// (`TICKETNEST_USER_RATE_LIMIT`) must allow them, or the extra ones get 429.
    pub bookings_per_user: u32,
    pub seats: i64,
    pub quantity: i32,
    pub mode: Mode,
    pub timeout: Duration,
    pub max_duration: Duration,
    pub drain_timeout: Duration,
    pub progress: bool,
}

/// A client for the few API calls that prepare a run (the goods).
pub fn client(pool_size: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(pool_size.max(1))
        .tcp_nodelay(true)
        .build()?)
}

fn progress_bar(len: u64, enabled: bool) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if !enabled || !std::io::stdout().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} sent  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Samples progress until told to stop; returns the timeline.
async fn monitor(
    pool: Pool,
    goods_id: i64,
    live: Arc<Live>,
    bar: ProgressBar,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let started = Instant::now();
    let mut timeline = Vec::new();
    let mut last = (0_u64, 0_u64, Instant::now());
    loop {
        let accepted = live.accepted.load(Ordering::Relaxed);
        let decided = db::decided_count(&pool, goods_id).await.unwrap_or(last.1);
        let errors = live.errors();
        let dt = last.2.elapsed().as_secs_f64().max(0.001);
        bar.set_position(live.sent.load(Ordering::Relaxed));
        bar.set_message(format!(
            "{:.0} acc/s  accepted {accepted}  decided {decided}  errors {errors}",
            (accepted.saturating_sub(last.0)) as f64 / dt
        ));
        timeline.push(Sample {
            t_s: started.elapsed().as_secs_f64(),
            accepted,
            decided,
            errors,
            backlog: accepted.saturating_sub(decided),
        });
        last = (accepted, decided, Instant::now());
        tokio::select! {
            _ = stop.changed() => break,
            () = tokio::time::sleep(SAMPLE_INTERVAL) => {}
        }
    }
    timeline
}

/// Waits until `expected` requests of the goods are decided, or the deadline.
async fn drain(
    pool: &Pool,
    goods_id: i64,
    expected: u64,
    deadline: Duration,
) -> anyhow::Result<bool> {
    let until = Instant::now() + deadline;
    loop {
        if db::decided_count(pool, goods_id).await? >= expected {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The run that books `quantity` seats of `goods_id` once per user, its requests
/// prepared before the clock starts.
///
/// # Errors
/// A token that is not a valid header value.
pub fn fire_for(
    endpoint: Endpoint,
    goods_id: i64,
    quantity: i32,
    users: &[(i64, String)],
    timeout: Duration,
    max_duration: Duration,
) -> anyhow::Result<Fire> {
    Ok(Fire {
        requests: Requests::bookings(endpoint, goods_id, quantity, users)?,
        timeout,
        max_duration,
        live: Arc::new(Live::default()),
    })
}

/// Runs a whole sale and builds its report.
///
/// # Errors
/// Preparation failed (database, API), or the decision log could not be read.
pub async fn run(deployment: &Deployment, options: &SaleOptions) -> anyhow::Result<SaleReport> {
    // The API calls that prepare the sale; the bookings go through the driver's own
    // connections.
    let client = client(1)?;
    let endpoint = Endpoint::resolve(&options.url).await?;
    let goods_id = deployment
        .goods(&client, &options.url, options.seats, options.quantity)
        .await?;
    let tag = format!("lu{}x", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let users = deployment
        .users(&tag, options.users, Role::Customer)
        .await?;
    // One entry per booking to send, in sending order.
    let bookings: Vec<(i64, String)> = (0..options.bookings_per_user.max(1))
        .flat_map(|_| users.iter().cloned())
        .collect();
    let fire = fire_for(
        endpoint,
        goods_id,
        options.quantity,
        &bookings,
        options.timeout,
        options.max_duration,
    )?;
    let live = fire.live.clone();

    let bar = progress_bar(bookings.len() as u64, options.progress);
    let (stop, stopped) = watch::channel(false);
    let sampler = tokio::spawn(monitor(
        deployment.pool.clone(),
        goods_id,
        live.clone(),
        bar.clone(),
        stopped,
    ));
    let meter = cpu::Meter::start();
    let Fired {
        latency_us,
        accepted_ids,
        send_duration,
        sent,
    } = fire.run(options.mode).await;
    let driver_cpu_cores = meter.cores();
    let send_end = unix_now();
    let drained = drain(
        &deployment.pool,
        goods_id,
        accepted_ids.len() as u64,
        options.drain_timeout,
    )
    .await?;
    let _ = stop.send(true);
    let timeline = sampler.await.unwrap_or_default();
    bar.finish_and_clear();
    if !drained {
        tracing::warn!("not every accepted request was decided within the drain timeout");
    }

    let facts = db::sale_facts(&deployment.pool, goods_id).await?;
    let accepted: HashSet<uuid::Uuid> = accepted_ids.into_iter().collect();
    let breaches = shared::audit::check(&facts, Some(&accepted));
    let rows = &facts.decisions;
    let mut decide = Histogram::<u64>::new(3)?;
    for row in rows {
        decide.record(db::decide_latency_us(row))?;
    }
    let mut outcomes = Outcomes {
        decided: rows.len() as u64,
        ..Outcomes::default()
    };
    for row in rows {
        match row.decision {
            Decision::Confirmed | Decision::Held => {
                outcomes.confirmed += 1;
                outcomes.confirmed_seats += i64::from(row.quantity);
            }
            Decision::Waitlisted => outcomes.waitlisted += 1,
            Decision::Rejected(_) => outcomes.rejected += 1,
            // The sale sends bookings only.
            Decision::Cancelled | Decision::Applied | Decision::Expired => {}
        }
    }
    let first_decided_s = rows.iter().map(|r| r.decided_at_s).fold(f64::MAX, f64::min);
    let last_decided_s = rows.iter().map(|r| r.decided_at_s).fold(0.0, f64::max);
    let send_s = send_duration.as_secs_f64().max(0.001);
    let decide_span = (last_decided_s - first_decided_s).max(0.001);
    // The worker alone: what it decided once nothing was being sent any more (with a
    // backlog left at the end of the send phase, the accept path no longer competes).
    let after_send = rows.iter().filter(|r| r.decided_at_s > send_end).count();
    let after_send_span = last_decided_s - send_end;
    Ok(SaleReport {
        target: options.url.to_string(),
        goods_id,
        mode: options.mode.describe(),
        users: options.users,
        bookings_per_user: options.bookings_per_user.max(1),
        seats: options.seats,
        quantity: options.quantity,
        send_duration_s: send_s,
        offered_per_s: sent as f64 / send_s,
        accept_per_s: accepted.len() as f64 / send_s,
        accept_latency_ms: Percentiles::from_micros(&latency_us),
        statuses: live.counts(),
        driver_cpu_cores,
        decide_latency_ms: Percentiles::from_micros(&decide),
        decide_per_s: if rows.is_empty() {
            0.0
        } else {
            rows.len() as f64 / decide_span
        },
        decided_after_send: after_send as u64,
        decide_after_send_per_s: if after_send == 0 || after_send_span <= 0.0 {
            0.0
        } else {
            after_send as f64 / after_send_span.max(0.001)
        },
        drain_s: if rows.is_empty() {
            0.0
        } else {
            (last_decided_s - send_end).max(0.0)
        },
        peak_backlog: timeline.iter().map(|s| s.backlog).max().unwrap_or(0),
        outcomes,
        correct: breaches.is_empty(),
        breaches,
        timeline,
        latency_us,
    })
}
