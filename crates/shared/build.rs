//! Rebuilds this crate when a migration is added or changed: `refinery::embed_migrations!`
//! reads `migrations/` at compile time, and cargo does not otherwise notice a new file
//! there (a cached build would keep the old set and apply none of the new ones).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
