"""The totals /metrics reads, computed once from the ledgers as they stand (kmsdash/totals.py).

From here on every writer keeps them in its own transactions. Run with the workers stopped
(docs/deploy.md, "Upgrading"): a batch committed between this read and the new code starting
would be missing from the totals for good.
"""

from django.db import migrations


def backfill(apps, schema_editor):
    from kmsdash import totals

    totals.rebuild(apps)


def forget(apps, schema_editor):
    apps.get_model("kmsdash", "Total").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("kmsdash", "0006_total"),
        ("audits", "0022_run_scope_failures_index"),
        ("notify", "0001_initial"),
    ]

    operations = [migrations.RunPython(backfill, forget)]
