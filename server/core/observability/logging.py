"""Process-wide logging: one line per record, as readable text or as one JSON object (JAN_LOG_FORMAT).

Every record passes a redacting filter first: bearer credentials, API keys, refresh tokens, JWTs and the values of
secret settings are replaced before anything is formatted, whichever logger (Envoy's forwarded log included)
wrote them. Request bodies, and so prompts, are never logged: the access log (interceptor.py) names routes only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import SecretStr

from server.core.config import Settings

REDACTED = "[REDACTED]"

# Attributes every LogRecord has; the others were passed with `extra=` and go into the JSON line as fields.
_STANDARD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def secret_patterns(api_key_prefix: str) -> list[re.Pattern[str]]:
    """Credential shapes this server issues or accepts."""
    return [
        re.compile(r"(?i)\bBearer\s+[^\s\"',;]+"),
        # API keys: <prefix>_<48 hex> (JAN_API_KEY_PREFIX, sk_live by default), and OpenAI-style keys generally.
        re.compile(rf"\b{re.escape(api_key_prefix)}_[0-9A-Za-z]{{8,}}"),
        re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
        re.compile(r"\brt_[A-Za-z0-9_-]{20,}"),  # refresh tokens (server/auth/service.py)
        re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),  # JWTs: base64url JSON header
    ]


def secret_values(settings: Settings) -> list[str]:
    """The values of every secret setting (SecretStr), models' upstream API keys included."""
    secrets = [value for value in vars(settings).values() if isinstance(value, SecretStr)]
    secrets += [model.api_key for model in settings.models]
    # Very short values would blank out ordinary words.
    return [text for secret in secrets if len(text := secret.get_secret_value()) >= 8]


class RedactSecrets(logging.Filter):
    """Rewrites a record's message (and traceback) with credentials replaced by [REDACTED]."""

    def __init__(self, patterns: Iterable[re.Pattern[str]], values: Iterable[str] = ()) -> None:
        super().__init__()
        self._patterns = list(patterns)
        self._values = sorted(set(values), key=len, reverse=True)

    def redact(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        for pattern in self._patterns:
            text = pattern.sub(REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra fields, "exception"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secret_patterns(settings.api_key_prefix), secret_values(settings)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Alembic narrates every plugin it loads at INFO; only its warnings matter at startup.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
