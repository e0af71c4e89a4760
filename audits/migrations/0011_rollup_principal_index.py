"""Rollups filtered by principal read that principal's rows through a hash index (audits/fields.py)."""

from django.db import migrations, models

import audits.fields


class Migration(migrations.Migration):

    dependencies = [
        ('audits', '0010_backfill_bucketday'),
    ]

    operations = [
        migrations.AlterField(
            model_name='dailyrollup',
            name='principal',
            field=audits.fields.HashedTextField(max_length=2048),
        ),
        migrations.AddIndex(
            model_name='dailyrollup',
            index=models.Index(audits.fields.HashText('principal'), models.F('day'), name='rollup_principal_day'),
        ),
    ]
