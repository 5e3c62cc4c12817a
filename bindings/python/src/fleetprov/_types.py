"""The values fleetprov's functions take and return."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from . import _codes


class KeyType(enum.IntEnum):
    """Where the device's key comes from in ``provision()`` (``fp_key_type``)."""

    #: An EC P-256 key made on the device, CreateCertificateFromCsr (the default).
    EC_P256 = _codes.FP_KEY_EC_P256
    #: An EC P-384 key made on the device, CreateCertificateFromCsr.
    EC_P384 = _codes.FP_KEY_EC_P384
    #: RSA-2048 made on the device (only in a library built with the ``rsa-keygen`` feature).
    RSA_2048 = _codes.FP_KEY_RSA_2048
    #: Key and certificate made by the service: CreateKeysAndCertificate.
    SERVICE = _codes.FP_KEY_SERVICE


class PayloadFormat(enum.IntEnum):
    """The payload format of the provisioning requests and replies."""

    JSON = _codes.FP_PAYLOAD_JSON
    CBOR = _codes.FP_PAYLOAD_CBOR


class Step(enum.IntEnum):
    """The steps ``provision()`` reports to its progress callback (``fp_provision_step``)."""

    CONNECTING = _codes.FP_STEP_CONNECTING
    CREATING = _codes.FP_STEP_CREATING
    REGISTERING = _codes.FP_STEP_REGISTERING
    SAVING = _codes.FP_STEP_SAVING
    VERIFYING = _codes.FP_STEP_VERIFYING
    RETRY_SCHEDULED = _codes.FP_STEP_RETRY_SCHEDULED
    REUSING = _codes.FP_STEP_REUSING
    ROTATING = _codes.FP_STEP_ROTATING
    CERTIFICATE_ABANDONED = _codes.FP_STEP_CERTIFICATE_ABANDONED


class SignatureScheme(enum.IntEnum):
    """What a ``Signer``'s sign function is asked for (``fp_signature_scheme``)."""

    ECDSA_P256_SHA256 = _codes.FP_SIGNATURE_ECDSA_P256_SHA256
    ECDSA_P384_SHA384 = _codes.FP_SIGNATURE_ECDSA_P384_SHA384
    RSA_PKCS1_SHA256 = _codes.FP_SIGNATURE_RSA_PKCS1_SHA256
    RSA_PKCS1_SHA384 = _codes.FP_SIGNATURE_RSA_PKCS1_SHA384
    RSA_PKCS1_SHA512 = _codes.FP_SIGNATURE_RSA_PKCS1_SHA512
    RSA_PSS_SHA256 = _codes.FP_SIGNATURE_RSA_PSS_SHA256
    RSA_PSS_SHA384 = _codes.FP_SIGNATURE_RSA_PSS_SHA384
    RSA_PSS_SHA512 = _codes.FP_SIGNATURE_RSA_PSS_SHA512


@dataclass(frozen=True)
class Progress:
    """One progress event of ``provision()``."""

    step: Step
    #: The try this step belongs to, counted from 1.
    attempt: int
    #: For ``Step.RETRY_SCHEDULED``: the wait before the next try, in milliseconds; else 0.
    delay_ms: int
    #: What the step is about (never key material): "claim"/"device" for CONNECTING, the
    #: template name for REGISTERING, the reason for RETRY_SCHEDULED, the given-up
    #: certificate's id for CERTIFICATE_ABANDONED, ...
    detail: str


@dataclass(frozen=True)
class Pkcs11Key:
    """A private key in a PKCS#11 token (the claim key, for ``provision()`` and ``Client``)."""

    #: The module, e.g. ``/usr/lib/softhsm/libsofthsm2.so``.
    module: str
    #: The private key's ``CKA_LABEL``.
    key_label: str
    #: The user PIN (not shown by ``repr``); None: no login.
    pin: Optional[str] = field(default=None, repr=False)
    #: The token's label, when the module has more than one token.
    token_label: Optional[str] = None
    #: The token's slot id, when the module has more than one token.
    slot_id: Optional[int] = None


@dataclass(frozen=True)
class RetryPolicy:
    """How ``provision()`` retries: tries in all, backoff and the deadline of the whole run.

    Before try n+1 the library waits a random time from 0 to
    min(``backoff_max``, ``backoff_base`` * 2^(n-1)) seconds.
    """

    max_attempts: int = 8
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    #: The whole run ends within this many seconds.
    deadline: float = 300.0


@dataclass(frozen=True)
class Provisioned:
    """A verified device identity, from ``provision()``."""

    thing_name: str
    certificate_id: str
    #: The client id the identity was verified with.
    client_id: str
    certificate_file: str
    #: The stored private key (PEM, mode 0600); the key itself is never in this object.
    private_key_file: str
    #: The store's ``identity.json``.
    metadata_file: str
    #: True if a stored identity was reused (no claim connection was made).
    reused: bool
    attempts: int
    #: The template's ``DeviceConfiguration``.
    device_configuration: Dict[str, str]
    #: Ids of certificates this run obtained and did not keep (each also reported as
    #: ``Step.CERTIFICATE_ABANDONED``): each may be Active on the thing; deactivate it.
    abandoned_certificates: List[str] = field(default_factory=list)
    #: True if the stored identity was renewed with itself (no claim connection was made).
    rotated: bool = False
    #: When rotated: the replaced certificate, still Active in the account (deactivate it once
    #: the device uses the new one).
    previous_certificate_id: Optional[str] = None
    #: Where the private key is: ``"file"`` (``private_key_file``), ``"pkcs11"`` (a token,
    #: ``device_pkcs11``; ``private_key_file`` is then ``""``) or ``"signer"``.
    key_location: str = "file"


@dataclass(frozen=True)
class Certificate:
    """The reply to CreateCertificateFromCsr."""

    certificate_id: str
    certificate_pem: str
    #: For ``register_thing()``; valid for one hour (not shown by ``repr``).
    certificate_ownership_token: str = field(repr=False)


@dataclass(frozen=True)
class KeysAndCertificate:
    """The reply to CreateKeysAndCertificate.

    ``private_key`` is the PEM text as a ``bytearray``: the only copy fleetprov made of it (the
    library wipes its own when the callback returns). Store it, then call ``wipe()``
    (or overwrite the bytearray yourself). ``repr`` and ``str`` never show it.
    """

    certificate_id: str
    certificate_pem: str
    private_key: bytearray = field(repr=False)
    certificate_ownership_token: str = field(repr=False)

    def wipe(self) -> None:
        """Overwrites the private key with zeros."""
        # Same-length slice assignment writes in place: no reallocation leaves a copy behind.
        self.private_key[:] = bytes(len(self.private_key))


@dataclass(frozen=True)
class RegisteredThing:
    """The reply to RegisterThing."""

    thing_name: str
    device_configuration: Dict[str, str]
