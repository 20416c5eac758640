"""The shape of one reason code: a pydantic model with no heavy imports.

The service's response schema uses it, and the service module must import fast (BentoML's
`serve` command imports it once in its own process before starting workers), so it lives
apart from `training/explain.py`, which computes reasons with LightGBM and pandas.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Reason(BaseModel):
    """One reason why a customer's churn risk is high."""

    code: str = Field(description="Reason group: activity, complaints, support, payments, downgrade, tenure, ...")
    feature: str = Field(description="The model feature whose contribution this reason reports.")
    text: str = Field(description="The reason in words, from the customer's own values.")
    contribution: float = Field(description="SHAP contribution to the churn log-odds (positive raises risk).")
