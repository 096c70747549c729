"""The one error hierarchy. The library raises these; only the CLI turns them into exits."""

from __future__ import annotations


class MigrationError(Exception):
    """Base of every error the toolkit raises on purpose.

    ``exit_code`` is 1 for operational failures and 2 for bad usage; ``service`` and
    ``version`` say what the error is about, so the message can name them.
    """

    exit_code = 1

    def __init__(self, message: str, *, service: str | None = None, version: int | None = None):
        super().__init__(message)
        self.service = service
        self.version = version
        # What the run did before it failed (e.g. {"steps": [4, 5]}), for --json.
        self.done: dict[str, object] = {}

    @property
    def kind(self) -> str:
        """The error's class in words for scripts: ``StepError`` is ``step``."""
        name = type(self).__name__.removesuffix("Error") or "migration"
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


class UsageError(MigrationError):
    """The command line or its inputs are wrong; nothing was attempted."""

    exit_code = 2


class ConfigError(UsageError):
    """A connection setting or a service name cannot be used."""


class ProductionGuardError(UsageError):
    """A development-only action was refused in production."""


class ConnectError(MigrationError):
    """The database could not be reached or refused the login."""


class TopologyError(ConnectError):
    """The connection reached a connection pooler or a standby, not the primary directly."""


class PrivilegeError(MigrationError):
    """The migrating role lacks a privilege the command needs; the message names the grant.

    Raised before anything changes."""


class StateError(MigrationError):
    """The database's migration state does not allow the action (ahead, inconsistent, legacy gap)."""


class LockWaitError(MigrationError):
    """Another runner held the migration lock for longer than we were allowed to wait."""


class LockTimeoutError(MigrationError):
    """A migration could not take a table lock within lock_timeout, after its retries."""


class StepError(MigrationError):
    """A migration step failed; it was rolled back and earlier steps stay applied."""


class RefusedError(MigrationError):
    """A migration refused to go on: the data it found would be lost or cannot be mapped.

    Raised from inside the step (``safe.refuse_if``), so the step's transaction rolls back
    and the step changes nothing.
    """


class ScriptError(MigrationError):
    """A migration file cannot be loaded, or the history on disk is malformed."""


class LockLostError(MigrationError):
    """The run lock's session ended mid-run; the step that noticed it was rolled back."""


class ConnectionLostError(MigrationError):
    """The connection to the database died mid-run (a restart, a cut, a terminated backend)."""


class Interrupted(MigrationError):
    """SIGINT or SIGTERM ended the run; what was running was rolled back."""

    def __init__(
        self, message: str, *, signum: int, service: str | None = None, version: int | None = None
    ):
        super().__init__(message, service=service, version=version)
        self.exit_code = 128 + signum


def signal_name(exc: BaseException) -> tuple[int, str]:
    """The signal behind a KeyboardInterrupt (SIGINT unless the CLI said otherwise)."""
    signum = int(getattr(exc, "signum", 2))
    return signum, {2: "SIGINT", 15: "SIGTERM"}.get(signum, f"signal {signum}")


class BackupError(MigrationError):
    """A backup or a restore failed, or no fitting pg_dump/pg_restore was found."""
