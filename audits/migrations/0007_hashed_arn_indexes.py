"""Key and principal indexes on a 4-byte hash of the ARN (audits/fields.py) instead of the ARN."""

from django.db import migrations, models

import audits.fields


class Migration(migrations.Migration):

    dependencies = [
        ('audits', '0006_raw_blocks'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='event',
            name='event_key_time',
        ),
        migrations.RemoveIndex(
            model_name='event',
            name='event_principal_time',
        ),
        migrations.AlterField(
            model_name='event',
            name='key',
            field=audits.fields.HashedTextField(blank=True, help_text="Key ARN, else the alias or id given, else ''.", max_length=2048),
        ),
        migrations.AlterField(
            model_name='event',
            name='principal',
            field=audits.fields.HashedTextField(blank=True, max_length=2048),
        ),
        migrations.AddIndex(
            model_name='event',
            index=models.Index(audits.fields.HashText('key'), models.F('event_time'), name='event_key_time'),
        ),
        migrations.AddIndex(
            model_name='event',
            index=models.Index(audits.fields.HashText('principal'), models.F('event_time'), name='event_principal_time'),
        ),
    ]
