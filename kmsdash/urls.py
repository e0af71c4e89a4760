from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import healthz, views

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("start/", views.start, name="start"),
    path("", include("audits.health_urls")),
    path("healthz", healthz.healthz, name="healthz"),
    path("exports/", views.exports, name="exports"),
    path("costs/", include("costs.urls")),
    path("", include("inventory.urls")),
    path("", include("alerts.urls")),
    path("", include("audits.urls")),
]
