"""One rule row per detection, enabled, with no overrides: admins find every kind in the admin,
its defaults shown beside the configuration."""

from django.db import migrations

KINDS = ("critical-event", "key-exposed", "failure-burst", "volume-spike", "after-hours-unusual", "new-principal",
         "finding")


def create(apps, schema_editor):
    AlertRule = apps.get_model("alerts", "AlertRule")
    for kind in KINDS:
        AlertRule.objects.get_or_create(kind=kind, defaults={"enabled": True, "config": {}})


class Migration(migrations.Migration):
    dependencies = [("alerts", "0001_initial")]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
