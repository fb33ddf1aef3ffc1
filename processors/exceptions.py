"""Errors of the stream processors."""

from __future__ import annotations

from sigflow.exceptions import SigflowError


class IndicatorInputError(SigflowError):
    """A candle an indicator cannot take (non-finite or non-positive price, high < low).

    Raised before any state changes, so the caller can route the candle to the DLQ and
    the series continues unharmed.
    """


class IndicatorStateError(SigflowError):
    """Stored indicator state that does not fit the indicator (wrong kind or period)."""


class SignalRuleError(SigflowError):
    """A signal rules file that cannot work: the message names the file, the rule and why.

    Raised when the rules are loaded, never per candle, so a bad edit stops the processor
    at start-up instead of silently dropping signals.
    """


class AnomalyRuleError(SigflowError):
    """An anomaly rules file that cannot work: the message names the file, field and why.

    Raised when the rules are loaded, so a bad edit stops the processor at start-up.
    """


class AlertRuleError(SigflowError):
    """An alert rules file that cannot work: the message names the file, rule and why."""


class TokenPricesError(SigflowError):
    """A token pricing file that cannot work: the message names the file, field and why."""


class CandleStateError(SigflowError):
    """Saved candle state that the configured intervals cannot continue (the message says
    which interval changed and what to do)."""
