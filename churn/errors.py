"""One root exception and its specific kinds.

They become HTTP statuses only in `serving/` (400 bad input, 404 unknown customer or
decision, 409 an outcome not known yet, 503 a store is down); everywhere else they carry a message that names the thing,
the rule it broke and the value it got.
"""


class ChurnError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigError(ChurnError):
    """A settings file, environment variable or action catalog is invalid."""


class DataError(ChurnError):
    """Input data (a raw table, a feature table, a request) breaks the contract."""


class UnknownCustomerError(DataError):
    """A customer id that the feature store does not know."""


class UnknownDecisionError(DataError):
    """An outcome for a campaign and customer with no recorded decision."""


class OutcomeNotYetKnownError(DataError):
    """An outcome whose horizon has not ended by the engine's clock."""


class ModelNotFoundError(ChurnError):
    """No registered model (or no `champion` alias) where one was expected."""


class StoreUnavailableError(ChurnError):
    """A store (online store, ledger, registry) cannot be reached."""
