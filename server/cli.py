"""`jan-server` command line: run the stack, migrate the database, render the Envoy config, create an admin, manage
API keys, or check a deployment (doctor)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from server.core.config import DEPLOYABLE_SERVICES, Settings
from server.core.observability.logging import configure_logging
from server.protogen import ensure_generated

SERVICE_CHOICES = sorted(DEPLOYABLE_SERVICES)


async def _run(
    settings: Settings, gateway: bool, services: frozenset[str] | None = None, migrate: bool = True
) -> None:
    from server.app import JanServer
    from server.topology import ALL_SERVICES

    server = JanServer(settings, gateway=gateway, services=ALL_SERVICES if services is None else services,
                       migrate=migrate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        print(server.listening_line(), flush=True)
        await stop.wait()
    finally:
        await server.stop()


async def _migrate(settings: Settings) -> None:
    from server.core.migrate import run_migrations

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await run_migrations(settings.database)


async def _create_admin(settings: Settings, email: str, name: str | None, key_name: str) -> int:
    """Creates or promotes the admin and prints a new API key for it, the only way in until there is a login."""
    from server.admin.service import AdminService, check_email
    from server.auth.api_keys import ApiKeyService, NewApiKey
    from server.core.db import create_engine, session_factory
    from server.core.errors import ApiError

    try:
        check_email(email)
    except ValueError as error:
        print(f"jan-server admin create: {error}", file=sys.stderr)
        return 2
    await _migrate(settings)
    engine = create_engine(settings.database)
    try:
        sessions = session_factory(engine)
        admin = await AdminService(sessions).ensure_admin(email, name)
        user = admin.user
        print(f"{'Created' if admin.created else 'Promoted'} admin {user.username} ({user.id})", flush=True)
        try:
            created = await ApiKeyService(settings, sessions).create(user.id, NewApiKey(name=key_name, lifetime=None))
        except ApiError as error:
            print(f"jan-server admin create: no API key was made: {error.message}", file=sys.stderr)
            return 1
    finally:
        await engine.dispose()
    expires = created.record.expires_at.date().isoformat()
    print(f"API key {created.record.id} (expires {expires}); it is shown only now, keep it secret:")
    print(created.key)
    print(f"Use it as 'Authorization: Bearer {created.key[:12]}...' or 'X-API-Key'; revoke it with "
          f"DELETE /v1/auth/api-keys/{created.record.id}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jan-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the gRPC services and Envoy (settings from JAN_* env vars)")
    run.add_argument("--no-gateway", action="store_true", help="serve gRPC only, without Envoy (e.g. in a mesh)")
    serve = commands.add_parser(
        "serve",
        help="serve some services alone, for separate deployments",
        description="Serves the named services' gRPC in this process (JAN_GRPC_HOST:JAN_GRPC_PORT); `gateway` "
        "runs Envoy, routing each service to its JAN_SERVICE_TARGETS address. Run `jan-server migrate` once "
        "before starting the services: they do not migrate the database themselves.",
    )
    serve.add_argument(
        "--service", action="append", required=True, choices=[*SERVICE_CHOICES, "gateway"],
        help="a service to serve (repeat for several); `gateway` for Envoy",
    )
    commands.add_parser("migrate", help="upgrade the database schema to the latest revision")
    commands.add_parser("envoy-config", help="print the rendered Envoy config")
    admin = commands.add_parser("admin", help="manage admin users on this server's database")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    create_admin = admin_commands.add_parser(
        "create",
        help="create (or promote) an admin user and print a new API key for it",
        description="Creates the user whose username is EMAIL, or promotes it if it exists, gives it the admin "
        "role, and prints a new API key for it once. There is no password login yet: the key is how the admin "
        "authenticates (X-API-Key or Authorization: Bearer). Migrates the database first if needed. Reads the "
        "same JAN_* settings as `jan-server run` (JAN_DATABASE_URL, JAN_DATA_DIR for the API-key secret).",
    )
    create_admin.add_argument("--email", required=True, help="the admin's email; it becomes the username")
    create_admin.add_argument("--name", help="a display name")
    create_admin.add_argument("--key-name", default="admin (jan-server admin create)", help="the API key's name")
    keys = commands.add_parser("keys", help="create, list or revoke any user's API keys (on this server's database)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create_key = key_commands.add_parser("create", help="create an API key and print it once")
    create_key.add_argument("--user", required=True, help="the user's id (user_...) or username (e.g. an email)")
    create_key.add_argument("--name", required=True, help="what the key is for")
    create_key.add_argument("--expires-in-days", type=int, help="lifetime (default JAN_API_KEY_DEFAULT_TTL_DAYS)")
    list_keys = key_commands.add_parser("list", help="list a user's keys, newest first (never the keys themselves)")
    list_keys.add_argument("--user", required=True, help="the user's id (user_...) or username")
    revoke_key = key_commands.add_parser("revoke", help="revoke a key")
    revoke_key.add_argument("--user", required=True, help="the user's id (user_...) or username")
    revoke_key.add_argument("key_id", help="the key's id (key_...)")
    commands.add_parser(
        "doctor", help="check ports, Envoy, the database, models, storage and the sandbox, and say how to fix problems"
    )
    args = parser.parse_args(argv)

    # We fork only to exec Envoy; gRPC's fork handlers are not needed (and log noise when skipped).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    settings = Settings()
    configure_logging(settings)
    ensure_generated()
    if args.command == "run":
        asyncio.run(_run(settings, gateway=not args.no_gateway))
    elif args.command == "serve":
        chosen = set(args.service)
        asyncio.run(_run(settings, gateway="gateway" in chosen, services=frozenset(chosen - {"gateway"}),
                         migrate=False))
    elif args.command == "migrate":
        asyncio.run(_migrate(settings))
    elif args.command == "envoy-config":
        from server.gateway.envoy import render_config
        from server.protogen import DESCRIPTOR_SET

        sys.stdout.write(render_config(settings, DESCRIPTOR_SET))
    elif args.command == "admin":
        return asyncio.run(_create_admin(settings, args.email, args.name, args.key_name))
    elif args.command == "keys":
        from server.operations.keys import keys_command

        return asyncio.run(keys_command(
            settings, args.keys_command, args.user, name=getattr(args, "name", ""),
            expires_in_days=getattr(args, "expires_in_days", None), key_id=getattr(args, "key_id", ""),
        ))
    elif args.command == "doctor":
        from server.operations.doctor import run_doctor

        return asyncio.run(run_doctor(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
