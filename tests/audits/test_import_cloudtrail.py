"""`manage.py import_cloudtrail`: files and directories, both formats, bad files quarantined."""

from __future__ import annotations

import gzip
import io
import json
import threading
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum

from audits.models import DailyRollup, Event, IngestRun, Quarantine
from audits.synthetic import generate_records, write_log_files

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def run_import(*paths) -> dict[str, int]:
    out = io.StringIO()
    call_command("import_cloudtrail", *map(str, paths), stdout=out)
    return {line.split(":")[0]: int(line.split(":")[1]) for line in out.getvalue().strip().splitlines()}


@pytest.mark.django_db
def test_a_directory_tree_of_both_formats_is_imported_and_summarised(tmp_path):
    trail = list(generate_records(250, seed=1, start=T0))
    write_log_files(trail[:200], tmp_path / "AWSLogs" / "111122223333" / "CloudTrail", per_file=60)
    lookup = {
        "Events": [{"EventId": r["eventID"], "CloudTrailEvent": json.dumps(r)} for r in trail[150:]],
        "NextToken": "t",
    }
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "lookup-events.json").write_text(json.dumps(lookup))
    (tmp_path / "cli" / "notes.txt").write_text("not a log file")
    non_kms = {"Records": [{"eventSource": "s3.amazonaws.com", "eventName": "GetObject", "eventID": "e"}]}
    (tmp_path / "other.json").write_text(json.dumps(non_kms))

    summary = run_import(tmp_path)

    assert summary == {
        "files": 4 + 1 + 1,
        "records read": 200 + 100 + 1,
        "new KMS events": 250,
        "duplicates": 50,
        "ignored (not KMS)": 1,
        "quarantined": 0,
        "expired (older than the retention purge)": 0,
    }
    assert Event.objects.count() == 250
    assert DailyRollup.objects.aggregate(n=Sum("count"))["n"] == 250
    run = IngestRun.objects.get()
    assert (run.kind, run.status, run.files, run.events_new, run.duplicates) == ("files", "succeeded", 6, 250, 50)


@pytest.mark.django_db
def test_a_second_import_of_the_same_files_adds_nothing(tmp_path):
    write_log_files(generate_records(120, start=T0), tmp_path, per_file=50)
    run_import(tmp_path)
    summary = run_import(tmp_path)
    assert (summary["new KMS events"], summary["duplicates"]) == (0, 120)
    assert DailyRollup.objects.aggregate(n=Sum("count"))["n"] == 120


@pytest.mark.django_db
def test_a_truncated_file_is_quarantined_and_the_other_files_still_land(tmp_path):
    good = write_log_files(generate_records(100, seed=1, start=T0), tmp_path / "good", per_file=100)[0]
    bad_records = list(generate_records(2000, seed=2, start=T0))
    data = gzip.compress(json.dumps({"Records": bad_records}).encode())
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(data[: len(data) // 2])

    summary = run_import(bad, good)

    row = Quarantine.objects.get()
    assert row.location == str(bad) and "truncated" in row.reason
    assert summary["quarantined"] == 1
    # Everything readable before the cut landed, and the good file entirely.
    assert summary["new KMS events"] == Event.objects.count() > 100
    assert Event.objects.filter(event_id__in=[r["eventID"] for r in bad_records[:10]]).count() == 10


@pytest.mark.django_db
def test_a_gzip_bomb_is_quarantined(tmp_path, settings):
    settings.KMSDASH_MAX_DECOMPRESSED_BYTES = 1_000_000
    (tmp_path / "bomb.json.gz").write_bytes(gzip.compress(b'{"Records": [' + b" " * 5_000_000 + b"]}"))
    write_log_files(generate_records(10, start=T0), tmp_path / "ok", per_file=10)
    summary = run_import(tmp_path)
    assert summary["new KMS events"] == 10 and summary["quarantined"] == 1
    assert "limit" in Quarantine.objects.get().reason


@pytest.mark.django_db
def test_a_malformed_record_in_the_middle_of_a_file_is_quarantined_and_the_rest_lands(tmp_path):
    recs = list(generate_records(5, start=T0))
    recs[2]["eventTime"] = 1234
    (tmp_path / "mixed.json").write_text(json.dumps({"Records": recs}))
    summary = run_import(tmp_path / "mixed.json")
    assert (summary["new KMS events"], summary["quarantined"]) == (4, 1)
    row = Quarantine.objects.get()
    assert "eventTime" in row.reason and json.loads(row.raw)["eventID"] == recs[2]["eventID"]


@pytest.mark.django_db
def test_a_record_with_bytes_that_are_not_utf8_is_quarantined_and_its_neighbours_land(tmp_path):
    recs = list(generate_records(3, start=T0))
    recs[1]["userAgent"] = "agent-\u00e9"
    text = json.dumps({"Records": recs}, ensure_ascii=False).encode().replace("\u00e9".encode(), b"\xe9")
    (tmp_path / "latin1.json.gz").write_bytes(gzip.compress(text))
    summary = run_import(tmp_path)
    assert (summary["new KMS events"], summary["quarantined"]) == (2, 1)
    assert "UTF-8" in Quarantine.objects.get().reason
    assert not Event.objects.filter(event_id=recs[1]["eventID"]).exists()


@pytest.mark.django_db
def test_a_missing_path_is_fatal_and_imports_nothing(tmp_path):
    write_log_files(generate_records(5, start=T0), tmp_path, per_file=5)
    with pytest.raises(CommandError, match="No such file"):
        call_command("import_cloudtrail", str(tmp_path), str(tmp_path / "missing"))
    assert not Event.objects.exists() and not IngestRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_import_outside_a_transaction_writes_batches_in_the_background_with_the_same_result(tmp_path):
    records = list(generate_records(2400, seed=4, start=T0, days=3))
    write_log_files(records + records[:700], tmp_path, per_file=250)
    out = io.StringIO()
    call_command("import_cloudtrail", str(tmp_path), "--batch-size", "300", stdout=out)

    assert "new KMS events: 2400" in out.getvalue() and "duplicates: 700" in out.getvalue()
    assert Event.objects.count() == 2400
    assert DailyRollup.objects.aggregate(n=Sum("count"))["n"] == 2400
    run = IngestRun.objects.get()
    assert (run.status, run.records_read, run.events_new, run.duplicates) == ("succeeded", 3100, 2400, 700)
    assert not [t for t in threading.enumerate() if t.name.startswith("ingest-writer")]
