"""The bring-your-own-data contract: one config file maps a company's tables onto the engine.

A config (YAML or TOML) names each source (where it is, its customer id column, its
timestamp column, what its columns mean) and how churn is defined. `docs/data-contract.md`
is the reader's version of this module; `examples/` holds configs for three public data sets.

Shapes a source can have:
- `snapshot`: one row per customer with attributes (and optionally a churn label) as of one date;
- `customers`: one row per customer with attributes fixed at signup (acquisition channel, plan
  at signup, region), known from each customer's `signup` on (so every cutoff after it sees them);
- `events` / `transactions`: timestamped rows per customer (transactions carry an amount);
- `cancellations`: explicit churn dates.
Churn is the snapshot's `label`, a `cancellations` source, or `inactivity`: no event or
transaction within `horizon_days` after a cutoff (non-contractual business such as retail).
"""

from __future__ import annotations

import tomllib
from datetime import date
from enum import Enum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from churn.errors import ConfigError
from churn.keys import error_message


class ColumnType(str, Enum):
    """What a column holds; `categorical` stays categorical for LightGBM."""

    INT = "int"
    FLOAT = "float"
    CATEGORICAL = "categorical"
    TIMESTAMP = "timestamp"


class Shape(str, Enum):
    SNAPSHOT = "snapshot"
    CUSTOMERS = "customers"
    EVENTS = "events"
    TRANSACTIONS = "transactions"
    CANCELLATIONS = "cancellations"


LOG_SHAPES = (Shape.EVENTS, Shape.TRANSACTIONS)
# One row per customer: attributes as of one date (snapshot) or since signup (customers).
TABLE_SHAPES = (Shape.SNAPSHOT, Shape.CUSTOMERS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Strict):
    """How to read a delimited text file (passed to pandas.read_csv)."""

    separator: str = Field(",", description="Field separator; `whitespace` for runs of spaces (CDNOW).")
    header: bool = Field(True, description="Whether the first line holds the column names.")
    names: list[str] | None = Field(None, description="Column names when the file has no header (or to rename).")


class Signals(_Strict):
    """Which values of a log source's `kind` column are which customer signal.

    Each declared signal becomes features named as the engine's own (the action catalog reads
    them on any data set): activity -> sessions_7d/28d/91d, active_days_7d/28d/91d,
    activity_trend_7d_28d, days_since_last_active; support_tickets -> tickets_28d/91d;
    complaints -> complaints_28d/91d; failed_payments -> payment_failures_28d/91d;
    plan_changes -> plan_changes_91d; survey (NPS, CSAT, CES answers) -> last_survey_score
    (from `survey_score`) and days_since_survey. Kinds not named here keep the generic counts.
    """

    activity: list[str] = Field(default_factory=list, description="Kinds that are activity (logins, sessions, usage).")
    support_tickets: list[str] = Field(default_factory=list, description="Kinds that are support tickets.")
    complaints: list[str] = Field(default_factory=list, description="Kinds that are complaints.")
    failed_payments: list[str] = Field(default_factory=list, description="Kinds that are failed payments.")
    plan_changes: list[str] = Field(default_factory=list, description="Kinds that are plan changes (up- or downgrades).")
    survey: list[str] = Field(default_factory=list, description="Kinds that are survey answers (NPS, CSAT, CES).")
    survey_score: str | None = Field(None, description="Numeric column holding a survey answer's score.")
    activity_sessions: str | None = Field(
        None, description="Numeric column holding the sessions an activity row stands for (a daily summary); default 1 a row."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _kinds_as_text(cls, value):
        # a kind column is text once ingested; `[1, 2]` in a config means the values "1", "2"
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _score_with_survey(self) -> Signals:
        if self.activity_sessions and not self.activity:
            raise ValueError("signals.activity_sessions counts the sessions of activity rows: declare signals.activity too")
        if self.survey and not self.survey_score:
            raise ValueError("signals.survey needs signals.survey_score: the column holding the answer's score")
        named = [k for name in SIGNAL_KINDS for k in getattr(self, name)]
        repeated = sorted({k for k in named if named.count(k) > 1})
        if repeated:
            raise ValueError(f"signals: kinds {repeated} are named for more than one signal")
        return self

    def declared(self) -> dict[str, list[str]]:
        """signal -> its kinds, for the signals that name any."""
        return {name: getattr(self, name) for name in SIGNAL_KINDS if getattr(self, name)}


ROW_ID = "row_id"  # the id column a snapshot with `row_id: true` gets: its row number in the source


def label_text(value) -> str:
    """A label value as the engine compares it: text, stripped, a whole number without its ".0" (1, 1.0, "1" -> "1")."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


SIGNAL_KINDS = ("activity", "support_tickets", "complaints", "failed_payments", "plan_changes", "survey")


class Source(_Strict):
    """One table of the company's data and what its columns mean."""

    shape: Shape = Field(description="snapshot, customers, events, transactions or cancellations.")
    path: str | None = Field(
        None,
        description="CSV or Parquet file, relative to the config's `data_root`; a glob (`part-*.csv`) reads every "
        "matching file in sorted order as one table.",
    )
    url: str | None = Field(None, description="SQLAlchemy URL of a PostgreSQL database (with `table` or `query`).")
    table: str | None = Field(None, description="Table to read from `url`.")
    query: str | None = Field(None, description="SQL query to run on `url`.")
    csv: CsvOptions = Field(CsvOptions(), description="Reading options for CSV files.")
    na_values: list[str] = Field(default_factory=list, description="Strings that mean 'no value' (e.g. ' ').")
    customer_id: str | None = Field(None, description="Column with the customer id (text, whatever its type in the table).")
    row_id: bool = Field(
        False, description="snapshot without an id column: the row number in the source (1, 2, ...) is the customer id."
    )
    timestamp: str | None = Field(None, description="Column with the row's time (required for logs and cancellations).")
    timestamp_format: str | None = Field(
        None, description="strftime format of `timestamp` and `signup`; default: inferred (numeric day/month order from the whole column)."
    )
    where: str | None = Field(None, description="SQL filter (DuckDB) applied after typing, e.g. `CustomerID IS NOT NULL`.")
    derive: dict[str, str] = Field(default_factory=dict, description="New columns as SQL expressions, e.g. `amount: Quantity * UnitPrice`.")
    columns: dict[str, ColumnType] = Field(default_factory=dict, description="Declared column types; others are inferred.")
    ignore: list[str] = Field(default_factory=list, description="Columns never used as features (free text, ids).")
    amount: str | None = Field(None, description="transactions: the money column (summed, RFM monetary).")
    values: list[str] = Field(default_factory=list, description="logs: further numeric columns summed over windows.")
    kind: str | None = Field(None, description="logs: a column whose most frequent values get their own counts.")
    signals: Signals = Field(Signals(), description="logs: which values of `kind` are activity, tickets, complaints, ...")
    allow_negative: list[str] = Field(default_factory=list, description="Numeric columns that may be negative (amount may not, unless listed).")
    label: str | None = Field(None, description="snapshot: the churn label column.")
    positive: list[str] = Field(
        default_factory=lambda: ["1", "Yes", "yes", "True", "true"],
        description="Label values that mean churned, as text or numbers (`[1]` matches a label read as 1 or 1.0).",
    )
    signup: str | None = Field(None, description="snapshot, customers: signup timestamp column; log rows before it are errors.")
    tenure: str | None = Field(None, description="snapshot: numeric column holding tenure (no `signup`): gives `tenure_days`.")
    tenure_unit: Literal["days", "weeks", "months", "years"] = Field(
        "days", description="Unit of `tenure` (a month is 30.44 days, a year 365.25)."
    )
    as_of: date | None = Field(None, description="snapshot: the date its attributes and label describe.")

    @field_validator("positive", mode="before")
    @classmethod
    def _labels_as_text(cls, value):
        # `positive: [1, "Yes"]`: the label is compared as text, a whole number without its ".0"
        return [label_text(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _where_and_what(self) -> Source:
        places = [p for p in ("path", "table", "query") if getattr(self, p)]
        if len(places) != 1:
            raise ValueError(f"give exactly one of path, table, query; got {places or 'none'}")
        if (self.table or self.query) and not self.url:
            raise ValueError("a table or query needs a database `url`")
        if self.row_id and self.shape != Shape.SNAPSHOT:
            raise ValueError(
                f"`row_id` is for a snapshot (one row per customer); the rows of a {self.shape.value} source "
                "must name their customer in `customer_id`"
            )
        if self.row_id and self.customer_id:
            raise ValueError("give `customer_id` (the id column) or `row_id: true` (the row number is the id), not both")
        if not self.row_id and not self.customer_id:
            other = " (or, for a snapshot without one, `row_id: true`)" if self.shape == Shape.SNAPSHOT else ""
            raise ValueError(f"a source needs `customer_id`: the column with the customer id{other}")
        if self.shape not in TABLE_SHAPES and not self.timestamp:
            raise ValueError(f"a {self.shape.value} source needs a `timestamp` column")
        if self.shape == Shape.CUSTOMERS and not self.signup:
            raise ValueError("a customers source needs `signup`: its attributes are known from each customer's signup on")
        if self.shape == Shape.CUSTOMERS and (self.label or self.as_of or self.tenure):
            raise ValueError("a customers source has no `label`, `as_of` or `tenure` (use a snapshot for attributes as of one date)")
        if self.shape == Shape.SNAPSHOT and not self.as_of:
            raise ValueError("a snapshot source needs `as_of`: the date its attributes and label describe")
        if self.shape == Shape.TRANSACTIONS and not self.amount:
            raise ValueError("a transactions source needs an `amount` column")
        if self.signals.declared() and not self.kind:
            raise ValueError("`signals` name values of the `kind` column: give `kind` too")
        if self.tenure and (self.shape != Shape.SNAPSHOT or self.signup):
            raise ValueError("`tenure` is for a snapshot source without `signup` (either gives tenure_days)")
        return self

    @property
    def id_column(self) -> str:
        """The column holding the customer id: `customer_id`, or the row number's column with `row_id`."""
        return self.customer_id or ROW_ID

    def required_columns(self) -> list[str]:
        """Columns the source must have after `derive` (named in the config)."""
        named = [
            self.id_column, self.timestamp, self.amount, self.kind, self.label, self.signup, self.tenure, *self.values,
            self.signals.survey_score, self.signals.activity_sessions,
        ]
        return [c for c in dict.fromkeys(named) if c]

    def numeric_columns(self) -> list[str]:
        return [c for c in (self.amount, *self.values) if c]


class Churn(_Strict):
    """How churn is defined and evaluated."""

    definition: Literal["label", "cancellations", "inactivity"] = Field(description="Where the churn label comes from.")
    horizon_days: int = Field(90, ge=1, description="cancellations/inactivity: churn within this many days after a cutoff.")
    active_days: int = Field(365, ge=7, description="logs: a customer is in the population at a cutoff if active within this many days before it.")


class Evaluation(_Strict):
    """How `churn train` measures quality: stratified folds (snapshot) or rolling cutoffs (logs)."""

    folds: int = Field(5, ge=2, description="snapshot: stratified folds.")
    rolling_cutoffs: int = Field(3, ge=1, description="logs: evaluation cutoffs, the latest a horizon before the data ends.")
    cutoff_spacing_days: int = Field(28, ge=7, description="logs: days between evaluation cutoffs (a multiple of 7).")
    train_cutoffs: int = Field(8, ge=2, description="logs: training cutoffs per evaluation cutoff, every `train_spacing_days`.")
    train_spacing_days: int = Field(14, ge=7, description="logs: days between training cutoffs (a multiple of 7).")
    seed: int = Field(0, description="Seed of folds and models.")

    @model_validator(mode="after")
    def _weekly(self) -> Evaluation:
        for name in ("cutoff_spacing_days", "train_spacing_days"):
            if getattr(self, name) % 7:
                raise ValueError(f"{name} must be a multiple of 7 (log features are weekly); got {getattr(self, name)}")
        return self


class Value(_Strict):
    """What a customer is worth (CLV): the value segments and the value-weighted profit read it.

    `model`: a LightGBM regressor of the transactions' revenue over `horizon_days`;
    `charge`: `column` is a recurring charge per `period_days`, kept while the customer stays
    (expected retained periods from the churn model's hazard, see docs/data-contract.md);
    `column`: `column` is the value as it is; `constant`: everybody is worth `amount`.
    """

    method: Literal["model", "charge", "column", "constant"] | None = Field(
        None, description="model, charge, column or constant; default: model with a transactions source, else constant."
    )
    column: str | None = Field(None, description="charge/column: the snapshot's numeric column (e.g. MonthlyCharges).")
    period_days: int = Field(30, ge=1, description="charge: days one charge of `column` pays for.")
    horizon_days: int = Field(180, ge=7, description="model/charge: days of future revenue the value counts.")
    amount: float | None = Field(None, ge=0, description="constant: the value of every customer; default: settings.profit.clv.")

    @model_validator(mode="after")
    def _column_when_needed(self) -> Value:
        if self.method in ("charge", "column") and not self.column:
            raise ValueError(f"value.method {self.method!r} needs value.column: the snapshot column holding it")
        if self.method not in ("charge", "column") and self.column:
            raise ValueError(f"value.column is read by the methods 'charge' and 'column' only; value.method is {self.method!r}")
        return self


class Contract(_Strict):
    """A whole config file."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Data set name (lower case), used in view names.")
    data_root: str = Field(".", description="Folder that source paths are relative to (itself relative to the config file).")
    sources: dict[str, Source] = Field(description="Sources by name (lower case: a name becomes a Feast view).")
    actions: str | None = Field(None, description="The data set's action catalog (YAML), relative to the config file; `churn ingest` keeps a copy.")
    churn: Churn
    evaluation: Evaluation = Evaluation()
    value: Value = Field(Value(), description="What a customer is worth (CLV); see `Value`.")

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        shapes = [s.shape for s in self.sources.values()]
        for name in self.sources:
            if not name.isidentifier() or name != name.lower():
                raise ValueError(f"source name {name!r} must be a lower-case identifier (it names a Feast view)")
        if sum(shapes.count(shape) for shape in TABLE_SHAPES) > 1:
            raise ValueError(
                "at most one snapshot or customers source (one row per customer); a table split over several files "
                "is one source whose `path` is a glob, e.g. `telco/part-*.csv`"
            )
        numbered = [name for name, s in self.sources.items() if s.row_id]
        if numbered and len(self.sources) > 1:
            raise ValueError(
                f"sources.{numbered[0]}: `row_id` numbers the snapshot's rows, which no other source can name; "
                "use it only when the snapshot is the one source"
            )
        declared = [(signal, name) for name, s in self.sources.items() for signal in s.signals.declared()]
        twice = sorted({signal for signal, _ in declared if [x for x, _ in declared].count(signal) > 1})
        if twice:
            # the signals' features carry no source prefix (the action catalog reads them by name)
            raise ValueError(f"signals {twice} are declared in more than one source; declare each in one")
        if self.churn.definition == "label" and not any(s.label for s in self.sources.values()):
            raise ValueError("churn.definition 'label' needs a snapshot source with a `label` column")
        if self.churn.definition == "cancellations" and Shape.CANCELLATIONS not in shapes:
            raise ValueError("churn.definition 'cancellations' needs a cancellations source")
        if self.churn.definition in ("cancellations", "inactivity") and not any(s in LOG_SHAPES for s in shapes):
            raise ValueError(f"churn.definition {self.churn.definition!r} needs an events or transactions source")
        self._check_value()
        return self

    def _check_value(self) -> None:
        method = self.value_method
        if method == "model" and not self.of_shape(Shape.TRANSACTIONS):
            raise ValueError("value.method 'model' needs a transactions source (its revenue is what the model learns)")
        column = self.value.column
        if column:
            snapshot = self.snapshot
            if snapshot is None:
                raise ValueError(f"value.column {column!r} must be a column of the snapshot source; there is none")
            source = snapshot[1]
            if column in source.ignore:
                raise ValueError(f"value.column {column!r} must be a feature of the snapshot; it is in `ignore`")
            declared = source.columns.get(column)
            if declared in (ColumnType.CATEGORICAL, ColumnType.TIMESTAMP):
                raise ValueError(f"value.column {column!r} must be a numeric column of the snapshot; it is declared {declared.value}")

    @property
    def value_method(self) -> str:
        """The value method: the config's, or the default (model with transactions, else constant)."""
        if self.value.method:
            return self.value.method
        return "model" if self.of_shape(Shape.TRANSACTIONS) else "constant"

    def of_shape(self, *shapes: Shape) -> dict[str, Source]:
        return {name: s for name, s in self.sources.items() if s.shape in shapes}

    @property
    def customers(self) -> tuple[str, Source] | None:
        """The customers source (attributes since signup), if any."""
        found = self.of_shape(Shape.CUSTOMERS)
        return next(iter(found.items())) if found else None

    @property
    def snapshot(self) -> tuple[str, Source] | None:
        found = self.of_shape(Shape.SNAPSHOT)
        return next(iter(found.items())) if found else None


def load_contract(path: Path, data_root: Path | None = None) -> tuple[Contract, Path]:
    """Read a YAML or TOML config; returns the contract and the folder its paths are relative to.

    `data_root` overrides the config's own (e.g. where a machine keeps the public data sets).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text()
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {exc}") from exc
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {error_message(Contract, err)}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: invalid config:\n  {problems}") from exc
    if contract.actions:
        catalog = (path.parent / contract.actions).resolve()
        if not catalog.is_file():
            raise ConfigError(f"{path}: actions: action catalog {catalog} not found")
        contract = contract.model_copy(update={"actions": str(catalog)})
    root = Path(data_root) if data_root else (path.parent / contract.data_root)
    return contract, root.resolve()
