"""The base of fleetprov's exceptions; one subclass per ``fp_result`` code is in ``_codes``."""

from __future__ import annotations

from typing import Optional


class FleetprovError(Exception):
    """A failure reported by libfleetprov (or found before calling it).

    ``code`` is the ``fp_result`` value (see ``fleetprov.RESULT_CODES``), ``code_name`` its C
    name and ``message`` the one-line description (never key material). Subclasses exist for
    every code, e.g. ``RejectedError`` for ``FP_ERR_REJECTED``.
    """

    code: int = -1
    code_name: str = "FP_ERR_UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[int] = None,
        status_code: int = 0,
        aws_error_code: Optional[str] = None,
        aws_error_message: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        #: For a rejection by the service (``RejectedError``): AWS's ``statusCode`` (e.g. 400),
        #: ``errorCode`` and ``errorMessage``; 0 / None otherwise.
        self.status_code = status_code
        self.aws_error_code = aws_error_code
        self.aws_error_message = aws_error_message

    def __str__(self) -> str:
        return self.message
