"""Long text columns (ARNs) that are looked up by equality, indexed by a 4-byte hash on PostgreSQL.

An index on (key ARN, event_time) repeats the ~80-byte ARN in every entry: 150 B per event, more
than the row's own columns. An index on (hashtext(key), event_time) keeps 4 bytes instead, and
equality lookups on a HashedTextField compare the hashes too, so PostgreSQL finds the rows through
that index and then checks the text itself (a hash collision only costs a heap visit). SQLite has
no hashtext(): there the same index and lookups are on the text, as before.
"""

from __future__ import annotations

from django.db import models
from django.db.models.lookups import Exact


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
