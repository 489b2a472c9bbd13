//! Adversarial table-driven tests of data-modifying statements: `secrets` reached through INSERT ... SELECT, RETURNING subqueries, ON CONFLICT, UPDATE ... FROM, DELETE ... USING, MERGE sources and conditions; and the Select a statement needs on its own target.

use super::tests_support::{case, run_table, Case};
use super::StatementKind as K;

fn dml() -> Vec<Case> {
    vec![
        case(
            "INSERT INTO orders (id) VALUES (1) RETURNING (SELECT s FROM secrets LIMIT 1)",
            K::Insert,
            &["insert orders", "select orders", "select secrets"],
        ),
        case(
            "UPDATE orders SET total = 0 WHERE id = 1 RETURNING (SELECT s FROM secrets LIMIT 1)",
            K::Update,
            &["update orders", "select orders", "select secrets"],
        ),
        case(
            "DELETE FROM orders WHERE id = 1 RETURNING (SELECT max(s) FROM secrets)",
            K::Delete,
            &["delete orders", "select orders", "select secrets"],
        ),
        case(
            "INSERT INTO orders SELECT * FROM secrets",
            K::Insert,
            &["insert orders", "select secrets"],
        ),
        case(
            "INSERT INTO orders (id) VALUES ((SELECT id FROM secrets LIMIT 1))",
            K::Insert,
            &["insert orders", "select secrets"],
        ),
        case(
            "INSERT INTO orders (id) SELECT id FROM secrets ON CONFLICT DO NOTHING",
            K::Insert,
            &["insert orders", "select secrets"],
        ),
        case(
            "INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET total = (SELECT 1 FROM secrets LIMIT 1)",
            K::Insert,
            &["insert orders", "update orders", "select orders", "select secrets"],
        ),
        case(
            "INSERT INTO orders (id, total) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total",
            K::Insert,
            &["insert orders", "update orders"],
        ),
        case(
            "INSERT INTO orders (id, total) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET total = 3 WHERE orders.total < 3",
            K::Insert,
            &["insert orders", "update orders", "select orders"],
        ),
        case(
            "INSERT INTO orders (id) VALUES (1) ON CONFLICT (id) WHERE id > (SELECT 1 FROM secrets) DO NOTHING",
            K::Insert,
            &["insert orders", "select secrets"],
        ),
        case("INSERT INTO orders DEFAULT VALUES RETURNING *", K::Insert, &["insert orders", "select orders"]),
        case(
            "INSERT INTO secrets AS s (id) OVERRIDING SYSTEM VALUE VALUES (1)",
            K::Insert,
            &["insert secrets"],
        ),
        case(
            "UPDATE orders SET total = s.id FROM secrets s WHERE s.id = orders.id",
            K::Update,
            &["update orders", "select orders", "select secrets"],
        ),
        case(
            "UPDATE orders SET (total, customer_id) = (SELECT id, id FROM secrets LIMIT 1)",
            K::Update,
            &["update orders", "select orders", "select secrets"],
        ),
        case("UPDATE orders SET total = total + 1", K::Update, &["update orders", "select orders"]),
        case("UPDATE orders SET total = 1, customer_id = DEFAULT", K::Update, &["update orders"]),
        case("UPDATE ONLY secrets SET s = $1::text", K::Update, &["update secrets"]),
        case(
            "DELETE FROM orders USING secrets WHERE secrets.id = orders.id",
            K::Delete,
            &["delete orders", "select orders", "select secrets"],
        ),
        case("DELETE FROM orders", K::Delete, &["delete orders"]),
        case("DELETE FROM secrets WHERE CURRENT OF c", K::Delete, &["delete secrets", "select secrets"]),
        case(
            "MERGE INTO orders o USING secrets s ON o.id = s.id WHEN MATCHED THEN UPDATE SET total = 0",
            K::Merge,
            &["select orders", "update orders", "select secrets"],
        ),
        case(
            "MERGE INTO secrets t USING orders o ON t.id = o.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED THEN INSERT VALUES (o.id, 'x')",
            K::Merge,
            &["select secrets", "delete secrets", "insert secrets", "select orders"],
        ),
        case(
            "MERGE INTO orders o USING (SELECT * FROM secrets) s ON o.id = s.id WHEN NOT MATCHED BY SOURCE THEN DO NOTHING",
            K::Merge,
            &["select orders", "select secrets"],
        ),
        case(
            "MERGE INTO orders o USING customers c ON o.id = c.id WHEN MATCHED AND EXISTS (SELECT FROM secrets) THEN UPDATE SET total = 1 RETURNING merge_action(), (SELECT 1 FROM secrets)",
            K::Merge,
            &["select orders", "update orders", "select customers", "select secrets"],
        ),
    ]
}

#[test]
fn adversarial_dml() {
    assert!(run_table(dml()) >= 20);
}
