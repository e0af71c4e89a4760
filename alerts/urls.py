from django.urls import path

from . import views

app_name = "alerts"

urlpatterns: list = [
    path("alerts/", views.alert_list, name="list"),
    path("alerts/<int:pk>/", views.detail, name="detail"),
    path("alerts/<int:pk>/act/", views.act, name="act"),
]
