//! The MongoDB demo data: database `shop` with `customers` (the same deterministic fake PII as
//! the PostgreSQL side, from `seed.rs`'s generators), `orders` and `secrets`, inserted through
//! tollgate's own upstream connection in batches.

use std::time::{Instant, UNIX_EPOCH};

use bson::{doc, Bson, Document};
use tracing::info;

use super::seed::{generate_secrets, CustomerGen, OrderGen, SeedOptions, SeedSummary, SHOP_DB};
use crate::mongo::reply::is_error;
use crate::mongo::upstream::{MongoConnection, UpstreamError};

const BATCH: usize = 1000;

async fn insert(
    conn: &mut MongoConnection,
    collection: &str,
    docs: Vec<Document>,
) -> Result<(), UpstreamError> {
    for chunk in docs.chunks(BATCH) {
        let r = conn
            .command(&doc! {
                "insert": collection,
                "documents": chunk.iter().cloned().map(Bson::Document).collect::<Vec<_>>(),
                "ordered": true,
                "$db": SHOP_DB,
            })
            .await?;
        if is_error(&r) || r.contains_key("writeErrors") {
            return Err(UpstreamError::Command {
                code_name: r.get_str("codeName").unwrap_or("WriteError").into(),
                message: format!("inserting into shop.{collection} failed"),
            });
        }
    }
    Ok(())
}

/// Drops and refills `shop.customers`, `shop.orders` and `shop.secrets`.
pub async fn seed_shop(
    conn: &mut MongoConnection,
    opts: &SeedOptions,
) -> Result<SeedSummary, UpstreamError> {
    let started = Instant::now();
    for c in ["customers", "orders", "secrets"] {
        // `drop` of a missing collection is an error on old servers: ignore its answer.
        conn.command(&doc! { "drop": c, "$db": SHOP_DB }).await?;
    }
    let mut gen = CustomerGen::new(opts.rng_seed);
    let customers: Vec<Document> = (1..=opts.customers as i64)
        .map(|id| {
            let c = gen.next(id);
            doc! {
                "_id": c.id, "name": c.name, "email": c.email, "phone": c.phone,
                "ssn": c.ssn, "region": c.region,
            }
        })
        .collect();
    insert(conn, "customers", customers).await?;
    let mut gen = OrderGen::new(opts.rng_seed, opts.orders, opts.customers);
    let orders: Vec<Document> = (1..=opts.orders as i64)
        .map(|id| {
            let o = gen.next(id);
            let millis = o
                .created_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            doc! {
                "_id": o.id, "customer_id": o.customer_id,
                "amount": o.amount.0 as f64 / 100.0,
                "created_at": bson::DateTime::from_millis(millis),
            }
        })
        .collect();
    insert(conn, "orders", orders).await?;
    let secrets: Vec<Document> = generate_secrets(opts.rng_seed)
        .into_iter()
        .map(|(id, key)| doc! { "_id": id, "api_key": key })
        .collect();
    let secret_rows = secrets.len();
    insert(conn, "secrets", secrets).await?;
    conn.command(&doc! {
        "createIndexes": "orders",
        "indexes": [ { "key": { "customer_id": 1 }, "name": "customer_id_1" } ],
        "$db": SHOP_DB,
    })
    .await?;
    info!(
        customers = opts.customers,
        orders = opts.orders,
        ms = started.elapsed().as_millis() as u64,
        "seeded MongoDB database shop"
    );
    Ok(SeedSummary {
        customers: opts.customers,
        orders: opts.orders,
        secrets: secret_rows,
    })
}
