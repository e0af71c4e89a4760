# kmsdash's own calls: flagged on events, counted apart in the rollup (by `own`), left out of the summaries.

import audits.fields
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audits', '0019_api_turns'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='dailyrollup',
            name='rollup_unique_dims',
        ),
        migrations.AddField(
            model_name='dailyrollup',
            name='own',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='event',
            name='own',
            field=models.BooleanField(default=False),
        ),
        migrations.AddConstraint(
            model_name='dailyrollup',
            constraint=models.UniqueConstraint(audits.fields.UniqueKey('day', 'account_id', 'region', 'key', 'operation', 'principal', 'service', 'error_code', 'after_hours', 'own'), name='rollup_unique_dims'),
        ),
    ]
