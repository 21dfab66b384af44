"""The one place that decides what a Snowflake connector error means.

*Transient*: the same statement may well succeed if tried again (the network,
HTTP 5xx/429, an expired session, a warehouse being resumed, a lock not granted
in time or a lock queue that is full, a statement that reached its timeout). The writer retries those with jittered backoff, reconnecting when the
session is gone. *Terminal*: trying again cannot help (a bad password, a
missing privilege, a compilation error, a missing object); the service stops
with exit 1 and one log line. Anything we do not recognise is terminal: a
retry loop that hides a bug is worse than a stop that names it.

Messages are cut to their first line: connector errors can carry the SQL text,
which for a batch is a megabyte of order data.
"""

from __future__ import annotations

import enum
import re
import socket

from snowflake.connector import errors as sf
from snowflake.connector.vendored.requests import exceptions as _requests
from snowflake.connector.vendored.urllib3 import exceptions as _urllib3

from ... import logs
from ..base import SinkError


class Kind(enum.Enum):
    TRANSIENT = "transient"
    TERMINAL = "terminal"


# Snowflake error numbers (the errno of the connector's exceptions).
_SESSION_GONE = frozenset(
    {
        250002,  # the connector: connection is closed
        390104,  # user must log in again (the emulator, after a session was dropped)
        390111,  # session no longer exists
        390112,  # session expired
        390114,  # authentication token expired
    }
)
_TRANSIENT = _SESSION_GONE | frozenset(
    {
        250001,  # could not connect to Snowflake backend (mid-run: reconnect)
        250003,  # failed to get the response ("hanging?")
        251011,  # connection timeout
        251012,  # a retryable HTTP code during login
        604,  # SQL execution cancelled (a warehouse resized; a takeover aborted the transaction)
        625,  # a lock not granted: more than 20 statements waiting on it, or LOCK_TIMEOUT reached
        630,  # statement reached its statement or warehouse timeout (STATEMENT_TIMEOUT_IN_SECONDS)
    }
)
_AUTH = frozenset(
    {
        390100,  # incorrect username or password
        390101,  # user disabled
        390102,  # user locked (too many attempts)
        390144,  # JWT token invalid (key pair not registered, or wrong user)
        390186,  # role not granted to the user
        390189,  # role does not exist
        390190,  # authenticator not allowed by policy
        394304,  # single-factor password sign-in blocked for this user
        394507,  # password sign-in not allowed (service user)
        251001,
        251005,
        251006,
        251008,  # the connector: no account / user / password; bad key
    }
)
_TERMINAL = _AUTH | frozenset(
    {
        1003,  # SQL compilation error: syntax
        2003,  # object does not exist or not authorised
        2043,  # object does not exist, or operation cannot be performed
        3001,  # insufficient privileges
        606,  # no active warehouse selected
        390201,  # database does not exist or not authorised
    }
)
_HTTP_TRANSIENT = (
    sf.InternalServerError,
    sf.ServiceUnavailableError,
    sf.GatewayTimeoutError,
    sf.BadGatewayError,
    sf.TooManyRequests,
    sf.RequestTimeoutError,
    sf.OtherHTTPRetryableError,
    sf.RequestExceedMaxRetryError,
)
#: The connector's HTTP stack (vendored requests and urllib3): a reset, a reply cut off
#: mid-body (ChunkedEncodingError reaches the caller unwrapped), a timeout. None of these
#: is a Python ConnectionError, so they are named here.
_TRANSPORT: tuple[type[BaseException], ...] = (
    _requests.ConnectionError,
    _requests.ChunkedEncodingError,
    _requests.Timeout,
    _urllib3.ProtocolError,
    _urllib3.TimeoutError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)
_RESUMING = re.compile(r"\bis (being )?resum(ing|ed)\b|\bresuming\b", re.IGNORECASE)
#: The emulator's session still runs a statement whose reply was lost (a read timeout):
#: the session is not broken, only busy; wait, then roll back on it.
_BUSY = re.compile(r"connection is busy with another call", re.IGNORECASE)


def classify(exc: BaseException) -> Kind:
    """TRANSIENT or TERMINAL, from the exception's class, errno and SQLSTATE."""
    if isinstance(exc, SinkError):
        return Kind.TERMINAL
    if isinstance(exc, _HTTP_TRANSIENT):
        return Kind.TRANSIENT
    if isinstance(exc, sf.Error):
        errno = exc.errno if exc.errno and exc.errno > 0 else 0
        if errno in _TERMINAL:
            return Kind.TERMINAL
        if errno in _TRANSIENT:
            return Kind.TRANSIENT
        status = _http_status(exc)
        if status is not None:
            # 401 on a query: the session token is gone (a new sign-in settles it).
            return Kind.TRANSIENT if status in (401, 429) or status >= 500 else Kind.TERMINAL
        if _RESUMING.search(exc.msg or "") or _BUSY.search(exc.msg or ""):
            return Kind.TRANSIENT
        state = exc.sqlstate or ""
        if state.startswith("08") and state != "08004":  # 08004: connection rejected
            return Kind.TRANSIENT
        if state == "40001":  # serialization failure: the transaction lost a race
            return Kind.TRANSIENT
        return Kind.TERMINAL
    if isinstance(exc, _TRANSPORT):
        return Kind.TRANSIENT
    # Anything else, our own code's errors included (a KeyError, a TypeError), is
    # terminal: a retry loop that hides a bug is worse than a stop that names it.
    return Kind.TERMINAL


def _http_status(exc: sf.Error) -> int | None:
    """The HTTP status the connector wrapped into the errno (290000 + status), if any."""
    errno = exc.errno if exc.errno and exc.errno > 0 else 0
    if 290000 <= errno < 300000 or 580000 <= errno < 590000:
        return errno % 1000
    return None


def is_transient(exc: BaseException) -> bool:
    """The predicate ``stamina.retry`` takes."""
    return classify(exc) is Kind.TRANSIENT


def session_gone(exc: BaseException) -> bool:
    """The session cannot be used again: open a new one (there is nothing left to roll back).

    A lost reply or a broken HTTP connection is not that: the session lives on, and
    its open transaction must be rolled back on it (a server may otherwise keep the
    transaction, and its locks, until the session expires; the emulator keeps it for
    ever) before the batch is tried again.
    """
    if isinstance(exc, sf.Error):
        if exc.errno in _SESSION_GONE or _http_status(exc) == 401:
            return True
        return (exc.sqlstate or "").startswith("08")
    return False


def is_auth(exc: BaseException) -> bool:
    return isinstance(exc, sf.Error) and (exc.errno in _AUTH or exc.sqlstate in {"08004", "28000"})


#: One line: the class, the Snowflake code and the first line of the message.
describe = logs.one_line


def terminal(exc: BaseException, doing: str) -> SinkError:
    """The :class:`SinkError` that stops the service, with a hint for the common causes."""
    if isinstance(exc, SinkError):
        return exc
    hint = ""
    if is_auth(exc):
        hint = (
            " (check SNOWFLAKE_USER and SNOWFLAKE_PASSWORD, or SNOWFLAKE_PRIVATE_KEY_FILE "
            "and the public key registered with ALTER USER ... SET RSA_PUBLIC_KEY)"
        )
    elif isinstance(exc, sf.Error) and exc.errno in {2003, 2043, 3001, 390201}:
        hint = " (check SNOWFLAKE_DATABASE, SNOWFLAKE_SCHEMA and the role's grants)"
    elif isinstance(exc, sf.Error) and exc.errno == 606:
        hint = " (check SNOWFLAKE_WAREHOUSE and the role's USAGE grant on it)"
    return SinkError(f"{doing}: {describe(exc)}{hint}")
