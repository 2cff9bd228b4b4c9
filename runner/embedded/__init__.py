"""The embedded warehouse: a fakesnow server process on loopback (emulator; its HTTP front,
server, answers large results in chunks as Snowflake does), seeded with plain Snowflake SQL
(demo: the churn tables and their feature code; synthetic: the benchmark's table).

Production code reaches it only through runner.data.open_warehouse (data.backend=embedded),
over the wire, with the real connector and Snowpark, as it reaches a Snowflake account.
"""
