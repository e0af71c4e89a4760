"""Leave room in each page of the rollup and summary tables for the new versions of their rows.

Every batch adds to counts that already exist. On PostgreSQL an UPDATE writes a new row version;
when the page has room and no indexed column changed (counts are not indexed), it stays in the
page (a HOT update) and the dead version is pruned in place. With full pages each update moves
the row to a new page and also writes new index entries: at 100,000 events the rollup table held
19,000 dead rows beside 28,000 live ones.
"""

from django.db import migrations

TABLES = (
    "audits_dailyrollup",
    "audits_keyday",
    "audits_operationday",
    "audits_principalday",
    "audits_keyprincipalday",
    "audits_keyserviceday",
)


def set_fillfactor(value):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET (fillfactor = {value})")

    return apply


class Migration(migrations.Migration):
    dependencies = [
        ("audits", "0007_hashed_arn_indexes"),
    ]

    operations = [migrations.RunPython(set_fillfactor(70), set_fillfactor(100))]
