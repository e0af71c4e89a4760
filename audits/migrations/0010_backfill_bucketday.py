"""Fill the S3 bucket summary of an existing database from its events (rollups have no bucket).

Its `object_calls` condition is audits.cloudtrail.s3_context_names_object in each backend's SQL:
`aws:s3:arn` is a string with a '/' after its first ':s3:::'. A pattern finds a '/' after any
':s3:::', hence after the first one too. SQLite's GLOB, unlike its LIKE, is case-sensitive.
"""

from django.db import migrations

COLUMNS = "day, account_id, region, key, s3_bucket, count, object_calls, first_seen, last_seen"

BACKFILL = {
    "postgresql": f"""
    INSERT INTO audits_bucketday ({COLUMNS})
    SELECT (event_time AT TIME ZONE 'UTC')::date AS day, recipient_account_id, region, key, s3_bucket, count(*),
           count(*) FILTER (WHERE jsonb_typeof(encryption_context -> 'aws:s3:arn') = 'string'
                            AND encryption_context ->> 'aws:s3:arn' LIKE '%:s3:::%/%'),
           min(event_time), max(event_time)
    FROM audits_event WHERE s3_bucket <> ''
    GROUP BY 1, recipient_account_id, region, key, s3_bucket
    """,
    "sqlite": f"""
    INSERT INTO audits_bucketday ({COLUMNS})
    SELECT date(event_time) AS day, recipient_account_id, region, key, s3_bucket, count(*),
           count(*) FILTER (WHERE json_type(encryption_context, '$."aws:s3:arn"') = 'text'
                            AND json_extract(encryption_context, '$."aws:s3:arn"') GLOB '*:s3:::*/*'),
           min(event_time), max(event_time)
    FROM audits_event WHERE s3_bucket <> ''
    GROUP BY 1, recipient_account_id, region, key, s3_bucket
    """,
}


def backfill(apps, schema_editor):
    # No parameters: the SQL's '%' are LIKE's, not placeholders.
    schema_editor.execute(BACKFILL[schema_editor.connection.vendor], params=None)


def clear(apps, schema_editor):
    schema_editor.execute("DELETE FROM audits_bucketday")


class Migration(migrations.Migration):
    dependencies = [("audits", "0009_bucketday")]

    # Elidable: a fresh database has no rows for it (see 0001_squashed_0014_quarantine_once).
    operations = [migrations.RunPython(backfill, clear, elidable=True)]
