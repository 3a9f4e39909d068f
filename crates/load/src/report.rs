//! What a run reports: the figures, the correctness verdict, and the timeline, as
//! human text or JSON (`--json`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use shared::audit::Breach;

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram recorded in microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1_000.0;
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Responses by kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusCounts {
    pub accepted_202: u64,
    pub client_4xx: u64,
    pub unavailable_503: u64,
    pub server_5xx: u64,
    pub timeouts: u64,
    pub transport_errors: u64,
}

impl StatusCounts {
    pub fn errors(&self) -> u64 {
        self.client_4xx
            + self.unavailable_503
            + self.server_5xx
            + self.timeouts
            + self.transport_errors
    }
}

/// One sample of the run, every `SAMPLE_INTERVAL`.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub accepted: u64,
    pub decided: u64,
    pub errors: u64,
    pub backlog: u64,
}

/// Decisions as the decision log records them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcomes {
    pub decided: u64,
    pub confirmed: u64,
    pub confirmed_seats: i64,
    pub waitlisted: u64,
    pub rejected: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SaleReport {
    pub target: String,
    pub goods_id: i64,
    pub mode: String,
    pub users: u64,
    pub bookings_per_user: u32,
    pub seats: i64,
    pub quantity: i32,
    pub send_duration_s: f64,
    pub offered_per_s: f64,
    pub accept_per_s: f64,
    pub accept_latency_ms: Percentiles,
    pub statuses: StatusCounts,
    /// Cores the load tool itself kept busy during the send phase (1.0: one core);
    /// `None` where `/proc` is missing.
    pub driver_cpu_cores: Option<f64>,
    pub decide_latency_ms: Percentiles,
    /// Decisions over the span from the first to the last (accept path competing
    /// while the send phase lasts).
    pub decide_per_s: f64,
    /// Decisions made after the send phase ended.
    pub decided_after_send: u64,
    /// `decided_after_send` over the span from the end of the send phase to the last
    /// decision: the worker deciding alone, once a backlog is left at the end of the
    /// send phase (0 when none was).
    pub decide_after_send_per_s: f64,
    pub drain_s: f64,
    pub peak_backlog: u64,
    pub outcomes: Outcomes,
    pub correct: bool,
    pub breaches: Vec<Breach>,
    pub timeline: Vec<Sample>,
    /// The accept latencies themselves (µs), for the plot; not in the JSON.
    #[serde(skip)]
    pub latency_us: Histogram<u64>,
}

impl SaleReport {
    pub fn human(&self) -> String {
        let mut out = String::new();
        let l = |p: &Percentiles| {
            format!(
                "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
                p.p50, p.p90, p.p99, p.p999, p.max
            )
        };
        let s = &self.statuses;
        let o = &self.outcomes;
        let _ = writeln!(
            out,
            "TicketNest sale: {} users, {} booking(s) each, {} seats, goods {} at {}",
            self.users, self.bookings_per_user, self.seats, self.goods_id, self.target
        );
        let _ = writeln!(out, "mode            {}", self.mode);
        let _ = writeln!(
            out,
            "offered         {:.0} req/s over {:.2} s",
            self.offered_per_s, self.send_duration_s
        );
        let _ = writeln!(out, "accepted        {:.0} req/s", self.accept_per_s);
        let _ = writeln!(out, "accept latency  {}", l(&self.accept_latency_ms));
        let _ = writeln!(
            out,
            "responses       202: {}  4xx: {}  503: {}  5xx: {}  timeouts: {}  transport errors: {}",
            s.accepted_202, s.client_4xx, s.unavailable_503, s.server_5xx, s.timeouts, s.transport_errors
        );
        if let Some(cores) = self.driver_cpu_cores {
            let _ = writeln!(
                out,
                "driver cpu      {:.0}% of a core while sending (this tool's own use)",
                cores * 100.0
            );
        }
        let _ = writeln!(out, "accept→decide   {}", l(&self.decide_latency_ms));
        let _ = writeln!(out, "decided         {:.0} decisions/s; drained {:.2} s after the last send; peak backlog {}", self.decide_per_s, self.drain_s, self.peak_backlog);
        let _ = writeln!(
            out,
            "after the send  {} decided at {:.0} decisions/s (the worker alone)",
            self.decided_after_send, self.decide_after_send_per_s
        );
        let _ = writeln!(
            out,
            "outcomes        {} decided: {} confirmed ({} seats), {} waitlisted, {} rejected",
            o.decided, o.confirmed, o.confirmed_seats, o.waitlisted, o.rejected
        );
        if self.correct {
            let _ = writeln!(out, "correctness     OK: no oversell, no user twice, FIFO exact, every accepted request decided");
        } else {
            let _ = writeln!(out, "correctness     BREACHED:");
            for breach in &self.breaches {
                let _ = writeln!(out, "  - {breach}");
            }
        }
        out
    }
}

/// One step of a ramp.
#[derive(Debug, Clone, Serialize)]
pub struct RampStep {
    pub offered_per_s: f64,
    pub accept_per_s: f64,
    pub accept_latency_ms: Percentiles,
    /// `accepted_202` counts the target's success: a `202` with a `requestId` for
    /// bookings, a `200` for `/healthz`.
    pub statuses: StatusCounts,
    pub held: bool,
    /// Cores the load tool itself kept busy during the step's send phase (1.0: one
    /// core); `None` where `/proc` is missing.
    pub driver_cpu_cores: Option<f64>,
}

/// The driver's own ceiling: the same open-loop climb against `GET /healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct DriverCeiling {
    pub target: String,
    pub steps: Vec<RampStep>,
    /// The highest rate held against `/healthz`; `None`: not even the first step.
    pub ceiling_per_s: Option<f64>,
    pub ceiling_p99_ms: Option<f64>,
    /// Every step held up to `--max-rate`: the ceiling is at least `ceiling_per_s`.
    pub at_least: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RampReport {
    pub target: String,
    /// `bookings` (the knee) or `healthz` (the driver's ceiling alone).
    pub workload: String,
    pub slo_p99_ms: f64,
    pub step_s: f64,
    pub steps: Vec<RampStep>,
    /// The highest offered rate that held the SLO with no errors. It is the server's
    /// knee only when `knee_limited_by_driver` is `false`.
    pub knee_per_s: Option<f64>,
    pub knee_accept_p99_ms: Option<f64>,
    /// Every step held up to `--max-rate`: the knee is at least `knee_per_s`.
    pub max_rate_reached: bool,
    /// The driver's ceiling is under twice the knee (or unknown below the knee's
    /// rate): what broke the SLO may be the driver. `None`: no ceiling measured, or
    /// no knee.
    pub knee_limited_by_driver: Option<bool>,
    pub driver_ceiling_per_s: Option<f64>,
    pub driver_ceiling_at_least: Option<bool>,
    pub driver_ceiling_ratio_to_knee: Option<f64>,
    pub driver_ceiling: Option<DriverCeiling>,
}

fn steps_table(out: &mut String, steps: &[RampStep]) {
    let _ = writeln!(
        out,
        "{:>10} {:>10} {:>9} {:>9} {:>7} {:>11}  held",
        "offered/s", "accept/s", "p50 ms", "p99 ms", "errors", "driver cpu"
    );
    for step in steps {
        let _ = writeln!(
            out,
            "{:>10.0} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>11}  {}",
            step.offered_per_s,
            step.accept_per_s,
            step.accept_latency_ms.p50,
            step.accept_latency_ms.p99,
            step.statuses.errors(),
            step.driver_cpu_cores
                .map_or_else(|| "n/a".to_owned(), |c| format!("{:.0}%", c * 100.0)),
            if step.held { "yes" } else { "no" }
        );
    }
}

/// `X req/s`, or `at least X req/s` when the climb ran out of `--max-rate`.
fn rate(per_s: f64, at_least: bool) -> String {
    if at_least {
        format!("at least {per_s:.0} req/s (--max-rate reached)")
    } else {
        format!("{per_s:.0} req/s")
    }
}

impl RampReport {
    pub fn human(&self) -> String {
        let mut out = String::new();
        if self.workload == "healthz" {
            let _ = writeln!(
                out,
                "TicketNest load driver's ceiling: open loop against GET /healthz at {} (SLO: p99 <= {} ms, no errors)",
                self.target, self.slo_p99_ms
            );
            steps_table(&mut out, &self.steps);
            match (self.knee_per_s, self.knee_accept_p99_ms) {
                (Some(per_s), Some(p99)) => {
                    let _ = writeln!(
                        out,
                        "driver ceiling: {} held (p99 {p99:.2} ms)",
                        rate(per_s, self.max_rate_reached)
                    );
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "driver ceiling: below the first step (it already broke the SLO)"
                    );
                }
            }
            return out;
        }
        let _ = writeln!(
            out,
            "TicketNest ramp at {} (SLO: p99 accept latency <= {} ms, no errors)",
            self.target, self.slo_p99_ms
        );
        steps_table(&mut out, &self.steps);
        if let Some(ceiling) = &self.driver_ceiling {
            let _ = writeln!(
                out,
                "driver's ceiling: the same ramp against GET {}",
                ceiling.target
            );
            steps_table(&mut out, &ceiling.steps);
            match (ceiling.ceiling_per_s, self.driver_ceiling_ratio_to_knee) {
                (Some(per_s), Some(ratio)) => {
                    let _ = writeln!(
                        out,
                        "driver ceiling: {}, {ratio:.2}x the knee",
                        rate(per_s, ceiling.at_least)
                    );
                }
                (Some(per_s), None) => {
                    let _ = writeln!(out, "driver ceiling: {}", rate(per_s, ceiling.at_least));
                }
                (None, _) => {
                    let _ = writeln!(
                        out,
                        "driver ceiling: below its first step (it broke the SLO against /healthz)"
                    );
                }
            }
        }
        match (self.knee_per_s, self.knee_accept_p99_ms) {
            (Some(per_s), Some(p99)) => match self.knee_limited_by_driver {
                Some(true) => {
                    let _ = writeln!(
                        out,
                        "knee: not established. {per_s:.0} req/s held (p99 {p99:.2} ms), but the driver's \
                         ceiling is not at least twice that: the driver limited it (the server's knee is at \
                         least {per_s:.0} req/s)"
                    );
                }
                Some(false) => {
                    let _ = writeln!(
                        out,
                        "knee: {} held (p99 {p99:.2} ms); the driver's ceiling is at least twice that",
                        rate(per_s, self.max_rate_reached)
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "knee: {} held (p99 {p99:.2} ms); the driver's ceiling was not measured",
                        rate(per_s, self.max_rate_reached)
                    );
                }
            },
            _ => {
                let _ = writeln!(
                    out,
                    "knee: not found (the first step already broke the SLO)"
                );
            }
        }
        out
    }
}
