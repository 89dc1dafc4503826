"""Admin API: users and their roles (jan.admin.v1)."""
