from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import healthz, metrics, oidc, signin, twofactor, views

urlpatterns = [
    path("accounts/login/", signin.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/2fa/", twofactor.setup, name="twofactor_setup"),
    path("accounts/2fa/verify/", twofactor.verify, name="twofactor_verify"),
    path("accounts/2fa/qr.svg", twofactor.qr, name="twofactor_qr"),
    # Single sign-on (404 unless KMSDASH_OIDC_ENABLED); the names are mozilla-django-oidc's.
    path("oidc/authenticate/", oidc.authenticate, name="oidc_authentication_init"),
    path("oidc/callback/", oidc.callback, name="oidc_authentication_callback"),
    path("admin/", admin.site.urls),
    path("start/", views.start, name="start"),
    path("", include("audits.health_urls")),
    path("healthz", healthz.healthz, name="healthz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("exports/", views.exports, name="exports"),
    path("costs/", include("costs.urls")),
    path("", include("inventory.urls")),
    path("", include("access.urls")),
    path("", include("alerts.urls")),
    path("", include("capacity.urls")),
    path("", include("audits.urls")),
]
