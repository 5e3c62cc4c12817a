"""fleetprov: AWS IoT Fleet Provisioning for Python, over the bundled libfleetprov.

Synchronous::

    import fleetprov
    identity = fleetprov.provision(
        endpoint="xxxx-ats.iot.eu-west-1.amazonaws.com",
        cert_file="claim.pem.crt", key_file="claim.pem.key",
        template_name="FleetTemplate", parameters={"SerialNumber": "1"},
        output_dir="/var/lib/mydevice/identity",
    )

asyncio: ``await fleetprov.aio.provision(...)`` with the same arguments. The three
operations one by one: ``fleetprov.Client`` / ``fleetprov.aio.Client``. Errors are
``FleetprovError`` subclasses, one per C result code. The library's log goes to the
``logging`` logger "fleetprov".
"""

from . import aio
from ._api import Client, provision
from ._codes import (
    RESULT_CODES,
    AlreadyConnectedError,
    BadReplyError,
    CancelledError,
    DisconnectedError,
    InternalError,
    InvalidArgumentError,
    InvalidUtf8Error,
    IoError,
    NotConnectedError,
    NullArgumentError,
    PanicError,
    ProtocolError,
    PublishRefusedError,
    RejectedError,
    SignerError,
    StoreError,
    SubscribeRefusedError,
    TlsError,
)
from ._codes import ConnectionError as ConnectionError  # noqa: A004 - not in __all__
from ._codes import ConnectionRefusedError as ConnectionRefusedError  # noqa: A004
from ._codes import TimeoutError as TimeoutError  # noqa: A004
from ._core import TRACE, version
from ._errorbase import FleetprovError
from ._signer import SignFunction, Signer
from ._ffi import library_path
from ._types import (
    Certificate,
    KeysAndCertificate,
    KeyType,
    PayloadFormat,
    Pkcs11Key,
    Progress,
    Provisioned,
    RegisteredThing,
    RetryPolicy,
    SignatureScheme,
    Step,
)

__version__ = "0.1.0"

# fleetprov.TimeoutError, .ConnectionError and .ConnectionRefusedError are left out of
# __all__: `from fleetprov import *` must not shadow the built-in exceptions (which they
# subclass) in the importing module.
__all__ = [
    "aio",
    "provision",
    "Client",
    "version",
    "library_path",
    "TRACE",
    "RESULT_CODES",
    "KeyType",
    "PayloadFormat",
    "Step",
    "Progress",
    "Pkcs11Key",
    "Signer",
    "SignFunction",
    "SignatureScheme",
    "RetryPolicy",
    "Provisioned",
    "Certificate",
    "KeysAndCertificate",
    "RegisteredThing",
    "FleetprovError",
    "NullArgumentError",
    "InvalidUtf8Error",
    "InvalidArgumentError",
    "IoError",
    "TlsError",
    "DisconnectedError",
    "SubscribeRefusedError",
    "RejectedError",
    "BadReplyError",
    "CancelledError",
    "NotConnectedError",
    "AlreadyConnectedError",
    "PanicError",
    "InternalError",
    "ProtocolError",
    "PublishRefusedError",
    "SignerError",
    "StoreError",
]
