#!/bin/sh
# Runs once, when the postgres container initialises its data directory: the login role tollgate
# uses (password from SHOP_PASSWORD) and a small `shop` database like the demo's.
set -eu
: "${SHOP_PASSWORD:?SHOP_PASSWORD is required}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v shop_password="$SHOP_PASSWORD" <<'SQL'
CREATE ROLE tollgate_shop LOGIN PASSWORD :'shop_password';
CREATE DATABASE shop OWNER tollgate_shop;
SQL
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname shop <<'SQL'
SET ROLE tollgate_shop;
CREATE TABLE customers (id int PRIMARY KEY, name text, email text, phone text, ssn text, region text);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, amount numeric(10,2), created_at timestamptz);
CREATE TABLE secrets (id int PRIMARY KEY, api_key text);
INSERT INTO customers
  SELECT i, 'Customer ' || i, 'customer' || i || '@example.org', '+1-555-01' || lpad(i::text, 2, '0'),
         lpad((100000000 + i)::text, 9, '0'), (ARRAY['north', 'south', 'east', 'west'])[1 + i % 4]
  FROM generate_series(1, 100) AS i;
INSERT INTO orders
  SELECT i, 1 + i % 100, (i % 500) + 0.99, now() - make_interval(days => i % 365)
  FROM generate_series(1, 1000) AS i;
INSERT INTO secrets VALUES (1, 'sk_live_example_not_a_real_key');
SQL
