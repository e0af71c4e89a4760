"""audits 0001-0014 are squashed: a fresh database gets the same tables from the one migration as an
existing database got from the fourteen (whose data migrations keep running there)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from audits.models import DailyRollup
from audits.rollups import SUMMARIES

SQUASHED = ("audits", "0001_squashed_0014_quarantine_once")


def audits_models(state) -> dict[str, tuple]:
    """Each audits model of a migration state as comparable data: fields, indexes, constraints, options."""
    described = {}
    for (app, name), model in state.models.items():
        if app != "audits":
            continue
        options = dict(model.options)
        indexes = sorted((index.name, index.deconstruct()) for index in options.pop("indexes", []))
        constraints = sorted((c.name, c.deconstruct()) for c in options.pop("constraints", []))
        fields = {field_name: field.deconstruct()[1:] for field_name, field in model.fields.items()}
        described[name] = (fields, indexes, constraints, sorted(options.items()))
    return described


def test_the_squashed_migration_builds_the_models_the_fourteen_originals_built():
    # No connection: nothing counts as applied, so this loader plans a fresh install (the squash).
    fresh = MigrationLoader(None, ignore_no_migrations=True)
    originals = MigrationLoader(None, ignore_no_migrations=True, replace_migrations=False)
    assert SQUASHED in fresh.graph.nodes and ("audits", "0014_quarantine_once") not in fresh.graph.nodes
    squashed_state = fresh.project_state(SQUASHED)
    original_state = originals.project_state(("audits", "0014_quarantine_once"))
    assert audits_models(squashed_state) == audits_models(original_state)
    assert len(audits_models(squashed_state)) == 15


def test_the_later_migrations_follow_the_squashed_one_on_a_fresh_install():
    fresh = MigrationLoader(None, ignore_no_migrations=True)
    assert fresh.graph.node_map[("audits", "0015_hourly_summaries")].parents == {fresh.graph.node_map[SQUASHED]}


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL storage parameter")
def test_every_rollup_and_summary_table_of_a_fresh_database_leaves_room_for_updates():
    # The test database is a fresh install: its tables come from the squashed migration (and 0015).
    tables = [DailyRollup._meta.db_table, *(summary.model._meta.db_table for summary in SUMMARIES)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)", [tables])
        options = dict(cursor.fetchall())
    assert options == {table: ["fillfactor=70"] for table in tables}
