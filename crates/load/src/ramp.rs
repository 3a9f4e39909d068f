//! Finding the knee: raise the offered rate step by step (open loop) until p99 accept
//! latency passes the SLO or errors appear; the knee is the highest rate that held.
//! Each step books a fresh goods with fresh users and waits for the workers to drain
//! before the next, so every step starts from the same state.

use std::time::Duration;

use reqwest::Url;
use shared::auth::Role;

use crate::{
    driver::Mode,
    report::{Percentiles, RampReport, RampStep},
    sale::{client, fire_for, Deployment},
};

pub struct RampOptions {
    pub url: Url,
    pub start_rate: f64,
    pub factor: f64,
    pub max_rate: f64,
    pub step: Duration,
    pub slo_p99_ms: f64,
    pub seats: i64,
    pub connections: usize,
    pub timeout: Duration,
    pub drain_timeout: Duration,
}

/// Runs the ramp.
///
/// # Errors
/// Preparation failed (database, API).
pub async fn run(deployment: &Deployment, options: &RampOptions) -> anyhow::Result<RampReport> {
    let client = client(options.connections)?;
    let mut steps = Vec::new();
    let mut knee: Option<(f64, f64)> = None;
    let mut rate = options.start_rate;
    while rate <= options.max_rate {
        let users_needed = (rate * options.step.as_secs_f64()).ceil() as u64;
        let goods = deployment
            .goods(&client, &options.url, options.seats, 1)
            .await?;
        let tag = format!("lr{}x", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let users = deployment.users(&tag, users_needed, Role::Customer).await?;
        let fire = fire_for(
            &client,
            &options.url,
            goods,
            1,
            &users,
            options.timeout,
            options.step + Duration::from_secs(1),
        )?;
        let live = fire.live.clone();
        let fired = fire
            .run(Mode::Open {
                rate,
                connections: options.connections,
            })
            .await;
        let send_s = fired.send_duration.as_secs_f64().max(0.001);
        let statuses = live.counts();
        let latency = Percentiles::from_micros(&fired.latency_us);
        let accept_per_s = fired.accepted_ids.len() as f64 / send_s;
        let held = latency.p99 <= options.slo_p99_ms
            && statuses.errors() == 0
            && accept_per_s >= 0.9 * (fired.sent as f64 / send_s);
        eprintln!(
            "ramp: offered {rate:.0}/s, accepted {accept_per_s:.0}/s, p99 {:.2} ms, errors {} -> {}",
            latency.p99,
            statuses.errors(),
            if held { "held" } else { "broke" }
        );
        // Let the workers catch up so the next step starts from an empty backlog.
        let until = tokio::time::Instant::now() + options.drain_timeout;
        while crate::db::decided_count(&deployment.pool, goods).await?
            < fired.accepted_ids.len() as u64
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        steps.push(RampStep {
            offered_per_s: rate,
            accept_per_s,
            accept_latency_ms: latency.clone(),
            statuses,
            held,
        });
        if !held {
            break;
        }
        knee = Some((rate, latency.p99));
        rate *= options.factor;
    }
    Ok(RampReport {
        target: options.url.to_string(),
        slo_p99_ms: options.slo_p99_ms,
        step_s: options.step.as_secs_f64(),
        steps,
        knee_per_s: knee.map(|k| k.0),
        knee_accept_p99_ms: knee.map(|k| k.1),
    })
}
