from django.urls import path

from . import exports, views

app_name = "audits"

urlpatterns: list = [
    path("", views.overview, name="overview"),
    path("keys/", views.keys, name="keys"),
    path("keys/<path:key>/", views.key_detail, name="key_detail"),
    path("events/", views.events, name="events"),
    path("events/export.csv", exports.events_export, name="events_export"),
    path("events/<int:pk>/raw/", views.event_raw, name="event_raw"),
    path("critical/", views.critical, name="critical"),
]
