"""Demo warehouse data and its feature definition.

The seed is plain Snowflake SQL (generator, seq8, hash), deterministic for a
given seed on a given engine, so the same script runs on a real account.
The feature definition uses Snowpark DataFrame operations only.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

# hash(x, seed) % n is taken before abs() and cast to int: fakesnow's hash is
# unsigned and overflows on negation otherwise.
_SEED_SQL = [
    "create database if not exists {db}",
    "create schema if not exists {db}.{schema}",
    """create or replace table {db}.{schema}.CUSTOMERS as
select c.CUSTOMER_ID,
       c.SIGNUP_DATE,
       case abs(hash(c.CUSTOMER_ID, {seed}, 3) % 3)::int when 0 then 'basic' when 1 then 'pro' else 'team' end as PLAN,
       case abs(hash(c.CUSTOMER_ID, {seed}, 4) % 4)::int when 0 then 'EU' when 1 then 'US' when 2 then 'APAC' else 'LATAM' end as REGION,
       iff(abs(hash(c.CUSTOMER_ID, {seed}, 5) % 10000)::int / 10000.0
           < 0.08 + 0.7 * (1 - c.LATENT) * (1 - c.LATENT), 1, 0) as CHURNED,
       c.LATENT
from (select seq8() + 1 as CUSTOMER_ID,
             abs(hash(seq8(), {seed}, 1) % 10000)::int / 10000.0 as LATENT,
             dateadd(day, -(abs(hash(seq8(), {seed}, 2) % 1500)::int), to_date('2024-01-01')) as SIGNUP_DATE
      from table(generator(rowcount => {customers}))) c""",
    # Engaged customers (high LATENT) spend more and were seen more recently.
    """create or replace table {db}.{schema}.EVENTS as
select e.EVENT_ID,
       e.CUSTOMER_ID,
       dateadd(minute, -(abs(hash(e.EVENT_ID, {seed}, 12) % 525600)::int * (1.3 - c.LATENT) / 1.3)::int,
               to_timestamp('2024-01-01 00:00:00')) as EVENT_TS,
       case abs(hash(e.EVENT_ID, {seed}, 13) % 10)::int when 0 then 'purchase' when 1 then 'cart'
            when 2 then 'support' else 'view' end as EVENT_TYPE,
       round(abs(hash(e.EVENT_ID, {seed}, 14) % 10000)::int / 100.0 * (0.5 + c.LATENT), 2) as AMOUNT
from (select seq8() + 1 as EVENT_ID,
             abs(hash(seq8(), {seed}, 11) % {customers})::int + 1 as CUSTOMER_ID
      from table(generator(rowcount => {events}))) e
join {db}.{schema}.CUSTOMERS c on c.CUSTOMER_ID = e.CUSTOMER_ID""",
    # The latent driver stays in the seed only: features never see it.
    "alter table {db}.{schema}.CUSTOMERS drop column LATENT",
]


def seed_sql(database: str, schema: str, demo: DictConfig) -> list[str]:
    params = dict(
        db=database, schema=schema, seed=int(demo.seed), customers=int(demo.customers), events=int(demo.events)
    )
    return [stmt.format(**params) for stmt in _SEED_SQL]


def run_seed(session: Any, database: str, schema: str, statements: list[str]) -> str:
    """Run a seed script; return its digest, the data's version."""
    for stmt in statements:
        session.sql(stmt).collect()
    session.sql(f"use schema {database}.{schema}").collect()
    return "seed:" + hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()[:16]


def seed_demo(session: Any, database: str, schema: str, demo: DictConfig) -> str:
    """Create the demo tables; return a digest of the script, the data's version."""
    return run_seed(session, database, schema, seed_sql(database, schema, demo))


def churn_features(session: Any, cfg: DictConfig, reference_date: str = "2024-01-01") -> Any:
    """One row per customer: spend, activity, recency and gaps between events."""
    from snowflake.snowpark import Window
    from snowflake.snowpark import functions as F

    ref = F.to_date(F.lit(reference_date))
    events = session.table("EVENTS")
    by_customer = Window.partition_by("CUSTOMER_ID").order_by("EVENT_TS")
    events = events.with_column("GAP_HOURS", F.datediff("hour", F.lag("EVENT_TS").over(by_customer), F.col("EVENT_TS")))
    events = events.with_column("RECENT", F.iff(F.datediff("day", F.col("EVENT_TS"), ref) <= 30, F.lit(1), F.lit(0)))
    activity = events.group_by("CUSTOMER_ID").agg(
        F.count("*").alias("N_EVENTS"),
        F.sum("AMOUNT").alias("TOTAL_AMOUNT"),
        F.avg("AMOUNT").alias("AVG_AMOUNT"),
        F.max("AMOUNT").alias("MAX_AMOUNT"),
        F.sum(F.iff(F.col("EVENT_TYPE") == "purchase", 1, 0)).alias("N_PURCHASES"),
        F.sum(F.iff(F.col("EVENT_TYPE") == "support", 1, 0)).alias("N_SUPPORT"),
        F.count_distinct("EVENT_TYPE").alias("N_EVENT_TYPES"),
        F.sum("RECENT").alias("EVENTS_LAST_30D"),
        F.avg("GAP_HOURS").alias("AVG_GAP_HOURS"),
        F.max("EVENT_TS").alias("LAST_EVENT_TS"),
    )
    customers = session.table("CUSTOMERS")
    features = customers.join(activity, on="CUSTOMER_ID", how="left")
    features = features.with_column("TENURE_DAYS", F.datediff("day", F.col("SIGNUP_DATE"), ref))
    features = features.with_column("DAYS_SINCE_LAST_EVENT", F.datediff("day", F.col("LAST_EVENT_TS"), ref))
    return features.select(
        "CUSTOMER_ID",
        "PLAN",
        "REGION",
        "TENURE_DAYS",
        "N_EVENTS",
        "TOTAL_AMOUNT",
        "AVG_AMOUNT",
        "MAX_AMOUNT",
        "N_PURCHASES",
        "N_SUPPORT",
        "N_EVENT_TYPES",
        "EVENTS_LAST_30D",
        "AVG_GAP_HOURS",
        "DAYS_SINCE_LAST_EVENT",
        "CHURNED",
    )
