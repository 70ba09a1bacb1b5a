"""Storage errors.

``StorageError``
 ├── ``DatabaseUnavailable``   the server cannot be reached or went away (transient)
 ├── ``EmbeddedClusterError``  the embedded cluster cannot be initialised or started
 ├── ``MigrationError``        a migration failed; the schema is left at the last good version
 │    └── ``SchemaTooNew``     the database was migrated by newer code than this
 └── ``NotFound`` / ``Conflict``  a row is missing / a unique value is taken
"""

from __future__ import annotations


class StorageError(Exception):
    """Root of every error raised by the storage package."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached right now; retrying later may succeed."""


class EmbeddedClusterError(StorageError):
    """The embedded PostgreSQL cluster cannot be initialised or started."""


class MigrationError(StorageError):
    """A schema migration failed."""


class SchemaTooNew(MigrationError):
    """The database schema is newer than this code understands."""

    def __init__(self, database_version: int, code_version: int) -> None:
        self.database_version = database_version
        self.code_version = code_version
        super().__init__(
            f"the database schema is at version {database_version} but this patch-manager only "
            f"knows up to version {code_version}: upgrade patch-manager (refusing to run against "
            f"a newer schema)"
        )


class NotFound(StorageError):
    """The requested row does not exist."""


class Conflict(StorageError):
    """A unique value (host name, group name, …) is already taken."""
