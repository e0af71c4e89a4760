from django.urls import path

from . import views

app_name = "inventory"

urlpatterns: list = [
    path("findings/", views.findings, name="findings"),
    path("findings/<int:pk>/accept/", views.finding_accept, name="finding_accept"),
    path("keys/<path:key>/inventory/", views.key_panel, name="key_panel"),
]
