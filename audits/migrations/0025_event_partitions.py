"""Event.critical and RawBlock.critical, filled; then, on PostgreSQL with KMSDASH_EVENT_PARTITIONS=daily
(the default), both tables converted into tables partitioned by criticality and UTC day, every row
and id kept (audits/partitions.py). The conversion copies the tables once: on a large database,
plan for it (about the time of a plain INSERT ... SELECT of the events and their indexes)."""

from django.conf import settings
from django.db import migrations, models

import audits.fields


def fill(apps, schema_editor):
    from audits.cloudtrail import CRITICAL_EVENT_NAMES

    Event = apps.get_model("audits", "Event")
    RawBlock = apps.get_model("audits", "RawBlock")
    Event.objects.filter(event_name__in=sorted(CRITICAL_EVENT_NAMES)).update(critical=True)
    RawBlock.objects.filter(
        pk__in=Event.objects.filter(critical=True, raw_block__isnull=False).values("raw_block_id")
    ).update(critical=True)


def partition(apps, schema_editor):
    from audits import partitions

    if schema_editor.connection.vendor == "postgresql" and settings.KMSDASH_EVENT_PARTITIONS == "daily":
        partitions.convert(schema_editor, apps.get_model("audits", "Event"), apps.get_model("audits", "RawBlock"))


def unpartition(apps, schema_editor):
    from audits import partitions

    if partitions.is_partitioned():
        partitions.unconvert(schema_editor, apps.get_model("audits", "Event"), apps.get_model("audits", "RawBlock"))


class Migration(migrations.Migration):
    dependencies = [("audits", "0024_alert_candidates")]

    operations = [
        migrations.AddField(model_name="event", name="critical", field=audits.fields.CriticalFlag()),
        migrations.AddField(model_name="rawblock", name="critical", field=models.BooleanField(default=False)),
        migrations.AddIndex(
            model_name="dailyrollup",
            index=models.Index(condition=models.Q(("own", True)), fields=["day"], name="rollup_own_day"),
        ),
        migrations.RunPython(fill, migrations.RunPython.noop),
        migrations.RunPython(partition, unpartition),
    ]
