"""Bulk materialization: the latest feature rows into the online store, in Feast's own format.

Feast's `materialize` turns every value into a protobuf object and writes one view of one
customer at a time from Python; at a million customers that takes many minutes. This module
does the same job in bulk:
- DuckDB picks the latest row per customer and view in [start, end] (Feast's rule) and hands
  them over in Arrow batches, so memory is bounded by the batch, not the population;
- each *distinct* value of a column is converted once, with Feast's own converter
  (`python_values_to_proto_values`), and rows reuse those bytes;
- Redis gets one pipelined HSET per customer carrying all views (Feast sends one per
  view: the resulting hash is the same); SQLite gets one `executemany` per batch with
  Feast's upsert.

The views are those the feature build wrote (`views.json`; text customer ids). As
`features.store.materialize` does, a view of one row per customer (a snapshot, a customers source stamped at signup) is
read from its first row, not from `start`: a customer's row holds their attributes for good.

The keys and bytes are exactly those Feast writes (tests compare them byte for byte with
Feast's own `materialize`), so `FeatureStore.get_online_features`, and the serving code that
reads through it, cannot tell the difference.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureStore, FeatureView
from feast.errors import FeatureViewNotFoundException
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name, extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from churn.errors import ConfigError, DataError, StoreUnavailableError
from churn.settings import Settings
from features.pit import views_of
from features.store import PROJECT, feature_store, redis_retry

JOIN_KEY = "customer_id"
# a double Value is the tag of field 5 (`double_val`, 64-bit) and 8 little-endian bytes: 9 bytes
_DOUBLE_RESP_HEAD = b"$9\r\n\x29"
_EMPTY_RESP = b"$0\r\n\r\n"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class BulkMaterializeResult:
    """What `materialize_bulk` wrote, and how fast."""

    online_store: str
    customers: int
    views: list[str]
    seconds: float

    @property
    def customers_per_second(self) -> float:
        return self.customers / self.seconds if self.seconds else float("inf")


def materialize_bulk(
    settings: Settings, start: datetime, end: datetime, batch_rows: int = 20_000,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> BulkMaterializeResult:
    """Write the latest feature row in [start, end] of every customer and view to the online store.

    The views must be registered (`churn features apply`). The store is the one in the
    settings (SQLite or Redis). Like Feast's `materialize`, the interval is recorded in the
    registry, and a customer with no row in the interval is left as it was.
    `progress(done, total)` after each batch of `batch_rows` customers is written (`total`:
    the customers to write, counted first).
    """
    start_clock = time.perf_counter()
    store = feature_store(settings)
    tables = views_of(settings.feature_tables_dir)
    views = [_registered_view(store, v.name) for v in tables]
    timeless = {v.name for v in tables if v.ttl is None}
    starts = {v.name: (_first_row(v.path) if v.name in timeless else start) for v in tables}
    starts = {name: min(_utc(first), _utc(end)) for name, first in starts.items()}
    total = _customers_in(views, starts, end)
    writer = _RedisWriter(store, views) if settings.online_store == "redis" else _SqliteWriter(store, views)
    customers = 0
    try:
        for batch in latest_rows(views, starts, end, batch_rows):
            writer.write(batch)
            customers += batch.num_rows
            progress(customers, total)
    finally:
        writer.close()
    for view in views:
        store.registry.apply_materialization(view, PROJECT, starts[view.name], end, commit=True)
    return BulkMaterializeResult(settings.online_store, customers, [v.name for v in views], time.perf_counter() - start_clock)


def _registered_view(store: FeatureStore, name: str) -> FeatureView:
    try:
        return store.get_feature_view(name)
    except FeatureViewNotFoundException as exc:
        raise DataError(f"feature view {name!r} is not registered in {store.repo_path}; run `churn features apply`") from exc


def _first_row(path: Path) -> datetime:
    """The earliest event_timestamp of a view's table."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        first = con.execute(f"SELECT min(event_timestamp) FROM read_parquet('{path}')").fetchone()[0]
    finally:
        con.close()
    if first is None:
        raise DataError(f"{path}: the feature table has no rows")
    return first


def _customers_in(views: list[FeatureView], start: dict[str, datetime], end: datetime) -> int:
    """Customers with a row in [start, end] of at least one view: the rows `latest_rows` hands over.

    Cheap next to `latest_rows`: two columns, and the tables are sorted by event_timestamp,
    so DuckDB skips the row groups outside the interval.
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        ids = " UNION ".join(
            f"SELECT {JOIN_KEY} FROM read_parquet('{view.batch_source.path}') "
            f"WHERE event_timestamp BETWEEN TIMESTAMPTZ '{_utc(start[view.name]).isoformat()}' AND TIMESTAMPTZ '{_utc(end).isoformat()}'"
            for view in views
        )
        return con.execute(f"SELECT count(*) FROM ({ids})").fetchone()[0]
    finally:
        con.close()


def latest_rows(
    views: list[FeatureView], start: datetime | dict[str, datetime], end: datetime, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Batches of one row per customer: each view's latest row in [start, end], views side by side.

    `start`: one for all views, or per view name. Columns: customer_id, then per view
    `_ts_<view>` (null if the view has no row for the customer in the interval) and the
    view's features.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    starts = start if isinstance(start, dict) else {v.name: start for v in views}
    selects, joins = [], []
    for view in views:
        bounds = (_utc(starts[view.name]).isoformat(), _utc(end).isoformat())
        columns = ", ".join(f'"{f.name}"' for f in view.features)
        con.execute(
            f"""
            CREATE TEMP VIEW "latest_{view.name}" AS
            SELECT {JOIN_KEY}, CAST(event_timestamp AS TIMESTAMPTZ) AS "_ts_{view.name}", {columns}
            FROM read_parquet('{view.batch_source.path}')
            WHERE event_timestamp BETWEEN TIMESTAMPTZ '{bounds[0]}' AND TIMESTAMPTZ '{bounds[1]}'
            QUALIFY row_number() OVER (PARTITION BY {JOIN_KEY} ORDER BY event_timestamp DESC) = 1
            """
        )
        selects.append(f'"latest_{view.name}".* EXCLUDE ({JOIN_KEY})')
        joins.append(f'LEFT JOIN "latest_{view.name}" USING ({JOIN_KEY})')
    ids = " UNION ".join(f'SELECT {JOIN_KEY} FROM "latest_{v.name}"' for v in views)
    key_type = con.execute(f"SELECT typeof({JOIN_KEY}) FROM ({ids}) LIMIT 1").fetchall()
    order = _TEXT_KEY_ORDER if key_type and key_type[0][0] == "VARCHAR" else _KEY_BYTE_ORDER
    reader = con.sql(
        f"SELECT k.{JOIN_KEY}, {', '.join(selects)} FROM ({ids}) k {' '.join(joins)} ORDER BY {order}"
    ).to_arrow_reader(batch_rows)
    try:
        yield from reader
    finally:
        con.close()


# Feast's key of an int64 id ends with its 8 little-endian bytes: ordering by them byte by byte
# hands rows over in key order, so SQLite appends to its primary-key B-tree instead of
# inserting at random places (several times faster at a million customers).
_KEY_BYTE_ORDER = ", ".join(f"(k.{JOIN_KEY} >> {8 * i}) & 255" for i in range(8))
# A text id's key ends with its length (4 little-endian bytes) and its UTF-8 bytes: for ids
# shorter than 256 bytes, by length, then byte by byte.
_TEXT_KEY_ORDER = f"octet_length(encode(k.{JOIN_KEY})), encode(k.{JOIN_KEY})"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


class _Encoder:
    """Feast's serialized bytes for entity keys, feature values and timestamps.

    Each distinct value of a feature is converted once with Feast's own converter and
    remembered across batches, so the cost is per distinct value, not per row.
    """

    def __init__(self, store: FeatureStore):
        self.version = store.config.entity_key_serialization_version
        # A single int64 join key serializes as a constant prefix + the value's 8 little-endian bytes;
        # a text one as a constant prefix + its length (4 little-endian bytes) + its UTF-8 bytes.
        self._prefix = self._feast_key(0)[:-8]
        self._text_prefix = self._feast_key("")[:-4]
        self._cache: dict[str, dict] = {}
        self._checked: set[str] = set()

    def _feast_key(self, customer_id) -> bytes:
        value = Value(string_val=customer_id) if isinstance(customer_id, str) else Value(int64_val=int(customer_id))
        key = EntityKey(join_keys=[JOIN_KEY], entity_values=[value])
        return serialize_entity_key(key, entity_key_serialization_version=self.version)

    def entity_keys(self, ids: np.ndarray) -> np.ndarray:
        if ids.dtype.kind in "iu":
            raw = ids.astype("<i8").tobytes()
            keys = np.array([self._prefix + raw[i : i + 8] for i in range(0, len(raw), 8)], dtype=object)
        else:
            prefix = self._text_prefix
            encoded = [i.encode() for i in ids.tolist()]
            keys = np.array([prefix + len(b).to_bytes(4, "little") + b for b in encoded], dtype=object)
        for i in {0, len(keys) - 1} if len(keys) else ():  # guard: a change of Feast's key format fails loudly
            if keys[i] != self._feast_key(ids[i]):
                raise DataError(f"entity key of customer_id {ids[i]} differs from Feast's serialization")
        return keys

    def values(
        self, name: str, column: pa.Array, value_type, text: bool = True, prefix: bytes = b""
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(serialized Value bytes, value_text, `prefix` + the bytes as a Redis bulk string) per row of one feature.

        Feast converts `column.to_numpy(zero_copy_only=False)` (nulls become NaN or None);
        so do we, on the distinct values only. `text=False` skips value_text (only SQLite has it).
        """
        array = column.to_numpy(zero_copy_only=False)
        cache = self._cache.setdefault(name, {})
        if array.dtype.kind == "f":
            # floats by bit pattern: -0.0 == 0.0 and NaN != NaN, yet each has its own bytes
            codes, bits = pd.factorize(array.view(np.int64), use_na_sentinel=False)
            uniques = np.asarray(bits).view(np.float64)
            keys = [("f", b) for b in bits.tolist()]
        else:
            codes, uniques = pd.factorize(array, use_na_sentinel=False)
            keys = uniques.tolist()
        missing = [i for i, k in enumerate(keys) if k not in cache]
        if missing:
            protos = python_values_to_proto_values(np.asarray(uniques[missing], dtype=array.dtype), value_type)
            for i, proto in zip(missing, protos):
                blob = proto.SerializeToString()
                cache[keys[i]] = (blob, extract_text_and_num(proto, False)[0] if text else None, resp_bulk(blob))
        found = [cache[k] for k in keys] or [(b"", None, b"")]
        blobs, texts, resp = (np.array([entry[j] for entry in found], dtype=object) for j in range(3))
        if prefix:
            resp = np.array([prefix + r for r in resp.tolist()], dtype=object)
        return blobs[codes], texts[codes], resp[codes]

    def resp_values(self, name: str, column: pa.Array, value_type, prefix: bytes = b"") -> np.ndarray:
        """Per row of one feature, `prefix` + its serialized Value as a Redis bulk string (what `values` returns third).

        A double column is encoded with NumPy: Feast's bytes for a double are the tag of
        `double_val` and its 8 little-endian bytes (an empty Value for NaN), checked against
        Feast's converter on the column's first rows, so a change of format fails loudly.
        Nearly every double (revenues, sessions, trends) is distinct at scale, where the
        per-distinct-value path would convert each one in Python.
        """
        array = column.to_numpy(zero_copy_only=False)
        if value_type != ValueType.DOUBLE or array.dtype != np.float64 or not len(array):
            return self.values(name, column, value_type, text=False, prefix=prefix)[2]
        n = len(array)
        head = prefix + _DOUBLE_RESP_HEAD
        packed = np.empty((n, len(head) + 10), dtype=np.uint8)
        packed[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
        packed[:, len(head) : -2] = array.astype("<f8").view(np.uint8).reshape(n, 8)
        packed[:, -2:] = np.frombuffer(b"\r\n", dtype=np.uint8)
        out = packed.view(f"S{packed.shape[1]}").ravel().astype(object)  # ends in \n: nothing stripped
        nan = np.isnan(array)
        out[nan] = prefix + _EMPTY_RESP
        if name not in self._checked:
            rows = np.flatnonzero(~nan)[:3].tolist() + np.flatnonzero(nan)[:1].tolist()
            feast = python_values_to_proto_values(array[rows], value_type)
            if [prefix + resp_bulk(p.SerializeToString()) for p in feast] != out[rows].tolist():
                raise DataError(f"feature {name!r}: encoded doubles differ from Feast's serialization")
            self._checked.add(name)
        return out

    @staticmethod
    def timestamps(column: pa.Array, prefix: bytes = b"") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(serialized protobuf Timestamp, naive UTC datetime, `prefix` + the bytes as a Redis bulk string) per row; None where null."""
        micros = column.cast(pa.int64()).to_numpy(zero_copy_only=False)
        codes, uniques = pd.factorize(micros, use_na_sentinel=True)
        blobs, naive = [], []
        for us in uniques:
            moment = _EPOCH + timedelta(microseconds=int(us))  # exact, unlike a float division
            stamp = Timestamp()
            stamp.FromDatetime(moment)
            blobs.append(stamp.SerializeToString())
            naive.append(moment.replace(tzinfo=None))
        resp = np.array([prefix + resp_bulk(b) for b in blobs] + [None], dtype=object)
        blobs, naive = np.array(blobs + [None], dtype=object), np.array(naive + [None], dtype=object)
        return blobs[codes], naive[codes], resp[codes]

    def resp_keys(self, ids: np.ndarray, suffix: bytes) -> np.ndarray:
        """Per customer, its Redis key (Feast's entity key + `suffix`) as a bulk string, built with NumPy."""
        keys = self.entity_keys(ids)  # checks the format against Feast's
        if ids.dtype.kind not in "iu":  # text ids: keys of varying length
            return np.array([resp_bulk(k + suffix) for k in keys.tolist()], dtype=object)
        width = len(self._prefix) + 8 + len(suffix)
        head = b"$%d\r\n%b" % (width, self._prefix)
        n = len(ids)
        packed = np.empty((n, len(head) + 8 + len(suffix) + 2), dtype=np.uint8)
        packed[:, : len(head)] = np.frombuffer(head, dtype=np.uint8)
        packed[:, len(head) : len(head) + 8] = ids.astype("<i8").view(np.uint8).reshape(n, 8)
        packed[:, len(head) + 8 :] = np.frombuffer(suffix + b"\r\n", dtype=np.uint8)
        out = packed.view(f"S{packed.shape[1]}").ravel().astype(object)  # ends in \n: nothing stripped
        for i in {0, n - 1} if n else ():
            if out[i] != resp_bulk(keys[i] + suffix):
                raise DataError(f"Redis key of customer_id {ids[i]} differs from Feast's")
        return out


def resp_bulk(value: bytes) -> bytes:
    """`value` as a bulk string of the Redis protocol (RESP): `$<length>CRLF<bytes>CRLF`."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


# Customers per piece of a pipelined send (about 2 MB with 80 features): within one socket timeout.
_SEND_CUSTOMERS = 1_000
# a Redis that is down (refused, reset) or hung (no answer within the connection string's socket_timeout)
_REDIS_DOWN = (OSError, RedisConnectionError, RedisTimeoutError)


def _unavailable(exc: Exception) -> StoreUnavailableError:
    hung = " (no answer within timeouts.redis_seconds)" if isinstance(exc, RedisTimeoutError) else ""
    return StoreUnavailableError(f"Redis online store unreachable while materializing{hung}: {exc}")


class _RedisWriter:
    """One HSET per customer with `_ts:<view>` and `mmh3(<view>:<feature>)` fields, as Feast lays them out.

    Commands are packed as raw protocol bytes and sent on one connection; a batch is sent by a
    second thread while the next one is encoded, so Redis and the encoder work at once.
    """

    def __init__(self, store: FeatureStore, views: list[FeatureView]):
        from feast.infra.online_stores.redis import RedisOnlineStore

        config = store.config
        if config.online_store.key_ttl_seconds:
            raise ConfigError("bulk materialization does not set Redis key TTLs; unset online_store.key_ttl_seconds")
        self._client = RedisOnlineStore()._get_client(config.online_store)
        self._client.set_retry(redis_retry())
        try:
            self._conn = self._client.connection_pool.get_connection()
        except _REDIS_DOWN as exc:
            self._client.close()
            raise _unavailable(exc) from exc
        self._sender = ThreadPoolExecutor(max_workers=1)
        self._pending: Future | None = None
        self._project = PROJECT.encode()
        self._encoder = _Encoder(store)
        self._views = views
        enable = config.registry.enable_online_feature_view_versioning
        names = {v.name: compute_versioned_name(v, enable) for v in views}
        self._ts_fields = {v.name: f"_ts:{names[v.name]}".encode() for v in views}
        self._fields = {v.name: [_mmh3(f"{names[v.name]}:{f.name}") for f in v.features] for v in views}

    def write(self, batch: pa.RecordBatch) -> None:
        ids = batch.column(JOIN_KEY).to_numpy(zero_copy_only=False)
        keys = self._encoder.resp_keys(ids, self._project)
        n = len(keys)
        # One HSET per customer, as RESP pieces, each a field name and its value (every value is
        # encoded once per distinct value, so a whole batch is packed by one bytes join, whose
        # cost grows with the number of pieces). A view without a row is left out.
        pieces: list[list[np.ndarray]] = []  # per view: [ts field + ts, field + value, ...]
        present = []
        for view in self._views:
            stamps, _, resp_stamps = self._encoder.timestamps(
                batch.column(f"_ts_{view.name}"), prefix=resp_bulk(self._ts_fields[view.name])
            )
            present.append(stamps != None)  # noqa: E711  (elementwise test on an object array)
            columns = [resp_stamps]
            for field, feature in zip(self._fields[view.name], view.features):
                columns.append(
                    self._encoder.resp_values(
                        feature.name, batch.column(feature.name), feature.dtype.to_value_type(), prefix=resp_bulk(field)
                    )
                )
            pieces.append(columns)
        present = np.column_stack(present)
        complete = present.all(axis=1)
        width = 2 + 2 * sum(len(columns) for columns in pieces)  # RESP arguments: HSET, key, field-value pairs
        head = [np.full(n, b"*%d\r\n%b" % (width, resp_bulk(b"HSET")), dtype=object), keys]
        matrix = np.column_stack(head + [c for columns in pieces for c in columns])[complete]
        # sent in pieces of `_SEND_CUSTOMERS`: redis-py applies its socket timeout to each piece as a whole
        chunks = [b"".join(matrix[i : i + _SEND_CUSTOMERS].ravel().tolist()) for i in range(0, len(matrix), _SEND_CUSTOMERS)]
        for i in np.flatnonzero(~complete & present.any(axis=1)):  # rare: some views have no row
            kept = [piece[i] for view_ok, columns in zip(present[i], pieces) if view_ok for piece in columns]
            chunks.append(b"*%d\r\n%b" % (2 + 2 * len(kept), resp_bulk(b"HSET")) + head[1][i] + b"".join(kept))
        self._wait()
        self._pending = self._sender.submit(self._send, chunks, int(complete.sum()) + int((~complete & present.any(axis=1)).sum()))

    def _send(self, chunks: list[bytes], n_commands: int) -> None:
        self._conn.send_packed_command(chunks)
        for _ in range(n_commands):
            self._conn.read_response()  # raises ResponseError on an error reply

    def _wait(self) -> None:
        if self._pending is not None:
            try:
                self._pending.result()
            except _REDIS_DOWN as exc:
                raise _unavailable(exc) from exc
            finally:
                self._pending = None

    def close(self) -> None:
        try:
            self._wait()
        finally:
            self._sender.shutdown()
            self._client.connection_pool.release(self._conn)
            self._client.close()


class _SqliteWriter:
    """Rows (entity_key, feature_name, value, value_text, event_ts, created_ts) with Feast's upsert.

    Rows go in primary-key order (entity key, then feature name), which SQLite appends fast.
    """

    def __init__(self, store: FeatureStore, views: list[FeatureView]):
        online = store.config.online_store
        if getattr(online, "vector_enabled", False) or getattr(online, "enable_openai_compatible_store", False):
            raise ConfigError("bulk materialization writes plain SQLite tables; turn off vector_enabled")
        path = Path(online.path)
        if not path.is_absolute():
            path = Path(store.repo_path) / path
        self._conn = sqlite3.connect(path)
        self._encoder = _Encoder(store)
        self._views = views
        enable = store.config.registry.enable_online_feature_view_versioning
        self._tables = {v.name: compute_table_id(PROJECT, v, enable) for v in views}

    def write(self, batch: pa.RecordBatch) -> None:
        keys = self._encoder.entity_keys(batch.column(JOIN_KEY).to_numpy(zero_copy_only=False))
        with self._conn:
            for view in self._views:
                _, naive, _ = self._encoder.timestamps(batch.column(f"_ts_{view.name}"))
                present = np.flatnonzero(naive != None)  # noqa: E711
                features = sorted(view.features, key=lambda f: f.name)
                encoded = [
                    self._encoder.values(f.name, batch.column(f.name), f.dtype.to_value_type())[:2] for f in features
                ]
                width = len(features)
                blobs = np.column_stack([b[present] for b, _ in encoded]).ravel()
                texts = np.column_stack([t[present] for _, t in encoded]).ravel()
                rows = zip(
                    np.repeat(keys[present], width).tolist(),
                    [f.name for f in features] * len(present),
                    blobs.tolist(),
                    texts.tolist(),
                    np.repeat(naive[present], width).tolist(),
                    itertools.repeat(None),
                )
                self._conn.executemany(
                    f'INSERT INTO "{self._tables[view.name]}" '
                    "(entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                    "value = excluded.value, value_text = excluded.value_text, "
                    "event_ts = excluded.event_ts, created_ts = excluded.created_ts;",
                    rows,
                )

    def close(self) -> None:
        self._conn.close()
