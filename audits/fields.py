"""Long text columns (ARNs) that are looked up by equality, indexed by a 4-byte hash on PostgreSQL.

An index on (key ARN, event_time) repeats the ARN in every entry, more than the row's own
columns. An index on (hashtext(key), event_time) keeps 4 bytes instead, and
equality lookups on a HashedTextField compare the hashes too, so PostgreSQL finds the rows through
that index and then checks the text itself (a hash collision only costs a heap visit). SQLite has
no hashtext(): there the same index and lookups are on the text, as before.
"""

from __future__ import annotations

from django.db import models
from django.db.models.lookups import Exact
from django.db.models.sql import Query


class HashText(models.Func):
    """hashtext(expression) on PostgreSQL; the expression itself elsewhere."""

    function = "hashtext"
    output_field = models.IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return compiler.compile(self.source_expressions[0])


class HashedTextField(models.CharField):
    """A CharField whose `field=value` lookups also compare hashtext() on PostgreSQL."""


@HashedTextField.register_lookup
class HashedExact(Exact):
    def as_postgresql(self, compiler, connection):
        sql, params = self.as_sql(compiler, connection)
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"(hashtext({lhs}) = hashtext({rhs}) AND {sql})", (*lhs_params, *rhs_params, *params)


class UniqueKey(models.Func):
    """One value standing for a tuple of NOT NULL columns, for a unique index over wide text.

    A unique index on (account, event id) or on a rollup's nine dimensions repeats all that text
    in every entry (the README's benchmarks give the bytes per event). On PostgreSQL the
    index holds the first 16 bytes of a SHA-256 of the columns instead, as a uuid: two tuples
    sharing one by chance is a 1-in-2^128 event, and unlike md5 nobody can make two on purpose
    (key ids and principals are partly chosen by callers). Each column is written as its length,
    ':' and its text, so no choice of text (separators included) makes two tuples read the same.
    Every step is IMMUTABLE, as an index expression must be: a date's own text follows DateStyle
    (its day number does not), and the text's bytes come from decode(..., 'escape') with every
    backslash doubled (convert_to() is only STABLE). SQLite: the JSON array of the columns.

    `INSERT ... ON CONFLICT` must name the same expression: see `unique_key_sql`. Never change the
    SQL below in place: existing indexes were built with it, and a conflict target that no longer
    matches them is an error. Add another class and a migration instead.
    """

    output_field = models.TextField()

    def as_postgresql(self, compiler, connection, **extra_context):
        parts, params = [], []
        for expression in self.source_expressions:
            sql, sql_params = compiler.compile(expression)
            kind = expression.output_field.get_internal_type()
            if kind == "DateField":
                sql = f"(({sql}) - DATE '1970-01-01')"
            elif kind == "BooleanField":
                sql = f"({sql})::int"
            text = f"({sql})::text"
            parts.append(f"length({text})::text || ':' || {text}")
            params.extend(sql_params * 2)
        data = f"decode(replace({' || '.join(parts)}, '\\', '\\\\'), 'escape')"
        return f"encode(substring(sha256({data}) FROM 1 FOR 16), 'hex')::uuid", params

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, function="json_array", **extra_context)


def unique_key_sql(model: type[models.Model], expression: models.Expression, connection) -> str:
    """The SQL of a unique constraint's expression on `model`, with bare column names: ON CONFLICT (<this>)."""
    query = Query(model, alias_cols=False)
    compiler = query.get_compiler(connection=connection)
    sql, params = compiler.compile(expression.resolve_expression(query))
    if params:
        raise ValueError(f"{model.__name__}: a conflict target cannot take parameters")
    return f"({sql})"  # an index expression other than a plain call goes in parentheses


class CriticalFlag(models.BooleanField):
    """Whether an event is a critical key-management one (audits.cloudtrail.CRITICAL_EVENT_NAMES),
    set from its event_name on every ORM insert and save, so no hand-made row is ever filed wrong.

    On a partitioned PostgreSQL table it is the first partition key: critical events live in a
    partition of their own that retention never drops (audits/partitions.py)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default", False)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, _, args, kwargs = super().deconstruct()
        kwargs.pop("default", None)
        kwargs.pop("editable", None)
        return name, "audits.fields.CriticalFlag", args, kwargs

    def pre_save(self, model_instance, add):
        from .cloudtrail import CRITICAL_EVENT_NAMES

        value = model_instance.event_name in CRITICAL_EVENT_NAMES
        setattr(model_instance, self.attname, value)
        return value
