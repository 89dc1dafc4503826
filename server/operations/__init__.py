"""Operator commands behind `jan-server`: checking a deployment (doctor) and managing API keys."""
