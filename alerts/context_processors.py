from django.http import HttpRequest

from kmsdash.roles import ANALYST, has_role

from .models import Alert, State


def open_alerts(request: HttpRequest) -> dict:
    """The navigation's open-alert count: one indexed COUNT, only for those who may see alerts,
    and only when a template reads it (lazy)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not has_role(user, ANALYST):
        return {}

    def count() -> int:
        return Alert.objects.filter(state=State.OPEN).count()

    return {"open_alert_count": _Lazy(count)}


class _Lazy:
    """Evaluated once, when rendered (the fragments of htmx requests never render the navigation)."""

    def __init__(self, compute):
        self._compute = compute
        self._value = None

    def value(self) -> int:
        if self._value is None:
            self._value = self._compute()
        return self._value

    def __str__(self) -> str:
        return str(self.value())

    def __bool__(self) -> bool:
        return bool(self.value())
