from django.urls import path

from . import administration as views

app_name = "administration"

urlpatterns = [
    path("users/", views.user_list, name="user_list"),
    path("users/new/", views.user_create_view, name="user_create"),
    path("users/<int:user_id>/", views.user_detail, name="user_detail"),
    path("users/<int:user_id>/role/", views.user_set_role_view, name="user_set_role"),
    path("users/<int:user_id>/password/", views.user_reset_password_view, name="user_reset_password"),
    path("users/<int:user_id>/deactivate/", views.user_deactivate_view, name="user_deactivate"),
    path("users/<int:user_id>/reactivate/", views.user_reactivate_view, name="user_reactivate"),
    path("users/<int:user_id>/unlock/", views.user_unlock_view, name="user_unlock"),
    path("users/<int:user_id>/two-factor-reset/", views.user_two_factor_reset_view, name="user_two_factor_reset"),
    path("users/<int:user_id>/token-revoke/", views.user_token_revoke_view, name="user_token_revoke"),
]
