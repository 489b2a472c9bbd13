// PostgreSQL JDBC (pgjdbc) through tollgate, with prepareThreshold at its default (5: server-side
// named statements from the 5th execution on) and at 0 (unnamed statements only): metadata
// (DatabaseMetaData, as tools call it on connect), PreparedStatement, batches, fetchSize
// (portal suspension inside a transaction), savepoints, masking, and refusals as
// PSQLException with SQLState 42501 and the policy message.
import java.math.BigDecimal;
import java.net.URI;
import java.sql.*;
import java.util.*;
import java.util.regex.Pattern;
import org.postgresql.util.PSQLException;

public class JdbcClient {
    static final Pattern EMAIL = Pattern.compile("^\\*\\*\\*@example\\.(org|net|com)$");
    static final Pattern PHONE = Pattern.compile("^\\*\\*\\*\\d{4}$");
    static final BigDecimal MARK = new BigDecimal("5432.10");
    static int failed = 0, passed = 0;
    static String title;

    interface Case { void run() throws Exception; }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static void masked(String email, String phone, String ssn) {
        check(email != null && EMAIL.matcher(email).matches(), "email not masked: " + email);
        check(phone == null || PHONE.matcher(phone).matches(), "phone not masked: " + phone);
        check(ssn == null || ssn.equals("REDACTED"), "ssn not masked: " + ssn);
    }

    static void policyMessage(SQLException e, String what) {
        check("42501".equals(e.getSQLState()), "SQLState " + e.getSQLState() + ": " + e.getMessage());
        check(e instanceof PSQLException, "not a PSQLException: " + e.getClass());
        String m = ((PSQLException) e).getServerErrorMessage().getMessage();
        check(m.contains("tollgate:") && m.matches("(?s).*\\(rule: [^)]+\\).*"), "policy message: " + m);
        check(what == null || m.contains(what), "message lacks " + what + ": " + m);
    }

    static void refused(Connection c, String sql, String what) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
        } catch (SQLException e) {
            policyMessage(e, what);
            return;
        }
        throw new AssertionError("not refused: " + sql);
    }

    static void runCase(String name, Case body) {
        long start = System.nanoTime();
        try {
            body.run();
            passed++;
            System.out.printf("ok   %s: %s (%.2fs)%n", title, name, (System.nanoTime() - start) / 1e9);
        } catch (Throwable t) {
            failed++;
            System.out.printf("FAIL %s: %s%n", title, name);
            t.printStackTrace(System.out);
        }
    }

    // postgresql://user:token@host:port/db?... -> jdbc URL + properties
    static Connection connect(String envKey, String prepareThreshold) throws Exception {
        URI u = new URI(System.getenv(envKey));
        String[] ui = u.getUserInfo().split(":", 2);
        Properties p = new Properties();
        p.setProperty("user", ui[0]);
        p.setProperty("password", ui[1]);
        p.setProperty("sslmode", "disable");
        p.setProperty("ApplicationName", "tollgate-jdbc-test");
        if (prepareThreshold != null) p.setProperty("prepareThreshold", prepareThreshold);
        return DriverManager.getConnection("jdbc:postgresql://" + u.getHost() + ":" + u.getPort() + u.getPath(), p);
    }

    static void suite(String threshold) {
        String t = threshold == null ? "default" : threshold;
        runCase("metadata[prepareThreshold=" + t + "]", () -> {
            try (Connection c = connect("TOLLGATE_PG_ANALYST_URL", threshold)) {
                DatabaseMetaData md = c.getMetaData();
                check(md.getDatabaseProductName().equals("PostgreSQL"), md.getDatabaseProductName());
                Set<String> tables = new HashSet<>();
                try (ResultSet rs = md.getTables(null, "public", "%", new String[] {"TABLE"})) {
                    while (rs.next()) tables.add(rs.getString("TABLE_NAME"));
                }
                check(tables.containsAll(List.of("customers", "orders")), "tables: " + tables);
                List<String> cols = new ArrayList<>();
                try (ResultSet rs = md.getColumns(null, "public", "orders", "%")) {
                    while (rs.next()) cols.add(rs.getString("COLUMN_NAME"));
                }
                check(cols.equals(List.of("id", "customer_id", "amount", "created_at")), "columns: " + cols);
                try (ResultSet rs = md.getPrimaryKeys(null, "public", "orders")) {
                    check(rs.next() && rs.getString("COLUMN_NAME").equals("id"), "primary key");
                }
            }
        });
        runCase("prepared_masked[prepareThreshold=" + t + "]", () -> {
            try (Connection c = connect("TOLLGATE_PG_ANALYST_URL", threshold);
                 PreparedStatement ps = c.prepareStatement("SELECT id, email, phone, ssn FROM customers WHERE id = ?")) {
                for (int i = 1; i <= 8; i++) { // past the threshold: a named server-side statement
                    ps.setLong(1, i);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next() && rs.getLong(1) == i, "row " + i);
                        masked(rs.getString(2), rs.getString(3), rs.getString(4));
                    }
                }
                try (PreparedStatement bad = c.prepareStatement("SELECT api_key FROM secrets WHERE id = ?")) {
                    bad.setLong(1, 1);
                    bad.executeQuery();
                    throw new AssertionError("secrets not refused");
                } catch (SQLException e) {
                    policyMessage(e, "secrets");
                }
                ps.setLong(1, 42);
                try (ResultSet rs = ps.executeQuery()) { check(rs.next() && rs.getLong(1) == 42, "after refusal"); }
                try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT amount, created_at FROM orders WHERE id = 1")) {
                    check(rs.next() && rs.getBigDecimal(1) != null && rs.getTimestamp(2) != null, "orders types");
                }
            }
        });
        runCase("fetch_size_in_transaction[prepareThreshold=" + t + "]", () -> {
            try (Connection c = connect("TOLLGATE_PG_ANALYST_URL", threshold)) {
                c.setAutoCommit(false);
                try (PreparedStatement ps = c.prepareStatement("SELECT id FROM orders WHERE id <= ? ORDER BY id")) {
                    ps.setFetchSize(100);
                    ps.setLong(1, 750);
                    int n = 0;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) { n++; check(rs.getLong(1) == n, "order " + n); }
                    }
                    check(n == 750, "rows " + n);
                }
                try (Statement st = c.createStatement()) {
                    st.setFetchSize(300);
                    int n = 0;
                    try (ResultSet rs = st.executeQuery("SELECT id, email FROM customers ORDER BY id")) {
                        while (rs.next()) { n++; masked(rs.getString(2), null, null); }
                    }
                    // max_rows = 1000 for the analyst, counted across the portal's batches
                    check(n == 1000, "rows through fetchSize batches: " + n);
                }
                c.commit();
            }
        });
        runCase("writer_batch_savepoint[prepareThreshold=" + t + "]", () -> {
            try (Connection c = connect("TOLLGATE_PG_WRITER_URL", threshold)) {
                c.setAutoCommit(false);
                try (PreparedStatement ins = c.prepareStatement("INSERT INTO orders (customer_id, amount) VALUES (?, ?)")) {
                    for (int i = 1; i <= 20; i++) { ins.setLong(1, i); ins.setBigDecimal(2, MARK); ins.addBatch(); }
                    int[] counts = ins.executeBatch();
                    check(counts.length == 20, "batch size");
                }
                Savepoint sp = c.setSavepoint("before_customers");
                refused(c, "UPDATE customers SET name = 'x' WHERE id = 1", "customers");
                c.rollback(sp);
                try (PreparedStatement upd = c.prepareStatement("UPDATE orders SET amount = ? WHERE amount = ?")) {
                    upd.setBigDecimal(1, MARK.add(BigDecimal.ONE));
                    upd.setBigDecimal(2, MARK);
                    check(upd.executeUpdate() >= 20, "update count");
                }
                c.commit();
                try (PreparedStatement del = c.prepareStatement("DELETE FROM orders WHERE amount = ?")) {
                    del.setBigDecimal(1, MARK.add(BigDecimal.ONE));
                    check(del.executeUpdate() >= 20, "delete count");
                }
                c.commit();
            }
        });
        runCase("refusals[prepareThreshold=" + t + "]", () -> {
            try (Connection c = connect("TOLLGATE_PG_ANALYST_URL", threshold)) {
                refused(c, "SELECT * FROM secrets", "secrets");
                refused(c, "INSERT INTO orders (customer_id, amount) VALUES (1, 1)", "orders");
                try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM customers")) {
                    check(rs.next() && rs.getLong(1) == 5000, "count after refusals");
                }
            }
        });
    }

    public static void main(String[] args) throws Exception {
        Driver d = DriverManager.getDriver("jdbc:postgresql://x/y");
        title = "pgjdbc " + d.getMajorVersion() + "." + d.getMinorVersion() + " (" + org.postgresql.util.DriverInfo.DRIVER_FULL_NAME + ", Java " + System.getProperty("java.version") + ")";
        suite(null);
        suite("0");
        System.out.printf("%s: %d passed, %d failed%n", title, passed, failed);
        System.exit(failed == 0 ? 0 : 1);
    }
}
