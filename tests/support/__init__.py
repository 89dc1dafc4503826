"""Real services the tests start themselves: PostgreSQL and the whole Jan Server stack."""
