"""The admins' ingestion health page, outside the audits namespace (its URL name is `health`)."""

from django.urls import path

from . import views

urlpatterns = [
    path("health/", views.health, name="health"),
]
