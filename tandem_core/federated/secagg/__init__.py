"""Secure aggregation of sparse submodel updates (Bonawitz et al., CCS 2017); see `protocol`."""

from tandem_core.federated.secagg.field import Quantiser
from tandem_core.federated.secagg.protocol import (
    EncryptedShare,
    InvalidMessage,
    KeyAdvert,
    MaskedInput,
    RoundAborted,
    SecAggClient,
    SecAggParams,
    SecAggResult,
    SecAggServer,
    UnmaskShares,
    WrongStage,
)

__all__ = [
    "EncryptedShare",
    "InvalidMessage",
    "KeyAdvert",
    "MaskedInput",
    "Quantiser",
    "RoundAborted",
    "SecAggClient",
    "SecAggParams",
    "SecAggResult",
    "SecAggServer",
    "UnmaskShares",
    "WrongStage",
]
