"""Plumbing shared by every service: settings, database, errors, ids, logging."""
