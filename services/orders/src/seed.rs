//! `orders seed`: demo products and users for development and load tests. Idempotent:
//! ids are derived from the SKU / e-mail, and existing rows are left as they are.

use argon2::{Argon2, PasswordHasher};
use uuid::Uuid;

use crate::config::{Config, SeedArgs};

/// Namespace of the seed's derived ids (UUID v5).
const SEED_NAMESPACE: Uuid = Uuid::from_u128(0x5d0c_5eed_0000_4000_8000_0000_0000_0001);

/// The id `orders seed` gives product `sku`.
pub fn product_id(sku: &str) -> Uuid {
    Uuid::new_v5(&SEED_NAMESPACE, sku.as_bytes())
}

/// The id `orders seed` gives the user with `email`.
pub fn user_id(email: &str) -> Uuid {
    Uuid::new_v5(&SEED_NAMESPACE, email.as_bytes())
}

/// The SKU of seed product `i` (1-based).
pub fn sku(i: u32) -> String {
    format!("SKU-{i:05}")
}

/// Runs the seed against `config.database.url` (migrating first).
pub async fn run(config: &Config, args: &SeedArgs) -> anyhow::Result<()> {
    crate::db::migrate(&config.database.url).await?;
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&config.database.url)
        .await?;
    let products = seed_products(&db, args.products, args.stock).await?;
    let users = seed_users(&db, args.users).await?;
    db.close().await;
    tracing::info!(new_products = products, new_users = users, "seed done");
    Ok(())
}

/// Inserts products 1..=n that do not exist yet; returns how many were new.
pub async fn seed_products(db: &sqlx::PgPool, n: u32, stock: i32) -> anyhow::Result<u64> {
    let skus: Vec<String> = (1..=n).map(sku).collect();
    let ids: Vec<Uuid> = skus.iter().map(|s| product_id(s)).collect();
    let names: Vec<String> = (1..=n).map(|i| format!("Product {i}")).collect();
    let prices: Vec<i64> = (1..=n).map(|i| 100 + i64::from(i % 97) * 25).collect();
    let inserted = sqlx::query(
        "insert into products (id, sku, name, description, price_cents, currency, stock) \
         select id, sku, name, 'A demo product from orders seed.', price, 'EUR', $5 \
         from unnest($1::uuid[], $2::text[], $3::text[], $4::int8[]) as s(id, sku, name, price) \
         on conflict do nothing",
    )
    .bind(&ids)
    .bind(&skus)
    .bind(&names)
    .bind(&prices)
    .bind(stock)
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted)
}

/// Inserts demo users 1..=m that do not exist yet (`user{i}@shop.test` / `password{i}`,
/// argon2id); returns how many were new.
pub async fn seed_users(db: &sqlx::PgPool, m: u32) -> anyhow::Result<u64> {
    let existing: Vec<String> =
        sqlx::query_scalar("select email from users where email like '%@shop.test'")
            .fetch_all(db)
            .await?;
    let missing: Vec<u32> = (1..=m)
        .filter(|i| !existing.contains(&format!("user{i}@shop.test")))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    // Hashing is CPU-heavy: do it off the async workers, in one tracked blocking batch.
    let lifecycle = shop_lifecycle::Lifecycle::new();
    let rows = lifecycle
        .spawn_blocking(move || -> anyhow::Result<Vec<(Uuid, String, String)>> {
            let argon = Argon2::default();
            missing
                .into_iter()
                .map(|i| {
                    let email = format!("user{i}@shop.test");
                    let hash = argon
                        .hash_password(format!("password{i}").as_bytes())
                        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?
                        .to_string();
                    Ok((user_id(&email), email, hash))
                })
                .collect()
        })
        .await??;
    lifecycle.shutdown(std::time::Duration::from_secs(1)).await;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let emails: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    let hashes: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let inserted = sqlx::query(
        "insert into users (id, email, password_hash) \
         select * from unnest($1::uuid[], $2::text[], $3::text[]) on conflict do nothing",
    )
    .bind(&ids)
    .bind(&emails)
    .bind(&hashes)
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted)
}
