//! ticketnest-admin: operator commands.
//!
//! `migrate` applies the schema; `user promote|demote|delete` manage accounts; `user
//! bulk-create` makes many users at once with their tokens (load tests, rehearsals);
//! `verify` runs the invariant checker over PostgreSQL and the shard streams;
//! `status`, `goods stats` and `dlq list|replay|drop` are for operators during a sale.
//! Each subcommand reads the same `TICKETNEST_*` environment as the services.

mod dlq;
mod ops;
mod status;
mod verify;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use shared::{
    auth::{PasswordHashing, Role, TokenKeys},
    config::{AuthConfig, DatabaseConfig, Environment, FromVars},
};

#[derive(Debug, Parser)]
#[command(
    name = "ticketnest-admin",
    version,
    about = "TicketNest operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending database migrations (idempotent; safe to run concurrently).
    Migrate,
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Check every invariant over PostgreSQL and the shard streams: no oversell, FIFO
    /// order, one live place per user, counters, and every request the workers
    /// acknowledged decided. Exits 1 naming every breach; 0 saying what it checked.
    Verify {
        /// Only this goods.
        #[arg(long)]
        goods: Option<i64>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every shard (owner, fencing token, backlog, pending, lag, dead letters), the
    /// live workers, and the goods with the most requests queued.
    Status {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One goods' figures.
    #[command(subcommand)]
    Goods(GoodsCommand),
    /// Dead letters: entries the workers could not decide, recorded in PostgreSQL.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Subcommand)]
enum GoodsCommand {
    /// Limit, seats and bookings by state, waitlist, requests queued, decisions by
    /// outcome and reason. Exits 1 if there is no such goods.
    Stats {
        /// The goods id.
        id: i64,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Dead letters no operator has replayed or dropped yet, oldest first.
    List {
        /// Only this shard.
        #[arg(long)]
        shard: Option<i32>,
        /// Include the ones replayed or dropped, with who did it and when.
        #[arg(long)]
        all: bool,
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a dead letter (or every waiting one) back on its goods' shard stream as a
    /// new request, decided like any other; its own decision, if it had one, stays.
    /// Exits 1 if any could not be replayed (this build cannot decode it either).
    Replay {
        /// The dead letter's id (from `dlq list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every dead letter still waiting.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        record: Record,
    },
    /// Give up on a dead letter: recorded (who, when, why) and kept as the audit
    /// line. Exits 1 if there is no such letter waiting.
    Drop {
        /// The dead letter's id (from `dlq list`).
        id: i64,
        #[command(flatten)]
        record: Record,
    },
}

/// What an operator's action on a dead letter records, and how it is reported.
#[derive(Debug, clap::Args)]
struct Record {
    /// Who acts, for the record (default: the login name).
    #[arg(long)]
    by: Option<String>,
    /// Why, for the record.
    #[arg(long)]
    note: Option<String>,
    /// JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Make a user an organizer (allowed to create goods).
    Promote {
        /// The user's email address.
        email: String,
    },
    /// Make an organizer a customer again.
    Demote {
        /// The user's email address.
        email: String,
    },
    /// Delete a user: their tokens stop working within a second and they cannot log in.
    /// Their bookings stay.
    Delete {
        /// The user's email address.
        email: String,
    },
    /// Create many users at once for a load test or rehearsal (emails
    /// `<TAG><k>@load.invalid`), and write `user_id,access_token` lines to a file.
    /// Needs TICKETNEST_JWT_SECRET (the API's) to mint the tokens.
    BulkCreate {
        /// How many users.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=10_000_000))]
        count: i64,
        /// Email prefix; must not have been used before.
        #[arg(long)]
        tag: String,
        /// Make them organizers.
        #[arg(long)]
        organizer: bool,
        /// Where to write `user_id,access_token` lines.
        #[arg(long)]
        tokens: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shared::telemetry::init(env!("CARGO_BIN_NAME"), "warn");
    let cli = Cli::parse();
    let database = DatabaseConfig::from_env().context("invalid configuration")?;
    match cli.command {
        Command::Migrate => {
            shared::db::migrate(&database)
                .await
                .context("migration failed")?;
            println!(
                "migrations applied (schema version {})",
                shared::db::latest_migration_version()
            );
        }
        Command::Verify { goods, json } => {
            let clean = verify::run(&database, goods, json).await?;
            if !clean {
                std::process::exit(1);
            }
        }
        Command::Status { json } => {
            let mut ops = ops::Ops::connect(&database, true).await?;
            status::status(&mut ops, json).await?;
        }
        Command::Goods(GoodsCommand::Stats { id, json }) => {
            let mut ops = ops::Ops::connect(&database, true).await?;
            if !status::goods_stats(&mut ops, id, json).await? {
                std::process::exit(1);
            }
        }
        Command::Dlq(cmd) => {
            // Listing reads PostgreSQL only: it works while Redis is down.
            let with_redis = !matches!(cmd, DlqCommand::List { .. });
            let mut ops = ops::Ops::connect(&database, with_redis).await?;
            let done = match cmd {
                DlqCommand::List { shard, all, json } => {
                    dlq::list(&ops, shard, all, json).await?;
                    true
                }
                DlqCommand::Replay { id, all: _, record } => {
                    let by = ops::operator(record.by);
                    dlq::replay(&mut ops, id, &by, record.note.as_deref(), record.json).await?
                }
                DlqCommand::Drop { id, record } => {
                    let by = ops::operator(record.by);
                    dlq::drop(&mut ops, id, &by, record.note.as_deref(), record.json).await?
                }
            };
            if !done {
                std::process::exit(1);
            }
        }
        Command::User(cmd) => {
            let pool = shared::db::build_pool(&database)?;
            let (email, done, verb) = match cmd {
                UserCommand::Promote { email } => {
                    let done = shared::db::set_user_role(&pool, &email, Role::Organizer).await?;
                    (email, done, "promoted to organizer")
                }
                UserCommand::Demote { email } => {
                    let done = shared::db::set_user_role(&pool, &email, Role::Customer).await?;
                    (email, done, "demoted to customer")
                }
                UserCommand::Delete { email } => {
                    let done = shared::db::delete_user(&pool, &email).await?;
                    (email, done, "deleted")
                }
                UserCommand::BulkCreate {
                    count,
                    tag,
                    organizer,
                    tokens,
                } => {
                    bulk_create(&pool, count, &tag, organizer, &tokens).await?;
                    return Ok(());
                }
            };
            if !done {
                bail!("no user with email {email}");
            }
            println!("{email} {verb}");
        }
    }
    Ok(())
}

async fn bulk_create(
    pool: &deadpool_postgres::Pool,
    count: i64,
    tag: &str,
    organizer: bool,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;

    let environment = Environment::from_vars(&shared::config::process_env)?;
    let auth = AuthConfig::from_vars(&shared::config::process_env, environment)?;
    let keys = TokenKeys::from_config(&auth);
    // A random password nobody is told: bulk users act only through minted tokens.
    let hash = PasswordHashing::new(auth.argon2)?.hash(&uuid::Uuid::new_v4().to_string())?;
    let role = if organizer {
        Role::Organizer
    } else {
        Role::Customer
    };
    let ids = shared::db::bulk_create_users(pool, tag, count, role, &hash)
        .await
        .context("creating users")?;
    // The file holds working access tokens: readable by its owner only, from the
    // moment it exists.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // `mode` applies only to a file this call creates: an existing one is narrowed too,
    // before any token is written to it.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for id in &ids {
        writeln!(out, "{id},{}", keys.mint(*id, role)?)?;
    }
    out.flush()?;
    println!("created {} users; tokens in {}", ids.len(), path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_valid() {
        super::Cli::command().debug_assert();
    }
}
