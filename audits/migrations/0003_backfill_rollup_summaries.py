"""Fill the rollup summaries of an existing database from its rollups (which equal its events)."""

from django.db import migrations

GENERATE = "substr(operation, 1, 15) = 'GenerateDataKey'"

BACKFILL = [
    f"""
    INSERT INTO audits_keyday (day, account_id, region, key, calls, encrypt, decrypt, generate, failed,
                               after_hours_calls, first_seen, last_seen)
    SELECT day, account_id, region, key, SUM(count),
           SUM(CASE WHEN operation = 'Encrypt' THEN count ELSE 0 END),
           SUM(CASE WHEN operation = 'Decrypt' THEN count ELSE 0 END),
           SUM(CASE WHEN {GENERATE} THEN count ELSE 0 END),
           SUM(CASE WHEN error_code <> '' THEN count ELSE 0 END),
           SUM(CASE WHEN after_hours THEN count ELSE 0 END),
           MIN(first_seen), MAX(last_seen)
    FROM audits_dailyrollup GROUP BY day, account_id, region, key
    """,
    """
    INSERT INTO audits_operationday (day, account_id, region, operation, error_code, after_hours, count,
                                     first_seen, last_seen)
    SELECT day, account_id, region, operation, error_code, after_hours, SUM(count), MIN(first_seen), MAX(last_seen)
    FROM audits_dailyrollup GROUP BY day, account_id, region, operation, error_code, after_hours
    """,
    """
    INSERT INTO audits_principalday (day, account_id, region, principal, count, first_seen, last_seen)
    SELECT day, account_id, region, principal, SUM(count), MIN(first_seen), MAX(last_seen)
    FROM audits_dailyrollup GROUP BY day, account_id, region, principal
    """,
]

CLEAR = ["DELETE FROM audits_keyday", "DELETE FROM audits_operationday", "DELETE FROM audits_principalday"]


class Migration(migrations.Migration):
    dependencies = [("audits", "0002_rollup_summaries")]

    # Elidable: a fresh database has no rows for it (see 0001_squashed_0014_quarantine_once).
    operations = [migrations.RunSQL(tuple(BACKFILL), reverse_sql=tuple(CLEAR), elidable=True)]
