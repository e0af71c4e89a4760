"""Fill the hourly summaries of an existing database from its events.

Events older than the retention purge's horizon are gone (audits/retention.py), so on a database
that has purged, the hours before the horizon count only the critical events kept.
"""

from django.db import migrations

COUNTS = (
    "count(*), count(*) FILTER (WHERE error_code <> ''), count(*) FILTER (WHERE after_hours), "
    "min(event_time), max(event_time)"
)
HOUR = {
    "postgresql": "date_trunc('hour', event_time AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
    "sqlite": "strftime('%Y-%m-%d %H:00:00', event_time)",
}


def statements(vendor: str) -> list[str]:
    hour = HOUR[vendor]
    return [
        f"""
        INSERT INTO audits_keyhour (hour, account_id, region, key, calls, failed, after_hours_calls, first_seen,
                                    last_seen)
        SELECT {hour}, recipient_account_id, region, key, {COUNTS}
        FROM audits_event GROUP BY 1, recipient_account_id, region, key
        """,
        f"""
        INSERT INTO audits_keyprincipalhour (hour, account_id, region, key, principal, calls, failed,
                                             after_hours_calls, first_seen, last_seen)
        SELECT {hour}, recipient_account_id, region, key, principal, {COUNTS}
        FROM audits_event GROUP BY 1, recipient_account_id, region, key, principal
        """,
    ]


def backfill(apps, schema_editor):
    for statement in statements(schema_editor.connection.vendor):
        # No parameters: the SQL's '%' are strftime's, not placeholders.
        schema_editor.execute(statement, params=None)


def clear(apps, schema_editor):
    schema_editor.execute("DELETE FROM audits_keyhour")
    schema_editor.execute("DELETE FROM audits_keyprincipalhour")


class Migration(migrations.Migration):
    dependencies = [("audits", "0015_hourly_summaries")]

    operations = [migrations.RunPython(backfill, clear)]
