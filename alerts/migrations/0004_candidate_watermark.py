"""Evaluation reads alert candidates (audits.AlertCandidate) instead of events: the events that
landed after the last evaluation get theirs here, built by the rules ingestion now applies
(audits.candidates.build), so the next evaluation judges them as it would have."""

from django.db import migrations, models

CHUNK = 10_000


def backfill(apps, schema_editor):
    from audits import candidates, rawcodec

    Evaluation = apps.get_model("alerts", "Evaluation")
    Event = apps.get_model("audits", "Event")
    RawBlock = apps.get_model("audits", "RawBlock")
    QuotaMinute = apps.get_model("audits", "QuotaMinute")
    Candidate = apps.get_model("audits", "AlertCandidate")
    state = Evaluation.objects.first()
    last = state.event_id if state else 0
    floors = candidates.quota_floors()
    while True:
        events = list(Event.objects.filter(id__gt=last).order_by("id")[:CHUNK])
        if not events:
            return
        last = events[-1].id
        blocks = {
            block.pk: rawcodec.decode_block(bytes(block.data))
            for block in RawBlock.objects.filter(
                pk__in={e.raw_block_id for e in events if e.raw_block_id and candidates.wants_detail(e)}
            )
        }
        rows = []
        for e in events:
            texts = blocks.get(e.raw_block_id) if candidates.wants_detail(e) else None
            text = texts[e.raw_index] if texts and e.raw_index < len(texts) else b""
            rows.append((e.id, e, candidates.detail_of(text) if text else ""))
        minutes = {e.event_time.replace(second=0, microsecond=0) for e in events if e.quota_class}
        totals = []
        if minutes:
            totals = QuotaMinute.objects.filter(minute__gte=min(minutes), minute__lte=max(minutes)).values_list(
                "minute", "account_id", "region", "quota_class", "calls", "throttled", "first_seen", "last_seen"
            )
        fields = [f.name for f in Candidate._meta.fields if f.name != "id"]
        Candidate.objects.bulk_create(
            [Candidate(**{name: getattr(c, name) for name in fields}) for c in candidates.build(rows, totals, floors)]
        )


class Migration(migrations.Migration):
    dependencies = [
        ("alerts", "0003_quota_kinds"),
        ("audits", "0024_alert_candidates"),
    ]

    operations = [
        migrations.AddField(
            model_name="evaluation",
            name="candidate_id",
            field=models.BigIntegerField(default=0),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
