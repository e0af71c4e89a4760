from django.urls import path

from . import views

app_name = "inventory"

urlpatterns: list = [
    path("findings/", views.findings, name="findings"),
    path("findings/<int:pk>/accept/", views.finding_accept, name="finding_accept"),
    path("findings/<int:pk>/revoke/", views.finding_revoke, name="finding_revoke"),
    # Under its own prefix: as keys/<key>/inventory/ it answered for a key named "<key>/inventory" too.
    path("inventory/keys/<path:key>/", views.key_panel, name="key_panel"),
]
