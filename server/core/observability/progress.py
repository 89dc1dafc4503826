"""Progress of the long startup steps (migrations, model loading, code generation, Envoy), as log lines: what
started, then how long it took, so a slow start says where it is."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("jan.startup")


@contextmanager
def step(what: str) -> Iterator[None]:
    """Logs `what…` now and `what: done in N s` when the block ends (or `what: failed` if it raises)."""
    log.info("%s…", what)
    started = time.monotonic()
    try:
        yield
    except BaseException:
        log.error("%s: failed after %.1f s", what, time.monotonic() - started)
        raise
    log.info("%s: done in %.1f s", what, time.monotonic() - started)
