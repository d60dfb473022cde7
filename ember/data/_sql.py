"""``read_sql``: the rows of a query through a Python DB-API 2 connection, in read tasks.

The query is counted on the driver (``SELECT COUNT(*) FROM (query)``); each read task opens
its own connection with ``connection_factory`` and reads its share with ``LIMIT``/``OFFSET``.
A database that cannot count or page the query is read by one task.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ember.data.block import BlockMetadata
from ember.data.datasource import Datasource, ReadTask


def _execute(connection_factory: Callable[[], Any], sql: str, params: Any
             ) -> tuple[list[str], list[Any]]:
    connection = connection_factory()
    try:
        cursor = connection.cursor()
        try:
            if params is None:
                cursor.execute(sql)
            else:
                cursor.execute(sql, params)
            names = [d[0] for d in cursor.description or ()]
            return names, cursor.fetchall()
        finally:
            cursor.close()
    finally:
        connection.close()


def _read(connection_factory: Callable[[], Any], sql: str, params: Any) -> list[pa.Table]:
    names, rows = _execute(connection_factory, sql, params)
    if not names:
        raise ValueError(f"read_sql: the query {sql!r} returns no columns; read_sql needs a "
                         "query that returns rows (a SELECT)")
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(names)
    return [pa.table({name: pa.array(list(values)) for name, values in zip(
        names, columns, strict=True)})]


class SQLDatasource(Datasource):
    """The datasource behind ``read_sql``."""

    def __init__(self, sql: str, connection_factory: Callable[[], Any],
                 params: Any = None) -> None:
        self.sql = sql
        self.connection_factory = connection_factory
        self.params = params

    def get_name(self) -> str:
        return "SQL"

    def get_read_tasks(self, parallelism: int, **kwargs: Any) -> list[ReadTask]:
        one = [ReadTask(functools.partial(_read, self.connection_factory, self.sql,
                                          self.params), BlockMetadata(num_rows=None))]
        if parallelism <= 1:
            return one
        inner = self.sql.strip().rstrip(";")
        try:
            _, counted = _execute(self.connection_factory,
                                  f"SELECT COUNT(*) FROM ({inner}) AS ember_count", self.params)
            total = int(counted[0][0])
        except Exception:  # the database cannot count this query: one task reads it all
            return one
        shares = min(parallelism, max(total, 1))
        tasks = []
        for i in range(shares):
            start, end = total * i // shares, total * (i + 1) // shares
            sql = f"SELECT * FROM ({inner}) AS ember_share LIMIT {end - start} OFFSET {start}"
            tasks.append(ReadTask(functools.partial(_read, self.connection_factory, sql,
                                                    self.params),
                                  BlockMetadata(num_rows=end - start)))
        return tasks
