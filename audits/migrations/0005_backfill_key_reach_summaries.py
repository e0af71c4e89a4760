"""Fill the per-key principal and service summaries of an existing database from its rollups."""

from django.db import migrations

BACKFILL = [
    f"""
    INSERT INTO audits_key{name}day (day, account_id, region, key, {name}, count, first_seen, last_seen)
    SELECT day, account_id, region, key, {name}, SUM(count), MIN(first_seen), MAX(last_seen)
    FROM audits_dailyrollup GROUP BY day, account_id, region, key, {name}
    """
    for name in ("principal", "service")
]

CLEAR = ["DELETE FROM audits_keyprincipalday", "DELETE FROM audits_keyserviceday"]


class Migration(migrations.Migration):
    dependencies = [("audits", "0004_key_reach_summaries")]

    # Elidable: a fresh database has no rows for it (see 0001_squashed_0014_quarantine_once).
    operations = [migrations.RunSQL(tuple(BACKFILL), reverse_sql=tuple(CLEAR), elidable=True)]
