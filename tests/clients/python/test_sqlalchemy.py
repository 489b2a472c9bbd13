"""SQLAlchemy 2 ORM (psycopg 3 dialect) through tollgate: dialect initialisation on connect,
table reflection (automap of `orders`, inspector on `customers`), a writer session doing select,
insert, update, delete; the analyst refused cleanly (sqlalchemy.exc.ProgrammingError wrapping
psycopg's InsufficientPrivilege, SQLSTATE 42501 and the policy message intact); masking through
the ORM."""

import decimal

import sqlalchemy
from sqlalchemy import create_engine, func, inspect, select
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.automap import automap_base
from sqlalchemy.orm import Session

from common import assert_masked_customer, assert_policy_message, case, env, run

MARK = decimal.Decimal("7654.32")


def engine_for(key):
    url = env(key).replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, pool_pre_ping=True)


WRITER = engine_for("TOLLGATE_PG_WRITER_URL")
ANALYST = engine_for("TOLLGATE_PG_ANALYST_URL")


def reflect(engine):
    Base = automap_base()
    Base.prepare(autoload_with=engine, reflection_options={"only": ["orders", "customers"]})
    return Base.classes.orders, Base.classes.customers


@case
def reflection():
    Order, Customer = reflect(WRITER)
    cols = [c.name for c in Order.__table__.columns]
    assert cols == ["id", "customer_id", "amount", "created_at"], cols
    assert [c.name for c in Order.__table__.primary_key] == ["id"]
    fks = list(Order.__table__.foreign_keys)
    assert fks and fks[0].column.table.name == "customers", fks
    insp = inspect(ANALYST)
    assert set(insp.get_table_names()) >= {"customers", "orders"}
    ccols = {c["name"]: c for c in insp.get_columns("customers")}
    assert set(ccols) == {"id", "name", "email", "phone", "ssn", "region"}
    assert not ccols["email"]["nullable"]
    idx = insp.get_indexes("orders")
    assert any(i["column_names"] == ["customer_id"] for i in idx), idx


@case
def writer_session_crud():
    Order, Customer = reflect(WRITER)
    with Session(WRITER) as s:
        before = s.scalar(select(func.count()).select_from(Order))
        o = Order(customer_id=1, amount=MARK)
        s.add(o)
        s.add_all([Order(customer_id=i, amount=MARK) for i in range(2, 6)])
        s.commit()
        assert o.id is not None
        assert s.scalar(select(func.count()).select_from(Order)) == before + 5
        got = s.get(Order, o.id)
        assert got.amount == MARK and got.created_at is not None
        got.amount = MARK + 1
        s.commit()
        assert s.scalar(select(Order.amount).where(Order.id == o.id)) == MARK + 1
        # customers read masked through the ORM, including via the relationship
        cust = s.get(Customer, 1)
        assert_masked_customer(cust.email, cust.phone, cust.ssn)
        rows = s.scalars(select(Order).where(Order.customer_id == 1).limit(3)).all()
        assert rows and rows[0].customers.id == 1
        assert_masked_customer(rows[0].customers.email, None, None)
        # refused write inside the ORM session: exception, rollback, session usable
        cust.name = "changed"
        try:
            s.commit()
        except ProgrammingError as e:
            assert e.orig.sqlstate == "42501", e.orig.sqlstate
            assert_policy_message(e.orig.diag.message_primary, "customers")
            s.rollback()
        else:
            raise AssertionError("UPDATE customers not refused for writer")
        for row in s.scalars(select(Order).where(Order.amount.in_([MARK, MARK + 1]))).all():
            s.delete(row)
        s.commit()
        assert s.scalar(select(func.count()).select_from(Order)) == before


@case
def analyst_reads_and_is_refused():
    Order, Customer = reflect(ANALYST)
    with Session(ANALYST) as s:
        n = s.scalar(select(func.count()).select_from(Order))
        assert n >= 50000
        for c in s.scalars(select(Customer).order_by(Customer.id).limit(10)):
            assert_masked_customer(c.email, c.phone, c.ssn)
        by_region = s.execute(
            select(Customer.region, func.count()).group_by(Customer.region)
        ).all()
        assert sum(k for _, k in by_region) == 5000
        s.add(Order(customer_id=1, amount=MARK))
        try:
            s.commit()
        except ProgrammingError as e:
            assert isinstance(e, DBAPIError)
            assert e.orig.sqlstate == "42501", e.orig.sqlstate
            assert_policy_message(e.orig.diag.message_primary, "orders")
            assert "tollgate:" in str(e) and "rule:" in str(e), str(e)
            s.rollback()
        else:
            raise AssertionError("analyst INSERT not refused")
        try:
            s.execute(sqlalchemy.text("SELECT api_key FROM secrets")).all()
        except ProgrammingError as e:
            assert e.orig.sqlstate == "42501"
            assert_policy_message(e.orig.diag.message_primary, "secrets")
            s.rollback()
        else:
            raise AssertionError("secrets not refused")
        assert s.scalar(select(func.count()).select_from(Customer)) == 5000


if __name__ == "__main__":
    try:
        run(f"SQLAlchemy {sqlalchemy.__version__} (psycopg)")
    finally:
        WRITER.dispose()
        ANALYST.dispose()
