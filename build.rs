//! The migrations are embedded with `sqlx::migrate!`, which cargo does not track: rebuild
//! when a migration is added or changed, or the binary would carry the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
