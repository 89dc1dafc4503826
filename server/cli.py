"""`jan-server` command line: run the stack, migrate the database, or render the Envoy config."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from server.core.config import Settings
from server.core.logging import configure_logging
from server.protogen import ensure_generated


async def _run(settings: Settings, gateway: bool) -> None:
    from server.app import JanServer

    server = JanServer(settings, gateway=gateway)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jan-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve the gRPC services and Envoy (settings from JAN_* env vars)")
    run.add_argument("--no-gateway", action="store_true", help="serve gRPC only, without Envoy (e.g. in a mesh)")
    commands.add_parser("migrate", help="upgrade the database schema to the latest revision")
    commands.add_parser("envoy-config", help="print the rendered Envoy config")
    args = parser.parse_args(argv)

    # We fork only to exec Envoy; gRPC's fork handlers are not needed (and log noise when skipped).
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    settings = Settings()
    configure_logging(settings.log_level)
    ensure_generated()
    if args.command == "run":
        asyncio.run(_run(settings, gateway=not args.no_gateway))
    elif args.command == "migrate":
        asyncio.run(_migrate(settings))
    elif args.command == "envoy-config":
        from server.gateway.envoy import render_config
        from server.protogen import DESCRIPTOR_SET

        sys.stdout.write(render_config(settings, DESCRIPTOR_SET))
    return 0


if __name__ == "__main__":
    sys.exit(main())
