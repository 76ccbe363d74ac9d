"""Records journaled before they were priced are priced when they are read back.

Pricing runs on llmmeter's pipeline thread (see :func:`llmmeter.pipeline.complete`), after the
caller's thread journaled the record: a record whose process died in between is in the journal
with ``cost_status == "pending"``. Whoever reads it back -- the writer catching up on a spilled
segment, the next process or ``llmmeter report`` replaying a dead journal -- prices it here with
the price table in force there (the configured one, else the bundled table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmmeter._log import internal_error
from llmmeter.record import CostStatus
from llmmeter.store.schema import COLUMN_NAMES, record_from_row, record_to_row

if TYPE_CHECKING:
    from llmmeter.pricing import PricingRegistry

__all__ = ["price_pending"]

_COST_STATUS = COLUMN_NAMES.index("cost_status")
_PENDING = CostStatus.PENDING.value


def price_pending(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """``row`` as is, or, when it was journaled before pricing, priced (``error`` if that fails)."""
    if row[_COST_STATUS] != _PENDING:
        return row
    try:
        record = record_from_row(dict(zip(COLUMN_NAMES, row, strict=True)))
        registry = _registry()
        if registry is None:
            record.cost_status = CostStatus.DISABLED
        else:
            registry.price(record)
        return record_to_row(record)
    except Exception:
        internal_error("pricing a record read back from the journal")
        return (*row[:_COST_STATUS], CostStatus.ERROR.value, *row[_COST_STATUS + 1 :])


def _registry() -> PricingRegistry | None:
    # Imported here: reading a store (``llmmeter report``) needs the price table only for a
    # record journaled before it was priced, and loading it takes longer than a small report.
    from llmmeter import config
    from llmmeter.pricing import PricingRegistry

    settings = config.current_settings()  # never configures: a report must not start a store
    return settings.pricing if settings is not None else PricingRegistry.default()
