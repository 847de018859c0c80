"""Entity and activation store backends; `sqlite` is the embedded default.

Each backend implements `squall.abc.EntityStore` and/or `squall.abc.ActivationStore` and is
checked by the contract suite in `tests/contract`.
"""
