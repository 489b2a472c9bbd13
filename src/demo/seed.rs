//! Demo data for `tollgate demo`: the `shop` database with deterministic fake PII.
//!
//! [`seed_shop`] creates database `shop` in a [`PgCluster`] and fills
//! `customers(id, name, email, phone, ssn, region)`, `orders(id, customer_id, amount,
//! created_at)` and `secrets(id, api_key)` with data generated from a seed (same seed, same
//! rows), loaded with binary `COPY ... FROM STDIN`. It also creates the non-superuser login
//! role the gateway uses upstream, with just the privileges the demo needs.
//!
//! All values are fake: emails use the reserved `example.{com,org,net}` domains, phone
//! numbers the unassigned `+1-555` area code, and SSN-like numbers the `9xx` area that is
//! never issued as a Social Security number.

use std::error::Error as StdError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tracing::{debug, info};

use super::cluster::{pg_error_text, ClusterError, PgCluster};

#[path = "seed_names.rs"]
mod names;

/// Name of the demo database.
pub const SHOP_DB: &str = "shop";
/// Number of rows in `secrets`.
pub const SECRET_ROWS: usize = 20;

/// First order timestamp: 2024-01-01T00:00:00Z. Orders spread over two years from there
/// (fixed, not `now()`, so the data is reproducible).
const ORDERS_START_UNIX: u64 = 1_704_067_200;
const ORDERS_SPAN_SECS: u64 = 2 * 365 * 86_400;

/// How much demo data to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedOptions {
    /// Rows in `customers` (default 5,000).
    pub customers: usize,
    /// Rows in `orders` (default 50,000).
    pub orders: usize,
    /// Seed of the deterministic generator.
    pub rng_seed: u64,
}

impl Default for SeedOptions {
    fn default() -> Self {
        SeedOptions {
            customers: 5_000,
            orders: 50_000,
            rng_seed: 0x7011_6a7e,
        }
    }
}

/// Row counts written by [`seed_shop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedSummary {
    /// Rows in `customers`.
    pub customers: usize,
    /// Rows in `orders`.
    pub orders: usize,
    /// Rows in `secrets`.
    pub secrets: usize,
}

/// Errors from [`seed_shop`].
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Connecting to the cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A statement failed.
    #[error("seeding database `shop` failed while {step}: {}", pg_error_text(.source))]
    Postgres {
        /// What was being done.
        step: &'static str,
        /// The client error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The options cannot be used.
    #[error("invalid seed options: {0}")]
    InvalidOptions(&'static str),
    /// The requested upstream role cannot be used.
    #[error("invalid upstream role `{name}`: {reason}")]
    InvalidRole {
        /// The role name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
}

fn step(step: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SeedError {
    move |source| SeedError::Postgres { step, source }
}

/// Creates database `shop` (if absent) and (re)creates and fills its tables `customers`,
/// `orders` and `secrets`, then runs `ANALYZE`. Existing demo tables are dropped first, so
/// seeding twice gives the same data.
///
/// Also creates (or updates) the login role `role_name` with `role_password`: not a
/// superuser, `CONNECT` on `shop`, `USAGE` on schema `public`, `SELECT, INSERT, UPDATE,
/// DELETE` on the three tables and `USAGE, SELECT` on their sequences. The password is sent
/// only as a SCRAM-SHA-256 verifier computed here, in a session that does not log
/// statements, so it appears in no server log.
pub async fn seed_shop(
    cluster: &PgCluster,
    opts: &SeedOptions,
    role_name: &str,
    role_password: &str,
) -> Result<SeedSummary, SeedError> {
    validate(opts, role_name, role_password)?;
    let started = Instant::now();

    let admin = cluster.connect("postgres").await?;
    admin
        .batch_execute("SET log_statement = 'none'; SET log_min_error_statement = 'panic'")
        .await
        .map_err(step("configuring the admin session"))?;
    create_role(&admin, role_name, role_password).await?;
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&SHOP_DB])
        .await
        .map_err(step("looking for database shop"))?
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(SHOP_DB)))
            .await
            .map_err(step("creating database shop"))?;
    }
    drop(admin);

    let mut db = cluster.connect(SHOP_DB).await?;
    let tx = db
        .transaction()
        .await
        .map_err(step("starting the load transaction"))?;
    tx.batch_execute(SCHEMA_SQL)
        .await
        .map_err(step("creating tables"))?;

    let phase = Instant::now();
    let sink = tx
        .copy_in("COPY customers (id, name, email, phone, ssn, region) FROM STDIN (FORMAT binary)")
        .await
        .map_err(step("starting COPY customers"))?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
        ],
    );
    let mut writer = std::pin::pin!(writer);
    let mut gen = CustomerGen::new(opts.rng_seed);
    for id in 1..=opts.customers as i64 {
        let c = gen.next(id);
        writer
            .as_mut()
            .write(&[&c.id, &c.name, &c.email, &c.phone, &c.ssn, &c.region])
            .await
            .map_err(step("copying customers"))?;
    }
    let customers = writer
        .finish()
        .await
        .map_err(step("finishing COPY customers"))?;
    debug!(
        rows = customers,
        elapsed_ms = ms(phase.elapsed()),
        "copied customers"
    );

    let phase = Instant::now();
    let sink = tx
        .copy_in("COPY orders (id, customer_id, amount, created_at) FROM STDIN (FORMAT binary)")
        .await
        .map_err(step("starting COPY orders"))?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::INT8, Type::INT8, Type::NUMERIC, Type::TIMESTAMPTZ],
    );
    let mut writer = std::pin::pin!(writer);
    let mut gen = OrderGen::new(opts.rng_seed, opts.orders, opts.customers);
    for id in 1..=opts.orders as i64 {
        let o = gen.next(id);
        writer
            .as_mut()
            .write(&[&o.id, &o.customer_id, &o.amount, &o.created_at])
            .await
            .map_err(step("copying orders"))?;
    }
    let orders = writer
        .finish()
        .await
        .map_err(step("finishing COPY orders"))?;
    debug!(
        rows = orders,
        elapsed_ms = ms(phase.elapsed()),
        "copied orders"
    );

    let sink = tx
        .copy_in("COPY secrets (id, api_key) FROM STDIN (FORMAT binary)")
        .await
        .map_err(step("starting COPY secrets"))?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT4, Type::TEXT]);
    let mut writer = std::pin::pin!(writer);
    for (id, api_key) in generate_secrets(opts.rng_seed) {
        writer
            .as_mut()
            .write(&[&id, &api_key])
            .await
            .map_err(step("copying secrets"))?;
    }
    let secrets = writer
        .finish()
        .await
        .map_err(step("finishing COPY secrets"))?;

    let role = quote_ident(role_name);
    let finish_sql = format!(
        "{POST_LOAD_SQL}\n\
         GRANT CONNECT ON DATABASE {db} TO {role};\n\
         GRANT USAGE ON SCHEMA public TO {role};\n\
         GRANT SELECT, INSERT, UPDATE, DELETE ON customers, orders, secrets TO {role};\n\
         GRANT USAGE, SELECT ON SEQUENCE customers_id_seq, orders_id_seq TO {role};\n",
        db = quote_ident(SHOP_DB),
    );
    tx.batch_execute(&finish_sql)
        .await
        .map_err(step("adding constraints, indexes and grants"))?;
    tx.commit()
        .await
        .map_err(step("committing the load transaction"))?;
    db.batch_execute("ANALYZE customers, orders, secrets")
        .await
        .map_err(step("analyzing tables"))?;

    let summary = SeedSummary {
        customers: customers as usize,
        orders: orders as usize,
        secrets: secrets as usize,
    };
    info!(
        customers = summary.customers,
        orders = summary.orders,
        secrets = summary.secrets,
        role = role_name,
        elapsed_ms = ms(started.elapsed()),
        "seeded demo database shop"
    );
    Ok(summary)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Tables are created without the foreign key and secondary index; both are added after the
/// load, which is much faster than per-row checks.
const SCHEMA_SQL: &str = "
DROP TABLE IF EXISTS orders, customers, secrets CASCADE;
CREATE TABLE customers (
    id     bigserial PRIMARY KEY,
    name   text NOT NULL,
    email  text NOT NULL,
    phone  text,
    ssn    text,
    region text NOT NULL
);
CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    customer_id bigint NOT NULL,
    amount      numeric(10,2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE secrets (
    id      integer PRIMARY KEY,
    api_key text NOT NULL
);
COMMENT ON TABLE customers IS 'tollgate demo: fake customers with fake PII';
COMMENT ON TABLE secrets IS 'tollgate demo: fake API keys that agents must never see';
";

const POST_LOAD_SQL: &str = "
SELECT setval(pg_get_serial_sequence('customers', 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) FROM customers;
SELECT setval(pg_get_serial_sequence('orders', 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) FROM orders;
ALTER TABLE orders ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id);
CREATE INDEX orders_customer_id_idx ON orders (customer_id);
";

fn validate(opts: &SeedOptions, role_name: &str, role_password: &str) -> Result<(), SeedError> {
    if opts.orders > 0 && opts.customers == 0 {
        return Err(SeedError::InvalidOptions(
            "orders need at least one customer",
        ));
    }
    if i64::try_from(opts.customers).is_err() || i64::try_from(opts.orders).is_err() {
        return Err(SeedError::InvalidOptions("row counts too large"));
    }
    let refuse = |reason| {
        Err(SeedError::InvalidRole {
            name: role_name.to_string(),
            reason,
        })
    };
    if role_name.is_empty() || role_name.len() > 63 || role_name.contains('\0') {
        return refuse("the name must have 1 to 63 bytes and no NUL");
    }
    if role_name == "postgres" || role_name.starts_with("pg_") {
        return refuse("the superuser and reserved pg_ roles cannot be used");
    }
    if role_password.is_empty() || role_password.contains('\0') {
        return refuse("the password must be non-empty and contain no NUL");
    }
    Ok(())
}

/// Creates the login role, or resets an existing non-superuser role to the demo settings.
async fn create_role(
    admin: &tokio_postgres::Client,
    name: &str,
    password: &str,
) -> Result<(), SeedError> {
    let existing = admin
        .query_opt("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(step("looking up the upstream role"))?;
    if existing.as_ref().is_some_and(|row| row.get::<_, bool>(0)) {
        return Err(SeedError::InvalidRole {
            name: name.to_string(),
            reason: "it exists and is a superuser",
        });
    }
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    let verb = if existing.is_some() {
        "ALTER"
    } else {
        "CREATE"
    };
    let sql = format!(
        "{verb} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {}",
        quote_ident(name),
        quote_literal(&verifier)
    );
    admin
        .batch_execute(&sql)
        .await
        .map_err(step("creating the upstream role"))
}

fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// SplitMix64: tiny, fast and fully specified, so a seed gives the same data with any
/// version of any crate.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64, stream: u64) -> Self {
        SplitMix64(seed ^ stream.wrapping_mul(0xD605_BBB5_8C8A_BBB1))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One generated customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Customer {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) phone: String,
    pub(crate) ssn: String,
    pub(crate) region: &'static str,
}

pub(crate) struct CustomerGen {
    rng: SplitMix64,
}

impl CustomerGen {
    pub(crate) fn new(seed: u64) -> Self {
        CustomerGen {
            rng: SplitMix64::new(seed, 1),
        }
    }

    pub(crate) fn next(&mut self, id: i64) -> Customer {
        let rng = &mut self.rng;
        let first = rng.pick(names::FIRST_NAMES);
        let last = rng.pick(names::LAST_NAMES);
        let domain = rng.pick(&["example.com", "example.org", "example.net"]);
        let email = format!("{}.{}{id}@{domain}", email_part(first), email_part(last));
        let phone = format!(
            "+1-555-{:03}-{:04}",
            200 + rng.below(800),
            rng.below(10_000)
        );
        let ssn = format!(
            "{:03}-{:02}-{:04}",
            900 + rng.below(100),
            1 + rng.below(99),
            1 + rng.below(9_999)
        );
        let region = match rng.below(100) {
            0..=34 => "US",
            35..=64 => "EU",
            65..=89 => "APAC",
            _ => "LATAM",
        };
        Customer {
            id,
            name: format!("{first} {last}"),
            email,
            phone,
            ssn,
            region,
        }
    }
}

/// Lower-case ASCII letters and digits of a name ("O'Brien" -> "obrien").
fn email_part(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// One generated order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Order {
    pub(crate) id: i64,
    pub(crate) customer_id: i64,
    pub(crate) amount: Cents,
    pub(crate) created_at: SystemTime,
}

pub(crate) struct OrderGen {
    rng: SplitMix64,
    orders: u64,
    customers: u64,
}

impl OrderGen {
    pub(crate) fn new(seed: u64, orders: usize, customers: usize) -> Self {
        OrderGen {
            rng: SplitMix64::new(seed, 2),
            orders: orders.max(1) as u64,
            customers: customers.max(1) as u64,
        }
    }

    pub(crate) fn next(&mut self, id: i64) -> Order {
        let rng = &mut self.rng;
        // A fifth of the orders come from the first tenth of the customers (regulars).
        let customer_id = if rng.below(5) == 0 {
            1 + rng.below((self.customers / 10).max(1))
        } else {
            1 + rng.below(self.customers)
        };
        let cents = match rng.below(100) {
            0..=69 => 500 + rng.below(9_500),      // $5 - $100
            70..=94 => 10_000 + rng.below(40_000), // $100 - $500
            _ => 50_000 + rng.below(450_000),      // $500 - $5,000
        };
        // Increasing ids get increasing (jittered) timestamps.
        let slot = ORDERS_SPAN_SECS / self.orders;
        let offset = (id as u64 - 1) * ORDERS_SPAN_SECS / self.orders + rng.below(slot.max(1));
        Order {
            id,
            customer_id: customer_id as i64,
            amount: Cents(cents as i64),
            created_at: UNIX_EPOCH + Duration::from_secs(ORDERS_START_UNIX + offset),
        }
    }
}

/// `(id, api_key)` rows of `secrets`.
pub(crate) fn generate_secrets(seed: u64) -> Vec<(i32, String)> {
    let mut rng = SplitMix64::new(seed, 3);
    (1..=SECRET_ROWS as i32)
        .map(|id| {
            let key = format!("sk_demo_{:016x}{:016x}", rng.next_u64(), rng.next_u64());
            (id, key)
        })
        .collect()
}

/// A money amount in cents, sent as a binary `numeric` with scale 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cents(pub(crate) i64);

impl ToSql for Cents {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        // Binary numeric: ndigits, weight, sign, dscale, then base-10000 digits (i16 each),
        // most significant first; `weight` is the power of 10000 of the first digit.
        let abs = self.0.unsigned_abs();
        let mut int_part = abs / 100;
        let frac = (abs % 100) * 100; // .45 -> first fractional base-10000 digit 4500
        let mut int_digits = Vec::new();
        while int_part > 0 {
            int_digits.push((int_part % 10_000) as i16);
            int_part /= 10_000;
        }
        let mut weight = int_digits.len() as i16 - 1;
        let mut digits: Vec<i16> = int_digits.into_iter().rev().collect();
        digits.push(frac as i16);
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        out.put_i16(digits.len() as i16);
        out.put_i16(weight);
        out.put_u16(if self.0 < 0 { 0x4000 } else { 0x0000 });
        out.put_i16(2);
        for digit in digits {
            out.put_i16(digit);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

/// The demo's tables as the schema loader reads them from the upstream (for tests and benches
/// that judge statements without a live upstream).
pub fn demo_schema() -> crate::policy::mask::SchemaSnapshot {
    use crate::policy::mask::{ColumnShape, SchemaSnapshot, TableShape};
    let mut s = SchemaSnapshot::default();
    let table = |oid, name: &str, cols: &[(&str, &str, char)]| TableShape {
        oid,
        schema: "public".into(),
        name: name.into(),
        columns: cols
            .iter()
            .enumerate()
            .map(|(i, (n, t, c))| ColumnShape {
                name: n.to_string(),
                attnum: i as i16 + 1,
                type_sql: t.to_string(),
                category: *c,
            })
            .collect(),
    };
    s.insert(table(
        16001,
        "customers",
        &[
            ("id", "bigint", 'N'),
            ("name", "text", 'S'),
            ("email", "text", 'S'),
            ("phone", "text", 'S'),
            ("ssn", "text", 'S'),
            ("region", "text", 'S'),
        ],
    ));
    s.insert(table(
        16002,
        "orders",
        &[
            ("id", "bigint", 'N'),
            ("customer_id", "bigint", 'N'),
            ("amount", "numeric(10,2)", 'N'),
            ("created_at", "timestamp with time zone", 'D'),
        ],
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::cluster::ClusterOptions;
    use tokio_postgres::error::SqlState;
    use tokio_postgres::NoTls;

    fn assert_send<T: Send>(_: &T) {}

    fn cents_text(cents: i64) -> String {
        let sign = if cents < 0 { "-" } else { "" };
        format!(
            "{sign}{}.{:02}",
            cents.unsigned_abs() / 100,
            cents.unsigned_abs() % 100
        )
    }

    #[test]
    fn generation_is_deterministic_and_plausible() {
        let mut a = CustomerGen::new(7);
        let mut b = CustomerGen::new(7);
        let mut c = CustomerGen::new(8);
        let xs: Vec<Customer> = (1..=200).map(|id| a.next(id)).collect();
        let ys: Vec<Customer> = (1..=200).map(|id| b.next(id)).collect();
        let zs: Vec<Customer> = (1..=200).map(|id| c.next(id)).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        for cust in &xs {
            assert!(
                cust.email.ends_with(&format!("{}@example.com", cust.id))
                    || cust.email.ends_with(&format!("{}@example.org", cust.id))
                    || cust.email.ends_with(&format!("{}@example.net", cust.id))
            );
            let (local, _) = cust.email.split_once('@').unwrap();
            assert!(
                local.contains('.')
                    && local
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.')
            );
            assert_eq!(cust.phone.len(), "+1-555-123-4567".len());
            assert!(cust.phone.starts_with("+1-555-"));
            let ssn: Vec<&str> = cust.ssn.split('-').collect();
            assert_eq!(
                ssn.iter().map(|p| p.len()).collect::<Vec<_>>(),
                vec![3, 2, 4]
            );
            assert!(ssn.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())));
            assert!(["US", "EU", "APAC", "LATAM"].contains(&cust.region));
        }
        let mut o1 = OrderGen::new(7, 1000, 50);
        let mut o2 = OrderGen::new(7, 1000, 50);
        let orders: Vec<Order> = (1..=1000).map(|id| o1.next(id)).collect();
        assert_eq!(orders, (1..=1000).map(|id| o2.next(id)).collect::<Vec<_>>());
        let end = UNIX_EPOCH + Duration::from_secs(ORDERS_START_UNIX + ORDERS_SPAN_SECS);
        for o in &orders {
            assert!((1..=50).contains(&o.customer_id));
            assert!((500..500_000).contains(&o.amount.0));
            assert!(
                o.created_at >= UNIX_EPOCH + Duration::from_secs(ORDERS_START_UNIX)
                    && o.created_at < end
            );
        }
        assert_eq!(generate_secrets(7), generate_secrets(7));
        assert_eq!(generate_secrets(7).len(), SECRET_ROWS);
    }

    #[test]
    fn options_are_validated() {
        let opts = SeedOptions::default();
        assert!(validate(&opts, "tollgate_upstream", "pw").is_ok());
        assert!(validate(&opts, "postgres", "pw").is_err());
        assert!(validate(&opts, "pg_monitor", "pw").is_err());
        assert!(validate(&opts, "", "pw").is_err());
        assert!(validate(&opts, "x", "").is_err());
        let bad = SeedOptions {
            customers: 0,
            ..SeedOptions::default()
        };
        assert!(validate(&bad, "x", "pw").is_err());
    }

    #[tokio::test]
    async fn seeds_shop_and_upstream_role() {
        let cluster = PgCluster::start(ClusterOptions {
            superuser_password: String::new(),
            log_statements: true,
            tls: None,
        })
        .await
        .expect("cluster starts");
        let role_password = "r0le-pw 'quoted' \"x\"";
        let opts = SeedOptions::default();
        let started = Instant::now();
        let seeding = seed_shop(&cluster, &opts, "tollgate_upstream", role_password);
        assert_send(&seeding);
        let summary = seeding.await.expect("seed");
        let elapsed = started.elapsed();
        eprintln!(
            "seed_shop: {} customers, {} orders, {} secrets in {} ms",
            summary.customers,
            summary.orders,
            summary.secrets,
            elapsed.as_millis()
        );
        assert_eq!(
            summary,
            SeedSummary {
                customers: 5_000,
                orders: 50_000,
                secrets: SECRET_ROWS
            }
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "seeding took {elapsed:?}"
        );

        // Counts and content, as superuser.
        let su = cluster.connect(SHOP_DB).await.unwrap();
        let row = su
            .query_one(
                "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), \
                        (SELECT count(*) FROM secrets), (SELECT sum(amount)::text FROM orders), \
                        (SELECT count(DISTINCT region) FROM customers), \
                        (SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer_id_idx'), \
                        (SELECT reltuples::bigint FROM pg_class WHERE relname = 'orders')",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 5_000);
        assert_eq!(row.get::<_, i64>(1), 50_000);
        assert_eq!(row.get::<_, i64>(2), SECRET_ROWS as i64);
        let mut gen = OrderGen::new(opts.rng_seed, opts.orders, opts.customers);
        let expected_sum: i64 = (1..=50_000).map(|id| gen.next(id).amount.0).sum();
        assert_eq!(row.get::<_, String>(3), cents_text(expected_sum));
        assert_eq!(row.get::<_, i64>(4), 4);
        assert_eq!(row.get::<_, i64>(5), 1);
        assert_eq!(row.get::<_, i64>(6), 50_000, "ANALYZE ran");
        let first = CustomerGen::new(opts.rng_seed).next(1);
        let row = su
            .query_one(
                "SELECT name, email, phone, ssn, region FROM customers WHERE id = 1",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), first.name);
        assert_eq!(row.get::<_, String>(1), first.email);
        assert_eq!(row.get::<_, String>(2), first.phone);
        assert_eq!(row.get::<_, String>(3), first.ssn);
        assert_eq!(row.get::<_, String>(4), first.region);
        let first_order = OrderGen::new(opts.rng_seed, opts.orders, opts.customers).next(1);
        let row = su
            .query_one(
                "SELECT amount::text, extract(epoch FROM created_at)::bigint FROM orders WHERE id = 1",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), cents_text(first_order.amount.0));
        let secs = first_order
            .created_at
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert_eq!(row.get::<_, i64>(1), secs);

        // Binary numeric encoding edge cases.
        for cents in [
            0,
            5,
            50,
            100,
            1_001,
            12_345,
            1_000_000,
            100_000_000,
            9_999_999_999,
            -150,
            -1,
        ] {
            let text: String = su
                .query_one("SELECT $1::numeric::text", &[&Cents(cents)])
                .await
                .unwrap()
                .get(0);
            assert_eq!(text, cents_text(cents), "cents {cents}");
        }

        // The role's password never reached the server log (log_statement = all).
        let log = std::fs::read_to_string(cluster.log_path()).unwrap();
        assert!(!log.contains("r0le-pw"));
        assert!(!log.contains("SCRAM-SHA-256$"));

        // The upstream role logs in over TCP with SCRAM and has exactly the demo privileges.
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(cluster.port())
            .user("tollgate_upstream")
            .password(role_password)
            .dbname(SHOP_DB);
        let (role, conn) = config.connect(NoTls).await.expect("role login over TCP");
        tokio::spawn(conn);
        let row = role
            .query_one(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, \
                        (SELECT count(*) FROM orders), (SELECT count(*) FROM secrets) \
                 FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .unwrap();
        assert!(!row.get::<_, bool>(0));
        assert!(!row.get::<_, bool>(1));
        assert!(!row.get::<_, bool>(2));
        assert_eq!(row.get::<_, i64>(3), 50_000);
        assert_eq!(row.get::<_, i64>(4), SECRET_ROWS as i64);
        let id: i64 = role
            .query_one(
                "INSERT INTO orders (customer_id, amount, created_at) VALUES (1, 12.34, now()) RETURNING id",
                &[],
            )
            .await
            .expect("insert through the sequence")
            .get(0);
        assert_eq!(id, 50_001);
        let cid: i64 = role
            .query_one(
                "INSERT INTO customers (name, email, region) VALUES ('New One', 'new.one@example.com', 'EU') RETURNING id",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(cid, 5_001);
        assert_eq!(
            role.execute("UPDATE orders SET amount = 1 WHERE id = $1", &[&id])
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            role.execute("DELETE FROM orders WHERE id = $1", &[&id])
                .await
                .unwrap(),
            1
        );
        let err = role
            .batch_execute("CREATE TABLE nope (x int)")
            .await
            .unwrap_err();
        assert_eq!(
            err.as_db_error().map(|e| e.code()),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE)
        );
        let err = role
            .batch_execute("ALTER TABLE orders ADD COLUMN x int")
            .await
            .unwrap_err();
        assert_eq!(
            err.as_db_error().map(|e| e.code()),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE)
        );
        drop(role);
        let mut wrong = config.clone();
        wrong.password("wrong");
        let err = wrong
            .connect(NoTls)
            .await
            .err()
            .expect("wrong role password refused");
        assert_eq!(
            err.as_db_error().map(|e| e.code()),
            Some(&SqlState::INVALID_PASSWORD)
        );

        // Seeding again (role exists, database exists) resets the data and the password.
        let small = SeedOptions {
            customers: 10,
            orders: 100,
            rng_seed: 1,
        };
        let summary = seed_shop(&cluster, &small, "tollgate_upstream", "second-pw")
            .await
            .unwrap();
        assert_eq!((summary.customers, summary.orders), (10, 100));
        let mut config2 = config.clone();
        config2.password("second-pw");
        let (role, conn) = config2
            .connect(NoTls)
            .await
            .expect("login with the new password");
        tokio::spawn(conn);
        let n: i64 = role
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 100);

        // A superuser role is refused.
        let err = seed_shop(&cluster, &small, "postgres", "x")
            .await
            .unwrap_err();
        assert!(matches!(err, SeedError::InvalidRole { .. }));
    }
}
