"""audits 0001-0014 in one migration: the tables as 0014 left them, created directly.

A fresh database runs this one instead of the fourteen (Django's squashmigrations, then the fill
factor by hand). A database that applied all fourteen records this one as applied; one that applied
only some goes on through the remaining originals, which stay until every database has passed 0014.

What the originals did besides schema changes:
- the fill factor of the rollup and summary tables (0008, 0009) is kept, below: it is a property of
  the tables, not of their data;
- the backfills and rewrites (0003 and 0005 fill the summaries from the rollups, 0006 moves raw
  records into blocks, 0010 fills BucketDay from the events, 0013 gives raw blocks their last event
  time, 0014 removes repeated quarantine rows) are left out: this migration runs only where none of
  0001-0014 ran, so the tables it creates are empty and there is nothing to fill or rewrite. The
  originals mark them elidable for that reason, and keep running them where data exists.
"""

import audits.fields
import django.core.validators
import django.db.models.deletion
from django.db import migrations, models

# Rows of these tables are updated by every ingest batch: room in each page for the new versions
# keeps the updates HOT (see 0008_rollup_fillfactor).
FILLFACTOR_TABLES = (
    "audits_dailyrollup",
    "audits_keyday",
    "audits_operationday",
    "audits_principalday",
    "audits_keyprincipalday",
    "audits_keyserviceday",
    "audits_bucketday",
)


def set_fillfactor(value):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for table in FILLFACTOR_TABLES:
            schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET (fillfactor = {value})")

    return apply


class Migration(migrations.Migration):

    replaces = [
        ('audits', '0001_initial'),
        ('audits', '0002_rollup_summaries'),
        ('audits', '0003_backfill_rollup_summaries'),
        ('audits', '0004_key_reach_summaries'),
        ('audits', '0005_backfill_key_reach_summaries'),
        ('audits', '0006_raw_blocks'),
        ('audits', '0007_hashed_arn_indexes'),
        ('audits', '0008_rollup_fillfactor'),
        ('audits', '0009_bucketday'),
        ('audits', '0010_backfill_bucketday'),
        ('audits', '0011_rollup_principal_index'),
        ('audits', '0012_hashed_unique_keys'),
        ('audits', '0013_retention'),
        ('audits', '0014_quarantine_once'),
    ]

    initial = True

    dependencies = [
    ]

    operations = [
        migrations.CreateModel(
            name='IngestRun',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('lookup', 'LookupEvents'), ('s3', 'S3 log files'), ('files', 'Local files')], max_length=16)),
                ('account_id', models.CharField(blank=True, max_length=12)),
                ('region', models.CharField(blank=True, max_length=32)),
                ('window_start', models.DateTimeField(blank=True, null=True)),
                ('window_end', models.DateTimeField(blank=True, null=True)),
                ('status', models.CharField(choices=[('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('skipped', 'Skipped')], default='running', max_length=16)),
                ('started_at', models.DateTimeField(auto_now_add=True)),
                ('finished_at', models.DateTimeField(blank=True, null=True)),
                ('duration_seconds', models.FloatField(blank=True, null=True)),
                ('files', models.PositiveIntegerField(default=0)),
                ('pages', models.PositiveIntegerField(default=0)),
                ('records_read', models.PositiveBigIntegerField(default=0)),
                ('events_new', models.PositiveBigIntegerField(default=0)),
                ('duplicates', models.PositiveBigIntegerField(default=0)),
                ('ignored', models.PositiveBigIntegerField(default=0)),
                ('quarantined', models.PositiveBigIntegerField(default=0)),
                ('error', models.TextField(blank=True)),
                ('expired', models.PositiveBigIntegerField(default=0, help_text="Records older than the retention purge's horizon, not stored (audits/retention.py).")),
            ],
            options={
                'ordering': ['-started_at'],
                'indexes': [models.Index(fields=['kind', 'account_id', 'region', '-started_at'], name='run_scope_recent')],
            },
        ),
        migrations.CreateModel(
            name='Source',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('account_id', models.CharField(max_length=12, unique=True, validators=[django.core.validators.RegexValidator('^\\d{12}$', 'An AWS account id is 12 digits.')])),
                ('name', models.CharField(blank=True, max_length=200)),
                ('regions', models.JSONField(default=list, help_text='AWS regions to read, e.g. ["us-east-1"].')),
                ('role_arn', models.CharField(blank=True, max_length=2048)),
                ('external_id', models.CharField(blank=True, max_length=1224)),
                ('s3_bucket', models.CharField(blank=True, help_text="Bucket of the CloudTrail trail's log files.", max_length=63)),
                ('s3_prefix', models.CharField(blank=True, max_length=1024)),
                ('org_id', models.CharField(blank=True, help_text='Organization id, for organization trails.', max_length=34)),
                ('lookup_enabled', models.BooleanField(default=True, help_text='Read CloudTrail LookupEvents.')),
                ('enabled', models.BooleanField(default=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'ordering': ['account_id'],
            },
        ),
        migrations.CreateModel(
            name='KeyPrincipalDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('account_id', models.CharField(max_length=12)),
                ('region', models.CharField(max_length=32)),
                ('key', models.CharField(max_length=2048)),
                ('principal', models.CharField(max_length=2048)),
                ('count', models.BigIntegerField()),
                ('first_seen', models.DateTimeField()),
                ('last_seen', models.DateTimeField()),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('key', 'day', 'account_id', 'region', 'principal'), name='keyprincipalday_unique_dims')],
            },
        ),
        migrations.CreateModel(
            name='KeyServiceDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('account_id', models.CharField(max_length=12)),
                ('region', models.CharField(max_length=32)),
                ('key', models.CharField(max_length=2048)),
                ('service', models.CharField(max_length=256)),
                ('count', models.BigIntegerField()),
                ('first_seen', models.DateTimeField()),
                ('last_seen', models.DateTimeField()),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('key', 'day', 'account_id', 'region', 'service'), name='keyserviceday_unique_dims')],
            },
        ),
        migrations.CreateModel(
            name='Checkpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('lookup', 'LookupEvents'), ('s3', 'S3 log files'), ('files', 'Local files')], max_length=16)),
                ('account_id', models.CharField(max_length=12)),
                ('region', models.CharField(max_length=32)),
                ('high_watermark', models.DateTimeField()),
                ('updated_at', models.DateTimeField(auto_now=True)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('kind', 'account_id', 'region'), name='checkpoint_unique_scope')],
            },
        ),
        migrations.CreateModel(
            name='RawBlock',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('data', models.BinaryField()),
                ('last_event_time', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name='ProcessedObject',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('bucket', models.CharField(max_length=63)),
                ('key', models.CharField(max_length=1024)),
                ('etag', models.CharField(max_length=128)),
                ('records', models.PositiveIntegerField(default=0)),
                ('processed_at', models.DateTimeField(auto_now_add=True)),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('bucket', 'key', 'etag'), name='processed_object_unique')],
            },
        ),
        migrations.CreateModel(
            name='BucketDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('account_id', models.CharField(max_length=12)),
                ('region', models.CharField(max_length=32)),
                ('count', models.BigIntegerField()),
                ('first_seen', models.DateTimeField()),
                ('last_seen', models.DateTimeField()),
                ('key', models.CharField(max_length=2048)),
                ('s3_bucket', models.CharField(max_length=256)),
                ('object_calls', models.BigIntegerField()),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('day', 'account_id', 'region', 'key', 's3_bucket'), name='bucketday_unique_dims')],
            },
        ),
        migrations.CreateModel(
            name='KeyDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('account_id', models.CharField(max_length=12)),
                ('region', models.CharField(max_length=32)),
                ('key', models.CharField(max_length=2048)),
                ('calls', models.BigIntegerField()),
                ('encrypt', models.BigIntegerField()),
                ('decrypt', models.BigIntegerField()),
                ('generate', models.BigIntegerField(help_text='GenerateDataKey*')),
                ('failed', models.BigIntegerField()),
                ('after_hours_calls', models.BigIntegerField()),
                ('first_seen', models.DateTimeField()),
                ('last_seen', models.DateTimeField()),
            ],
            options={
                'indexes': [models.Index(fields=['key', 'day'], name='keyday_key_day')],
                'constraints': [models.UniqueConstraint(fields=('day', 'account_id', 'region', 'key'), name='keyday_unique_dims')],
            },
        ),
        migrations.CreateModel(
            name='DailyRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('account_id', models.CharField(max_length=12)),
                ('region', models.CharField(max_length=32)),
                ('key', models.CharField(max_length=2048)),
                ('operation', models.CharField(max_length=64)),
                ('principal', audits.fields.HashedTextField(max_length=2048)),
                ('service', models.CharField(max_length=256)),
                ('error_code', models.CharField(max_length=128)),
                ('after_hours', models.BooleanField()),
                ('count', models.BigIntegerField()),
                ('first_seen', models.DateTimeField()),
                ('last_seen', models.DateTimeField()),
            ],
            options={
                'indexes': [models.Index(fields=['key', 'day'], name='rollup_key_day'), models.Index(fields=['day'], name='rollup_day'), models.Index(audits.fields.HashText('principal'), models.F('day'), name='rollup_principal_day')],
                'constraints': [models.UniqueConstraint(audits.fields.UniqueKey('day', 'account_id', 'region', 'key', 'operation', 'principal', 'service', 'error_code', 'after_hours'), name='rollup_unique_dims')],
            },
        ),
        migrations.CreateModel(
            name='Event',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('recipient_account_id', models.CharField(max_length=12)),
                ('event_id', models.CharField(max_length=64)),
                ('event_time', models.DateTimeField()),
                ('event_name', models.CharField(max_length=64)),
                ('region', models.CharField(max_length=32)),
                ('key', audits.fields.HashedTextField(blank=True, help_text="Key ARN, else the alias or id given, else ''.", max_length=2048)),
                ('principal', audits.fields.HashedTextField(blank=True, max_length=2048)),
                ('principal_type', models.CharField(blank=True, max_length=32)),
                ('session_name', models.CharField(blank=True, max_length=256)),
                ('service', models.CharField(blank=True, help_text='userIdentity.invokedBy', max_length=256)),
                ('caller_account_id', models.CharField(blank=True, max_length=12)),
                ('source_ip', models.CharField(blank=True, max_length=256)),
                ('user_agent', models.CharField(blank=True, max_length=1024)),
                ('error_code', models.CharField(blank=True, max_length=128)),
                ('error_message', models.TextField(blank=True)),
                ('read_only', models.BooleanField(null=True)),
                ('event_type', models.CharField(blank=True, max_length=32)),
                ('event_category', models.CharField(blank=True, max_length=32)),
                ('encryption_context', models.JSONField(blank=True, null=True)),
                ('request_id', models.CharField(blank=True, max_length=128)),
                ('shared_event_id', models.CharField(blank=True, max_length=64)),
                ('vpc_endpoint_id', models.CharField(blank=True, max_length=128)),
                ('s3_bucket', models.CharField(blank=True, help_text='Bucket named by an aws:s3:arn context.', max_length=256)),
                ('after_hours', models.BooleanField(default=False)),
                ('raw_index', models.PositiveIntegerField(default=0)),
                ('raw_block', models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='audits.rawblock')),
            ],
            options={
                'indexes': [models.Index(fields=['event_time', 'id'], name='event_time_id'), models.Index(audits.fields.HashText('key'), models.F('event_time'), name='event_key_time'), models.Index(audits.fields.HashText('principal'), models.F('event_time'), name='event_principal_time')],
                'constraints': [models.UniqueConstraint(audits.fields.UniqueKey('recipient_account_id', 'event_id'), name='event_unique_per_account')],
            },
        ),
        migrations.CreateModel(
            name='Retention',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('purged_before', models.DateTimeField(blank=True, null=True)),
                ('purged_at', models.DateTimeField(blank=True, null=True)),
                ('events_deleted', models.PositiveBigIntegerField(default=0)),
                ('raw_blocks_deleted', models.PositiveBigIntegerField(default=0)),
            ],
            options={
                'verbose_name_plural': 'retention',
            },
        ),
        migrations.CreateModel(
            name='OperationDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('account_id', models.CharField(max_length=12)),
                ('region', models.CharField(max_length=32)),
                ('operation', models.CharField(max_length=64)),
                ('error_code', models.CharField(max_length=128)),
                ('after_hours', models.BooleanField()),
                ('count', models.BigIntegerField()),
                ('first_seen', models.DateTimeField()),
                ('last_seen', models.DateTimeField()),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('day', 'account_id', 'region', 'operation', 'error_code', 'after_hours'), name='operationday_unique_dims')],
            },
        ),
        migrations.CreateModel(
            name='PrincipalDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('account_id', models.CharField(max_length=12)),
                ('region', models.CharField(max_length=32)),
                ('principal', models.CharField(max_length=2048)),
                ('count', models.BigIntegerField()),
                ('first_seen', models.DateTimeField()),
                ('last_seen', models.DateTimeField()),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('day', 'account_id', 'region', 'principal'), name='principalday_unique_dims')],
            },
        ),
        migrations.CreateModel(
            name='Quarantine',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('location', models.CharField(blank=True, help_text='File, S3 object or API window it came from.', max_length=2048)),
                ('reason', models.TextField()),
                ('raw', models.TextField(blank=True)),
                ('raw_truncated', models.BooleanField(default=False)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('run', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='quarantine', to='audits.ingestrun')),
            ],
            options={
                'verbose_name_plural': 'quarantine',
                'ordering': ['-created_at'],
                'constraints': [models.UniqueConstraint(audits.fields.UniqueKey('location', 'reason', 'raw'), name='quarantine_unique_record')],
            },
        ),
        migrations.RunPython(set_fillfactor(70), set_fillfactor(100)),
    ]
