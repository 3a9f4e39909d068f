//! Finding the knee: raise the offered rate step by step (open loop) until p99 accept
//! latency passes the SLO or errors appear; the knee is the highest rate that held.
//! Each booking step books a fresh goods with fresh users and waits for the workers
//! to drain before the next, so every step starts from the same state.
//!
//! The driver's ceiling is the same climb (this module's one loop, `climb`) against
//! `GET /healthz`, a route that does no work: the highest rate the driver holds there,
//! on the same machine, bounds any knee it can measure. A knee counts as the server's
//! only when that ceiling is at least twice the knee; below that the driver (its CPU,
//! or the server's cores it competes for) may be what broke the SLO, and the report
//! says the knee was limited by the driver.

use std::time::Duration;

use anyhow::Context as _;
use reqwest::Url;
use shared::auth::Role;

use crate::{
    cpu,
    driver::{Endpoint, Fire, Live, Mode, Requests},
    report::{DriverCeiling, Percentiles, RampReport, RampStep},
    sale::{client, Deployment},
};

/// A knee counts as the server's when the driver's ceiling is at least this many
/// times the knee.
pub const CEILING_FACTOR: f64 = 2.0;

/// What a ramp drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The booking route (the knee), then, unless told not to, `/healthz` (the
    /// driver's ceiling).
    Bookings,
    /// `GET /healthz` only: the driver's ceiling alone.
    Healthz,
}

pub struct RampOptions {
    pub url: Url,
    pub target: Target,
    /// With `Target::Bookings`: measure the driver's ceiling after the knee.
    pub ceiling: bool,
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

/// What a climb drives, and what it needs around each step.
enum Workload<'a> {
    /// Fresh goods and users each step; the workers drained after it.
    Bookings {
        deployment: &'a Deployment,
        client: reqwest::Client,
    },
    /// Nothing to prepare and nothing to wait for.
    Healthz,
}

impl Workload<'_> {
    /// The requests of one step at `rate`, and the goods they book.
    async fn prepare(
        &self,
        endpoint: &Endpoint,
        options: &RampOptions,
        rate: f64,
    ) -> anyhow::Result<(Requests, Option<i64>)> {
        let count = (rate * options.step.as_secs_f64()).ceil() as u64;
        match self {
            Self::Bookings { deployment, client } => {
                let goods = deployment
                    .goods(client, &options.url, options.seats, 1)
                    .await?;
                let tag = format!("lr{}x", &uuid::Uuid::new_v4().simple().to_string()[..10]);
                let users = deployment.users(&tag, count, Role::Customer).await?;
                let requests = Requests::bookings(endpoint.clone(), goods, 1, &users)?;
                Ok((requests, Some(goods)))
            }
            Self::Healthz => Ok((
                Requests::healthz(endpoint.clone(), usize::try_from(count)?),
                None,
            )),
        }
    }

    /// After a step: let the workers catch up so the next step starts from an empty
    /// backlog.
    async fn settle(
        &self,
        goods: Option<i64>,
        accepted: u64,
        options: &RampOptions,
    ) -> anyhow::Result<()> {
        let (Self::Bookings { deployment, .. }, Some(goods)) = (self, goods) else {
            return Ok(());
        };
        let until = tokio::time::Instant::now() + options.drain_timeout;
        while crate::db::decided_count(&deployment.pool, goods).await? < accepted
            && tokio::time::Instant::now() < until
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

/// What one climb found.
struct Climb {
    steps: Vec<RampStep>,
    /// The highest rate held, and its p99.
    held: Option<(f64, f64)>,
    /// Every step held up to `--max-rate`: the highest rate held is a lower bound.
    reached_max_rate: bool,
}

/// The one ramp loop: from `from_rate`, ×`factor` per step while steps hold, up to
/// `max_rate`.
async fn climb(
    workload: &Workload<'_>,
    endpoint: &Endpoint,
    options: &RampOptions,
    from_rate: f64,
    label: &str,
) -> anyhow::Result<Climb> {
    let mut steps = Vec::new();
    let mut held_at: Option<(f64, f64)> = None;
    let mut rate = from_rate;
    while rate <= options.max_rate {
        let (requests, goods) = workload.prepare(endpoint, options, rate).await?;
        let fire = Fire {
            requests,
            timeout: options.timeout,
            max_duration: options.step + Duration::from_secs(1),
            live: std::sync::Arc::new(Live::default()),
        };
        let live = fire.live.clone();
        let meter = cpu::Meter::start();
        let fired = fire
            .run(Mode::Open {
                rate,
                connections: options.connections,
            })
            .await;
        let driver_cpu_cores = meter.cores();
        let send_s = fired.send_duration.as_secs_f64().max(0.001);
        let statuses = live.counts();
        let latency = Percentiles::from_micros(&fired.latency_us);
        let accept_per_s = statuses.accepted_202 as f64 / send_s;
        let held = latency.p99 <= options.slo_p99_ms
            && statuses.errors() == 0
            && accept_per_s >= 0.9 * (fired.sent as f64 / send_s);
        eprintln!(
            "{label}: offered {rate:.0}/s, accepted {accept_per_s:.0}/s, p99 {:.2} ms, errors {}, driver {} -> {}",
            latency.p99,
            statuses.errors(),
            driver_cpu_cores.map_or_else(|| "cpu n/a".to_owned(), |c| format!("{:.0}% cpu", c * 100.0)),
            if held { "held" } else { "broke" }
        );
        workload
            .settle(goods, fired.accepted_ids.len() as u64, options)
            .await?;
        steps.push(RampStep {
            offered_per_s: rate,
            accept_per_s,
            accept_latency_ms: latency.clone(),
            statuses,
            held,
            driver_cpu_cores,
        });
        if !held {
            return Ok(Climb {
                steps,
                held: held_at,
                reached_max_rate: false,
            });
        }
        held_at = Some((rate, latency.p99));
        rate *= options.factor;
    }
    Ok(Climb {
        steps,
        held: held_at,
        reached_max_rate: held_at.is_some(),
    })
}

/// Whether the knee is the driver's rather than the server's: the ceiling is not
/// shown to be at least `CEILING_FACTOR` times the knee (no knee: nothing to judge).
pub fn limited_by_driver(knee: Option<f64>, ceiling: Option<f64>) -> Option<bool> {
    let knee = knee?;
    Some(ceiling.is_none_or(|ceiling| ceiling < CEILING_FACTOR * knee))
}

/// Runs the ramp. `deployment` is needed for the booking target only.
///
/// # Errors
/// Preparation failed (database, API), or bookings without a deployment.
pub async fn run(
    deployment: Option<&Deployment>,
    options: &RampOptions,
) -> anyhow::Result<RampReport> {
    let endpoint = Endpoint::resolve(&options.url).await?;
    let (main, workload_name) = match options.target {
        Target::Bookings => {
            let workload = Workload::Bookings {
                deployment: deployment.context("the booking ramp needs the deployment")?,
                client: client(1)?,
            };
            let climb = climb(&workload, &endpoint, options, options.start_rate, "ramp").await?;
            (climb, "bookings")
        }
        Target::Healthz => {
            let climb = climb(
                &Workload::Healthz,
                &endpoint,
                options,
                options.start_rate,
                "ceiling",
            )
            .await?;
            (climb, "healthz")
        }
    };
    let knee = main.held.map(|k| k.0);
    let ceiling = if options.target == Target::Bookings && options.ceiling {
        // Rates up to the knee are known to be within the driver's reach (it just
        // held them against a costlier route), so the ceiling climb starts there.
        let from = knee.unwrap_or(options.start_rate);
        let climb = climb(&Workload::Healthz, &endpoint, options, from, "ceiling").await?;
        Some(DriverCeiling {
            target: options.url.join("/healthz")?.to_string(),
            ceiling_per_s: climb.held.map(|c| c.0),
            ceiling_p99_ms: climb.held.map(|c| c.1),
            at_least: climb.reached_max_rate,
            steps: climb.steps,
        })
    } else {
        None
    };
    let ceiling_per_s = ceiling.as_ref().and_then(|c| c.ceiling_per_s);
    Ok(RampReport {
        target: options.url.to_string(),
        workload: workload_name.to_owned(),
        slo_p99_ms: options.slo_p99_ms,
        step_s: options.step.as_secs_f64(),
        steps: main.steps,
        knee_per_s: knee,
        knee_accept_p99_ms: main.held.map(|k| k.1),
        max_rate_reached: main.reached_max_rate,
        knee_limited_by_driver: ceiling
            .as_ref()
            .and_then(|_| limited_by_driver(knee, ceiling_per_s)),
        driver_ceiling_per_s: ceiling_per_s,
        driver_ceiling_at_least: ceiling.as_ref().map(|c| c.at_least),
        driver_ceiling_ratio_to_knee: match (ceiling_per_s, knee) {
            (Some(c), Some(k)) if k > 0.0 => Some(c / k),
            _ => None,
        },
        driver_ceiling: ceiling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_knee_counts_only_under_half_the_drivers_ceiling() {
        assert_eq!(
            limited_by_driver(Some(10_000.0), Some(20_000.0)),
            Some(false)
        );
        assert_eq!(
            limited_by_driver(Some(10_000.0), Some(50_000.0)),
            Some(false)
        );
        assert_eq!(
            limited_by_driver(Some(10_000.0), Some(19_999.0)),
            Some(true)
        );
        // The ceiling climb broke at its first step (the knee's rate).
        assert_eq!(limited_by_driver(Some(10_000.0), None), Some(true));
        assert_eq!(limited_by_driver(None, Some(50_000.0)), None);
    }
}
