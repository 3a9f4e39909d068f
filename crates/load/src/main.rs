//! ticketnest-load binary: parse the command, guard the target, run, report.
//! Exit codes: 0 run completed and correct; 1 correctness breach; 2 refused
//! (target not loopback, bad arguments); 3 the run could not be carried out.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{ArgGroup, Parser, Subcommand, ValueEnum};
use load::{
    driver::Mode,
    guard, plot, ramp,
    sale::{self, Deployment},
};

/// mimalloc instead of glibc malloc: malloc and free were a tenth of the sender's
/// profile (what is left per request: header maps, hyper's per-request channel).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "ticketnest-load",
    version,
    about = "Sale simulator and knee finder for TicketNest",
    long_about = "Needs the deployment's TICKETNEST_DATABASE_URL and TICKETNEST_JWT_SECRET: users are \
                  created in bulk in the database and their tokens minted, and the decision log is read \
                  back to check the sale (`ramp --target healthz` needs neither). Targets must be \
                  loopback unless --allow-remote."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One sale: N users, S seats, one booking per user (or more); report and correctness check.
    #[command(group(ArgGroup::new("mode").args(["concurrency", "rate"])))]
    Sale {
        /// Base URL of pub-api (or of the load balancer in front of it).
        #[arg(long)]
        url: String,
        /// Users, one booking each (see --bookings-per-user).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        users: u64,
        /// Bookings each user sends, round robin over the users; all but a user's first
        /// are decided `already_booked`. More than one needs the deployment's per-user
        /// rate limit off or high enough (TICKETNEST_USER_RATE_LIMIT), or they get 429.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        bookings_per_user: u32,
        /// Seats of the goods on sale.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        seats: i64,
        /// Closed loop: requests in flight at once (default 64).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Open loop: requests per second, latency counted from the intended send time.
        #[arg(long)]
        rate: Option<f64>,
        /// Open loop: connections the rate is spread over.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seats per booking.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
        quantity: i32,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Draw rates, backlog and latency to this .png or .svg.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Longest send phase, seconds.
        #[arg(long, default_value_t = 600)]
        duration: u64,
        /// Per-request timeout, milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Longest wait for the workers to decide everything, seconds.
        #[arg(long, default_value_t = 600)]
        drain_timeout: u64,
        /// Allow a target outside loopback.
        #[arg(long)]
        allow_remote: bool,
        /// No progress bar (it is off anyway when stdout is not a terminal).
        #[arg(long)]
        no_progress: bool,
    },
    /// Raise an open-loop rate step by step until p99 accept latency passes the SLO or
    /// errors appear; report the highest rate held (the knee), and the driver's ceiling.
    #[command(
        long_about = "Raise an open-loop rate (wrk2-style: request i due at start + i/rate, \
        latency from that intended time) step by step until p99 accept latency passes the SLO or \
        errors appear; the highest rate held is the knee.\n\n\
        Then the same ramp runs against GET /healthz, a route that does no work, from the knee's \
        rate up: the highest rate held there is the driver's ceiling on this machine. The knee is \
        reported as the server's only when the ceiling is at least twice the knee; otherwise the \
        report says the driver limited it (knee_limited_by_driver). A ramp that reaches --max-rate \
        without breaking reports \"at least\" that rate."
    )]
    Ramp {
        /// Base URL of pub-api.
        #[arg(long)]
        url: String,
        /// What to ramp: `bookings` (the knee, then the driver's ceiling) or `healthz`
        /// (the driver's ceiling alone; needs no database).
        #[arg(long, value_enum, default_value_t = RampTarget::Bookings)]
        target: RampTarget,
        /// With `--target bookings`: skip the driver's ceiling (the knee is then
        /// reported without knowing whether the driver limited it).
        #[arg(long)]
        no_ceiling: bool,
        /// Rate of the first step, requests per second.
        #[arg(long, default_value_t = 1_000.0)]
        start_rate: f64,
        /// Each step offers this many times the previous rate.
        #[arg(long, default_value_t = 1.5)]
        factor: f64,
        /// Highest rate offered; a climb that holds up to it reports "at least".
        #[arg(long, default_value_t = 200_000.0)]
        max_rate: f64,
        /// Seconds per step.
        #[arg(long, default_value_t = 5)]
        step_secs: u64,
        /// A step holds when its p99 latency (from intended send time) is within this,
        /// with no errors and at least 90% of what was sent accepted.
        #[arg(long, default_value_t = 50.0)]
        slo_p99_ms: f64,
        /// Seats of each step's goods.
        #[arg(long, default_value_t = 1_000)]
        seats: i64,
        /// Connections the rate is spread over.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 300)]
        drain_timeout: u64,
        #[arg(long)]
        allow_remote: bool,
    },
}

/// What `ramp` drives.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum RampTarget {
    Bookings,
    Healthz,
}

/// The target URL if the loopback guard lets it through; else exit code 2.
fn guarded(url: &str, allow_remote: bool) -> Result<reqwest::Url, ExitCode> {
    guard::check_target(url, allow_remote).map_err(|e| {
        eprintln!("ticketnest-load: {e}");
        ExitCode::from(2)
    })
}

fn write_json(path: &Option<PathBuf>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_vec_pretty(value)?)?;
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sale {
            url,
            users,
            bookings_per_user,
            seats,
            concurrency,
            rate,
            connections,
            quantity,
            json,
            plot: plot_path,
            duration,
            timeout_ms,
            drain_timeout,
            allow_remote,
            no_progress,
        } => {
            let url = match guarded(&url, allow_remote) {
                Ok(url) => url,
                Err(code) => return Ok(code),
            };
            let mode = match rate {
                Some(rate) if rate > 0.0 => Mode::Open {
                    rate,
                    connections: connections.max(1),
                },
                Some(_) => {
                    eprintln!("ticketnest-load: --rate must be positive");
                    return Ok(ExitCode::from(2));
                }
                None => Mode::Closed {
                    concurrency: concurrency.unwrap_or(64).max(1),
                },
            };
            if users.saturating_mul(u64::from(bookings_per_user)) > 10_000_000 {
                eprintln!(
                    "ticketnest-load: --users times --bookings-per-user must be at most 10,000,000"
                );
                return Ok(ExitCode::from(2));
            }
            let deployment = Deployment::from_env()?;
            let report = sale::run(
                &deployment,
                &sale::SaleOptions {
                    url,
                    users,
                    bookings_per_user,
                    seats,
                    quantity,
                    mode,
                    timeout: Duration::from_millis(timeout_ms),
                    max_duration: Duration::from_secs(duration),
                    drain_timeout: Duration::from_secs(drain_timeout),
                    progress: !no_progress,
                },
            )
            .await?;
            print!("{}", report.human());
            write_json(&json, &report)?;
            if let Some(path) = plot_path {
                let title = format!("TicketNest sale: {users} users, {seats} seats");
                plot::write(&path, &title, &report.timeline, &report.latency_us)?;
            }
            Ok(if report.correct {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Ramp {
            url,
            target,
            no_ceiling,
            start_rate,
            factor,
            max_rate,
            step_secs,
            slo_p99_ms,
            seats,
            connections,
            json,
            timeout_ms,
            drain_timeout,
            allow_remote,
        } => {
            let url = match guarded(&url, allow_remote) {
                Ok(url) => url,
                Err(code) => return Ok(code),
            };
            if start_rate <= 0.0 || factor <= 1.0 {
                eprintln!("ticketnest-load: --start-rate must be positive and --factor above 1");
                return Ok(ExitCode::from(2));
            }
            let target = match target {
                RampTarget::Bookings => ramp::Target::Bookings,
                RampTarget::Healthz => ramp::Target::Healthz,
            };
            let deployment = match target {
                ramp::Target::Bookings => Some(Deployment::from_env()?),
                ramp::Target::Healthz => None,
            };
            let report = ramp::run(
                deployment.as_ref(),
                &ramp::RampOptions {
                    url,
                    target,
                    ceiling: !no_ceiling,
                    start_rate,
                    factor,
                    max_rate,
                    step: Duration::from_secs(step_secs.max(1)),
                    slo_p99_ms,
                    seats,
                    connections: connections.max(1),
                    timeout: Duration::from_millis(timeout_ms),
                    drain_timeout: Duration::from_secs(drain_timeout),
                },
            )
            .await?;
            print!("{}", report.human());
            write_json(&json, &report)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let _telemetry = shared::telemetry::init(env!("CARGO_BIN_NAME"), "warn");
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ticketnest-load: {e:#}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_valid() {
        super::Cli::command().debug_assert();
    }
}
