//! ticketnest-admin: operator commands.
//!
//! `migrate` applies the schema; `user promote|delete` manage accounts. Each subcommand
//! reads the same `TICKETNEST_*` environment as the services.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use shared::{auth::Role, config::DatabaseConfig};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init("warn");
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
            };
            if !done {
                bail!("no user with email {email}");
            }
            println!("{email} {verb}");
        }
    }
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
