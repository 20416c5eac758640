"""The request path: online features for many customers in one read, scored by raw boosters.

The service answers inside other systems' request paths, so everything that can be done once
is done at start-up (feature-view lookup, category codes, the boosters from `Scorer.load`)
and a request costs one online-store read for all its ids (one Redis pipeline; on SQLite
one query per feature view), two
`Booster.predict` calls on a NumPy array and the policy's NumPy rules. No pandas, no
MLflow pyfunc, no `FeatureStore.get_online_features` (whose per-call planning costs more
than the read itself).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from feast import FeatureStore, ValueType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp
from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
from redis import Redis
from redis.exceptions import RedisError

from churn.errors import DataError, StoreUnavailableError
from churn.ids import ids_text
from features.definitions import FEATURE_TTL
from features.store import redis_retry
from serving.policy import risk_band_of
from serving.scoring import Scorer
from training.calibration import apply_map
from training.explain import reasons_from_records
from training.reason import Reason
from training.registered import RegisteredModel
from training.value import customer_value, value_columns

# What a store outage looks like from the online stores the engine uses (Redis, SQLite).
_STORE_ERRORS = (RedisError, sqlite3.OperationalError, ConnectionError, TimeoutError)


@dataclass(frozen=True)
class OnlineRows:
    """Features of the requested customers, one NumPy column per feature.

    `customer_ids` are the ids' texts (an object array of `str`). `known[i]` is False when
    the online store holds no row for `customer_ids[i]`; `missing[i]` lists the required
    features that did not arrive for a known customer.
    """

    customer_ids: np.ndarray
    columns: dict[str, np.ndarray]
    known: np.ndarray
    missing: list[list[str]]
    # per customer, the event time (epoch seconds) of its oldest view with a TTL, NaN when none; and whether
    # a view is older than its TTL at the `now` the rows were read for (never, without a `now`)
    oldest: np.ndarray | None = None
    stale: np.ndarray | None = None

    @property
    def complete(self) -> np.ndarray:
        """Customers with every required feature, none of them older than its TTL."""
        complete = self.known & np.array([not m for m in self.missing], dtype=bool)
        return complete if self.stale is None else complete & ~self.stale

    def take(self, mask: np.ndarray) -> OnlineRows:
        """The rows where `mask` holds."""
        return OnlineRows(
            customer_ids=self.customer_ids[mask],
            columns={name: values[mask] for name, values in self.columns.items()},
            known=self.known[mask],
            missing=[m for m, keep in zip(self.missing, mask, strict=True) if keep],
            oldest=None if self.oldest is None else self.oldest[mask],
            stale=None if self.stale is None else self.stale[mask],
        )


class OnlineReader:
    """Reads the features of many customers from the online store in one go.

    Redis: one pipelined HMGET per customer for all features (see `_redis_plan`). Other stores:
    the provider's `online_read` per feature view (what `get_online_features` calls
    underneath). Views, feature lists, hash fields and the entity's key type are resolved
    once, here: ids are text, encoded as the entity keeps them (a STRING entity's key is
    the text, an INT64 entity's the integer the text spells).
    """

    def __init__(self, store: FeatureStore, services: list[str], required: list[str] | None = None):
        self.store = store
        self._provider = store._get_provider()
        views: dict[str, list[str]] = {}
        for service in services:
            for projection in store.get_feature_service(service).feature_view_projections:
                names = views.setdefault(projection.name, [])
                names.extend(f.name for f in projection.features if f.name not in names)
        self._views = [(store.get_feature_view(name), names) for name, names in views.items()]
        self._join_key, self._key_type = self._entity_key()
        self.feature_names = [name for _, names in self._views for name in names]
        # features a customer must have to be scored (the models' `required_features`); default: all
        if required is None:
            required = self.feature_names
        self._required = [name for name in self.feature_names if name in set(required)]
        self._redis = self._redis_plan()

    def _entity_key(self) -> tuple[str, ValueType]:
        """The join key and value type of the one entity every feature view is keyed by.

        One entity: a read makes one key per customer for all views (one Redis hash holds
        them all). Only STRING and INT64 keys are ids the engine knows how to spell.
        """
        entities = {entity for view, _ in self._views for entity in view.entities}
        if len(entities) != 1:
            raise DataError(
                f"the feature views {[view.name for view, _ in self._views]} are keyed by the entities {sorted(entities)}; "
                "the online reader needs one customer entity for all of them"
            )
        entity = self.store.get_entity(entities.pop())
        if entity.value_type not in (ValueType.STRING, ValueType.INT64):
            raise DataError(
                f"entity {entity.name!r} has join key type {entity.value_type.name}; customer ids must be STRING or INT64"
            )
        return entity.join_key, entity.value_type

    def _key_value(self, customer: str) -> Value | None:
        """The entity key value of one id text; None when no customer of the entity can have it.

        An INT64 entity's customers have ids that are integers in decimal form: any other
        text ('7590-VHVEG', '007') is an unknown customer, not an error.
        """
        if self._key_type == ValueType.STRING:
            return Value(string_val=customer)
        try:
            number = int(customer)
        except ValueError:
            return None
        if str(number) != customer or not -(2**63) <= number < 2**63:
            return None
        return Value(int64_val=number)

    def _redis_plan(self) -> tuple[Redis, list[bytes | str]] | None:
        """For Redis: the client and the hash fields of every feature, computed once.

        Feast keeps all views of one entity in one Redis hash, so one HMGET per customer,
        all of them in one pipeline, reads every feature in a single round trip (instead
        of one per feature view). The client gets one quick retry instead of redis-py's
        default three with back-off (about 5 s), so an outage is a 503 in milliseconds;
        it reconnects by itself on the next request once Redis is back. The retry is for a
        broken connection only (a pooled one that Redis closed): a read that timed out
        (`timeouts.redis_seconds`, in the connection string) is not tried again, so a Redis
        that hangs costs one timeout, not two.
        """
        online = self._provider.online_store
        if not isinstance(online, RedisOnlineStore):
            return None
        client = online._get_client(self.store.config.online_store)
        client.set_retry(redis_retry())
        fields: list[bytes | str] = []
        for view, names in self._views:
            requested, hset_keys = online._generate_hset_keys_for_features(
                view, list(names), fv_name_override=_versioned_fv_name(view, self.store.config)
            )
            fields += [key for name, key in zip(requested, hset_keys, strict=True) if not name.startswith("_ts:")]
        # each view's event time last, one field per view, so that a read can judge staleness
        fields += [f"_ts:{_versioned_fv_name(view, self.store.config)}" for view, _ in self._views]
        return client, fields

    def read(self, customer_ids: list[str | int], now: datetime | None = None) -> OnlineRows:
        """The latest features of each id; a store that cannot be reached raises `StoreUnavailableError`.

        Ids are text (integers are taken as their decimal text). An id the entity's key
        type cannot hold is an unknown customer. With `now` (the engine's clock), a customer
        whose features of a view are older than the view's TTL is marked stale
        (`OnlineRows.stale`), as Feast's own reads would leave those features out.
        """
        ids = ids_text(customer_ids)
        key_values = [self._key_value(c) for c in ids]
        rows = [i for i, value in enumerate(key_values) if value is not None]  # the ids with a key to read
        keys = [EntityKey(join_keys=[self._join_key], entity_values=[key_values[i]]) for i in rows]
        n = len(ids)
        columns = {name: np.full(n, None, dtype=object) for name in self.feature_names}
        observed = np.full((n, len(self._views)), np.nan)  # event time of each view, epoch seconds
        try:
            if not keys:
                pass  # nobody the store could hold: every id is unknown
            elif self._redis is not None:
                self._read_redis(keys, rows, columns, observed)
            else:
                self._read_views(keys, rows, columns, observed)
        except _STORE_ERRORS as exc:
            raise StoreUnavailableError(
                f"online store ({self.store.config.online_store.type}) is unreachable: {type(exc).__name__}"
            ) from exc
        # a customer is known when the store holds any of its features
        known = np.zeros(n, dtype=bool)
        for values in columns.values():
            known |= values != None  # noqa: E711 - elementwise on an object array
        missing = [
            [name for name in self._required if columns[name][i] is None] if known[i] else []
            for i in range(n)
        ]
        # the views that can go stale only: a view without a TTL (customers stamped at signup) is never "old"
        expires = np.array([bool(view.ttl) for view, _ in self._views], dtype=bool)
        oldest = np.where(np.isnan(observed) | ~expires, np.inf, observed).min(axis=1, initial=np.inf)
        oldest[np.isinf(oldest)] = np.nan
        stale = None
        if now is not None:
            limits = np.array([now.timestamp() - view.ttl.total_seconds() if view.ttl else -np.inf for view, _ in self._views])
            stale = known & (observed < limits).any(axis=1)  # NaN (no row of that view) compares False
        return OnlineRows(ids, columns, known, missing, oldest, stale)

    def _read_redis(
        self, keys: list[EntityKey], rows: list[int], columns: dict[str, np.ndarray], observed: np.ndarray
    ) -> None:
        """Fill the `rows` (positions in the request) of `columns` and `observed` from the hashes of `keys`."""
        client, fields = self._redis
        redis_keys = self._provider.online_store._generate_redis_keys_for_entities(self.store.config, keys)
        with client.pipeline(transaction=False) as pipe:
            for key in redis_keys:
                pipe.hmget(key, fields)
            answers = pipe.execute()
        n_features = len(self.feature_names)
        for i, row in zip(rows, answers, strict=True):
            for name, raw in zip(self.feature_names, row[:n_features], strict=True):
                if raw:
                    _put(columns[name], i, Value.FromString(raw))
            for j, raw in enumerate(row[n_features:]):
                if raw:
                    stamp = Timestamp.FromString(raw)
                    observed[i, j] = stamp.seconds + stamp.nanos / 1e9

    def _read_views(
        self, keys: list[EntityKey], rows: list[int], columns: dict[str, np.ndarray], observed: np.ndarray
    ) -> None:
        """Fill the `rows` (positions in the request) of `columns` and `observed`, one provider read per view."""
        for j, (view, names) in enumerate(self._views):
            answers = self._provider.online_read(
                config=self.store.config, table=view, entity_keys=keys, requested_features=names
            )
            for i, (event_time, values) in zip(rows, answers, strict=True):
                if values and event_time is not None:
                    stamp = event_time if event_time.tzinfo else event_time.replace(tzinfo=timezone.utc)
                    observed[i, j] = stamp.timestamp()
                for name in names if values else ():
                    if name in values:
                        _put(columns[name], i, values[name])

    def ping(self) -> None:
        """Read one (possibly absent) customer: raises `StoreUnavailableError` when the store is down."""
        self.read(["0"])

    def check_ready(self, now: datetime) -> None:
        """Raise `StoreUnavailableError` unless requests can be answered: the store answers, holds features, fresh ones.

        Fresh: every view was materialized up to a date within `FEATURE_TTL` of `now` (the
        engine's clock), as the registry records it; scoring older features would act on
        customers as they were weeks ago. Not empty: a Redis restarted without its data (or a
        SQLite store never filled) answers every customer 404.
        """
        self.ping()
        for view, _ in self._views:
            intervals = self.store.get_feature_view(view.name, allow_registry_cache=False).materialization_intervals
            if not intervals:
                raise StoreUnavailableError(
                    f"online store: feature view {view.name!r} was never materialized; run `churn features materialize`"
                )
            latest = max(end for _, end in intervals)
            latest = latest if latest.tzinfo else latest.replace(tzinfo=timezone.utc)
            if now - latest > FEATURE_TTL:
                raise StoreUnavailableError(
                    f"online store: the features of {view.name!r} are stale: materialized up to {latest:%Y-%m-%d %H:%M} UTC, "
                    f"{(now - latest).days} days before now ({now:%Y-%m-%d %H:%M} UTC, the engine's clock), past the "
                    f"{FEATURE_TTL.days}-day TTL; materialize newer features (`churn features materialize`)"
                )
        try:
            empty = self._redis_empty() if self._redis is not None else self._sqlite_empty()
        except _STORE_ERRORS as exc:
            raise StoreUnavailableError(
                f"online store ({self.store.config.online_store.type}) is unreachable: {type(exc).__name__}"
            ) from exc
        if empty:
            raise StoreUnavailableError(
                f"online store ({self.store.config.online_store.type}) holds no features of project "
                f"{self.store.project!r} (restarted without its data?); run `churn features materialize`"
            )

    def _redis_empty(self, samples: int = 16) -> bool:
        """No key of this project among `samples` random keys (Feast's keys end with the project's name)."""
        client, _ = self._redis
        suffix = self.store.project.encode()
        for _ in range(samples):
            key = client.randomkey()
            if key is None:
                return True
            if key.endswith(suffix):
                return False
        return True

    def _sqlite_empty(self) -> bool:
        from feast.infra.online_stores.sqlite import _table_id

        conn = self._provider.online_store._get_conn(self.store.config)
        view = self._views[0][0]
        row = conn.execute(f'SELECT 1 FROM "{_table_id(self.store.project, view)}" LIMIT 1').fetchone()
        return row is None


def _put(column: np.ndarray, i: int, value: Value) -> None:
    kind = value.WhichOneof("val")
    if kind is not None and kind != "null_val":
        column[i] = getattr(value, kind)


@dataclass(frozen=True)
class Scores:
    """Scores of complete rows, as NumPy arrays in row order."""

    customer_ids: np.ndarray
    churn_probability: np.ndarray
    clv: np.ndarray
    segment: np.ndarray
    risk_band: np.ndarray
    model_version: str
    reasons: list[list[Reason]] | None = None  # when asked for: why each churn risk is high


class FastScorer:
    """The champion boosters of a loaded `Scorer`, applied to `OnlineRows` with NumPy only."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer
        self._codes = {
            model.label: {name: {v: float(k) for k, v in enumerate(model.categories[name])} for name in model.categories}
            for model in scorer.models
        }
        self._value_columns = value_columns(scorer.value)

    def _matrix(self, rows: OnlineRows, model: RegisteredModel) -> np.ndarray:
        out = np.empty((len(rows.customer_ids), len(model.feature_names)), dtype=np.float64)
        codes = self._codes[model.label]
        for j, name in enumerate(model.feature_names):
            values = rows.columns[name]
            if name in codes:
                known = codes[name]
                other = float(len(known))  # a value rare or never seen in training (`training.dataset.to_matrix`)
                for i, value in enumerate(values):
                    out[i, j] = np.nan if value is None else known.get(value, other)
            else:
                out[:, j] = [np.nan if v is None else v for v in values]
        return out

    def score(self, rows: OnlineRows, explain: bool = False) -> Scores:
        """Calibrated churn probability, CLV, segment and risk band of each row (all rows must be complete).

        With `explain`, also the reason codes from the churn model's SHAP contributions.
        """
        churn, clv_model = self.scorer.churn, self.scorer.clv
        X = self._matrix(rows, churn)
        # one thread: a request is at most 1,000 rows, and waking OpenMP's pool costs more
        # (tens of ms when the cores are busy) than the trees themselves
        raw = churn.booster.predict(X, num_threads=1)
        # calibrated on held-out data at training time, as in `Scorer.score`
        probability = apply_map(churn.extra["calibration"], raw)
        predicted = None if clv_model is None else clv_model.booster.predict(self._matrix(rows, clv_model), num_threads=1)
        columns = {c: np.array([np.nan if v is None else v for v in rows.columns[c]], dtype=float) for c in self._value_columns}
        clv = customer_value(self.scorer.value, columns, probability, predicted)
        reasons = None
        if explain:
            contrib = churn.booster.predict(X, pred_contrib=True, num_threads=1)[:, :-1]
            names = churn.feature_names
            records = [{name: rows.columns[name][i] for name in names} for i in range(len(rows.customer_ids))]
            reasons = reasons_from_records(records, contrib, names)
        return Scores(
            customer_ids=rows.customer_ids,
            churn_probability=probability,
            clv=clv,
            segment=self.scorer.segments(clv),
            risk_band=risk_band_of(probability, self.scorer.catalog.risk_bands),
            model_version=self.scorer.model_version,
            reasons=reasons,
        )
