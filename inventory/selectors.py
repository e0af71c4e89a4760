"""Reads for pages and reports: the inventory, who can and who does use a key, findings."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Case, Count, IntegerField, Max, Min, Q, Sum, Value, When
from django.utils import timezone

from audits.models import DailyRollup

from . import policy as pol
from .models import Alias, Finding, InventoryRun, Key


def alias_names() -> dict[str, str]:
    """Key ARN -> the name to show for it: its shortest alias (alphabetical among equals)."""
    names: dict[str, str] = {}
    rows = Alias.objects.filter(key__isnull=False).values_list("key__arn", "name")
    for arn, name in rows:
        current = names.get(arn)
        if current is None or (len(name), name) < (len(current), current):
            names[arn] = name
    return names


def resolve_key(key: str) -> Key | None:
    """A key by ARN, bare key id, alias name or alias ARN."""
    found = Key.objects.filter(Q(arn=key) | Q(key_id=key)).order_by("arn").first()
    if found is None:
        alias = Alias.objects.filter(Q(arn=key) | Q(name=key)).select_related("key").order_by("arn").first()
        found = alias.key if alias is not None else None
    return found


def resolve_key_ref(ref: str, account_id: str, region: str) -> str:
    """The key ARN a resource's key setting names (key id, key ARN, alias name or alias ARN), as
    seen from that resource's (account, region); '' for an alias the inventory does not know."""
    if ":key/" in ref:
        return ref
    if ref.startswith("arn:") and ":alias/" in ref:
        alias = Alias.objects.filter(arn=ref, key__isnull=False).select_related("key").first()
        return alias.key.arn if alias is not None and alias.key is not None else ""
    if ref.startswith("alias/"):
        alias = (
            Alias.objects.filter(name=ref, account_id=account_id, region=region, key__isnull=False)
            .select_related("key")
            .first()
        )
        return alias.key.arn if alias is not None and alias.key is not None else ""
    key = Key.objects.filter(key_id=ref, account_id=account_id, region=region).first()
    return key.arn if key is not None else f"arn:aws:kms:{region}:{account_id}:key/{ref}" if ref else ""


def policy_statements(key: Key, findings: list[Finding]) -> list[dict]:
    """The key policy statement by statement, each with the finding kinds that point at it."""
    flagged: dict[int, list[str]] = {}
    for finding in findings:
        for statement in (finding.evidence or {}).get("statements", []):
            flagged.setdefault(statement.get("index"), []).append(finding.kind)
    return [
        {"index": s.index, "sid": s.sid, "text": s.text(), "kinds": sorted(set(flagged.get(s.index, [])))}
        for s in pol.statements(key.policy)
    ]


def who_can_use(key: Key) -> list[dict]:
    """Principals named by Allow statements that grant use, and grantees of grants."""
    rows: dict[str, dict] = {}
    for principal, statement in pol.who_can_use(key.policy):
        entry = rows.setdefault(principal, {"principal": principal, "via": []})
        entry["via"].append(f"policy statement {statement.sid or statement.index + 1}")
    for grant in key.grants.all():
        if grant.grantee_principal:
            entry = rows.setdefault(grant.grantee_principal, {"principal": grant.grantee_principal, "via": []})
            entry["via"].append(f"grant {grant.name or grant.grant_id}")
    return sorted(rows.values(), key=lambda r: r["principal"])


def who_does_use(key: Key, *, days: int = 90, limit: int = 50) -> list[dict]:
    since = timezone.now().date() - timedelta(days=days)
    return list(
        DailyRollup.objects.filter(key=key.arn, day__gte=since, own=False)
        .exclude(principal="")
        .values("principal")
        .annotate(
            calls=Sum("count"),
            failed=Sum("count", filter=~Q(error_code="")),
            first_seen=Min("first_seen"),
            last_seen=Max("last_seen"),
            operations=Count("operation", distinct=True),
        )
        .order_by("-calls", "principal")[:limit]
    )


def multi_region_partners(key: Key) -> list[dict]:
    arns = ([key.primary_arn] if key.primary_arn else []) + list(key.replica_arns or [])
    known = {k.arn: k for k in Key.objects.filter(arn__in=arns)}
    return [
        {
            "arn": arn,
            "region": arn.split(":")[3] if arn.count(":") >= 5 else "",
            "role": "primary" if arn == key.primary_arn else "replica",
            "known": arn in known,
            "is_self": arn == key.arn,
        }
        for arn in arns
    ]


def key_panel(key: Key) -> dict:
    findings = list(Finding.objects.open().filter(key=key.arn).order_by("kind"))
    return {
        "key": key,
        "aliases": list(key.aliases.order_by("name").values_list("name", flat=True)),
        "grants": list(key.grants.all()),
        "tags": sorted((key.tags or {}).items()),
        "partners": multi_region_partners(key),
        "findings": findings,
        "statements": policy_statements(key, findings),
        "policy_versions": list(key.policy_versions.order_by("-version")[:10]),
        "state_versions": list(key.state_versions.order_by("-first_seen_at", "-id")[:10]),
        "who_can": who_can_use(key),
        "who_does": who_does_use(key),
        "context_violations": [f for f in findings if f.kind == Finding.Kind.ENCRYPTION_CONTEXT_VIOLATION],
    }


# The rank of a severity, 0 for the most severe (Finding.Severity lists them worst first): the
# name sorts alphabetically otherwise.
SEVERITY_RANK = Case(
    *(When(severity=name, then=Value(rank)) for rank, name in enumerate(Finding.Severity.values)),
    default=Value(len(Finding.Severity.values)),
    output_field=IntegerField(),
)

# The findings page's column sorts, each with its tie-breaks; "-" reverses the first column only.
# The default puts the worst first and, within a severity, the newest.
FINDING_SORTS = {
    "severity": (SEVERITY_RANK.asc(), "-first_seen_at"),
    "kind": ("kind", SEVERITY_RANK.asc(), "-first_seen_at"),
    "key": ("key", "subject", SEVERITY_RANK.asc()),
    "account": ("account_id", SEVERITY_RANK.asc(), "-first_seen_at"),
    "region": ("region", SEVERITY_RANK.asc(), "-first_seen_at"),
    "first_seen": ("-first_seen_at",),
}
DEFAULT_FINDING_SORT = "severity"


def finding_order(sort: str) -> list:
    """ORDER BY for a column sort (`column`, or `-column` for the other way), ending in id so the
    order is total."""
    column = sort.lstrip("-")
    if column not in FINDING_SORTS:
        column, sort = DEFAULT_FINDING_SORT, DEFAULT_FINDING_SORT
    first, *rest = FINDING_SORTS[column]
    if sort.startswith("-"):
        first = _reversed(first)
    return [first, *rest, "id"]


def _reversed(term):
    if isinstance(term, str):
        return term[1:] if term.startswith("-") else f"-{term}"
    return term.expression.asc() if term.descending else term.expression.desc()


def findings(*, kind: str = "", severity: str = "", account: str = "", status: str = "open", sort: str = ""):
    qs = Finding.objects.all()
    if status == "open":
        qs = qs.open()
    elif status == "accepted":
        qs = qs.filter(resolved_at__isnull=True, accepted_at__isnull=False)
    elif status == "resolved":
        qs = qs.filter(resolved_at__isnull=False)
    if kind:
        qs = qs.filter(kind=kind)
    if severity:
        qs = qs.filter(severity=severity)
    if account:
        qs = qs.filter(account_id=account)
    return (
        qs.select_related("accepted_by")
        .prefetch_related("decisions")
        .order_by(*finding_order(sort or DEFAULT_FINDING_SORT))
    )


def finding_counts() -> dict[str, int]:
    return dict(Finding.objects.open().values_list("kind").annotate(n=Count("id")).order_by())


def finding_accounts() -> list[str]:
    return list(
        Finding.objects.exclude(account_id="").values_list("account_id", flat=True).distinct().order_by("account_id")
    )


def first_inventory() -> InventoryRun | None:
    """Before the inventory's first successful pass: its latest run (None if none has started, or
    once one has succeeded or left findings), for the findings page's empty state."""
    if Finding.objects.exists() or InventoryRun.objects.filter(status=InventoryRun.Status.SUCCEEDED).exists():
        return None
    return InventoryRun.objects.order_by("-started_at", "-id").first() or InventoryRun(status="queued")
