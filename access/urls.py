from django.urls import path

from . import views

app_name = "access"

urlpatterns: list = [
    path("access/keys/<path:key>/", views.key_access, name="key_access"),
    path("principals/<path:arn>/", views.principal, name="principal"),
]
