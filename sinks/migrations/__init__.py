"""Versioned warehouse migrations: `NNNN_name.sql`, applied in order, never twice."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import ClickHouseError

from sinks.exceptions import MigrationError

FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        """The file's statements with the database name filled in."""
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip().replace("{db}", database) for s in body.split(";") if s.strip()]


def available_migrations() -> list[Migration]:
    """Every migration shipped with sigflow, in version order."""
    found = []
    for entry in resources.files(__package__).iterdir():
        match = FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def apply_migrations(client: AsyncClient, database: str) -> list[Migration]:
    """Create the database and apply pending migrations; return the ones applied now."""
    try:
        await client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
        await client.command(
            f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
            "(version UInt32, name String, checksum String, "
            "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = MergeTree ORDER BY version"
        )
        result = await client.query(
            f"SELECT version, checksum FROM {database}.schema_migrations ORDER BY version"
        )
    except ClickHouseError as exc:
        raise MigrationError(f"cannot prepare database {database!r}: {exc}") from exc
    applied: dict[int, str] = {
        int(version): str(checksum) for version, checksum in result.result_rows
    }
    done = []
    for migration in available_migrations():
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} changed after it "
                    "was applied; add a new migration instead of editing an old one"
                )
            continue
        try:
            for statement in migration.statements(database):
                await client.command(statement)
            await client.insert(
                f"{database}.schema_migrations",
                [[migration.version, migration.name, migration.checksum]],
                column_names=["version", "name", "checksum"],
            )
        except ClickHouseError as exc:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} failed: {exc}"
            ) from exc
        done.append(migration)
    return done
