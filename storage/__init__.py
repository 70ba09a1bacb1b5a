"""PostgreSQL storage: the pool (sync psycopg in worker threads), migrations and the embedded
cluster. Imports nothing of ours.
"""

from .certificates import (
    StoredCertificate,
    list_certificates,
    record_certificate,
    revoke_certificate,
    revoked_serials,
)
from .database import Database, redact
from .embedded import ClusterBusy, ClusterState, EmbeddedPostgres, bundled_bin_dir
from .errors import (
    Conflict,
    DatabaseUnavailable,
    EmbeddedClusterError,
    MigrationError,
    NotFound,
    SchemaTooNew,
    StorageError,
)
from .migrations import code_version, current_version, migrate

__all__ = [
    "ClusterBusy",
    "ClusterState",
    "Conflict",
    "Database",
    "DatabaseUnavailable",
    "EmbeddedClusterError",
    "EmbeddedPostgres",
    "MigrationError",
    "NotFound",
    "SchemaTooNew",
    "StorageError",
    "StoredCertificate",
    "bundled_bin_dir",
    "code_version",
    "current_version",
    "list_certificates",
    "migrate",
    "record_certificate",
    "redact",
    "revoke_certificate",
    "revoked_serials",
]
