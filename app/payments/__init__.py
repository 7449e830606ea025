"""Payments: the provider's signed webhook, mapped onto the order state machine."""


def init_app(app) -> None:
    from . import models  # noqa: F401  (the models join the metadata)
