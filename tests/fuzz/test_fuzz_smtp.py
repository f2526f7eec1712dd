"""The mailer's line-end fast path (``alerts.send._crlf_line_ends``) is aiosmtplib's own
``normalize_message_line_endings`` for any bytes at all, asked once or twice, and it is the one
aiosmtplib calls; so is its dot-stuffing (``_DotStuffing``) the library's ``PERIOD_REGEX.sub``;
its remembered ``parse_address`` answers (or refuses) every string as aiosmtplib's own does."""

from __future__ import annotations

import aiosmtplib.email
import aiosmtplib.protocol
import aiosmtplib.smtp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerts import send

# Line ends in every arrangement: lone CR, lone LF, CRLF, LFCR, CRCRLF, at the start and the end.
line_bytes = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"\n\r", b".", b"a", b"\xff", b" "]), max_size=40)


@given(line_bytes, line_bytes)
def test_the_fast_path_gives_the_librarys_result_for_any_bytes(pieces: list[bytes], others: list[bytes]) -> None:
    message, other = b"".join(pieces), b"".join(others)
    # Twice in a row as aiosmtplib asks (the second answer remembered), then other bytes, then
    # an equal copy of the first (a different object: looked at afresh).
    for m in (message, message, other, bytes(bytearray(message))):
        assert send._crlf_line_ends(m) == send._LIBRARY_LINE_ENDS(m)


@given(line_bytes)
def test_dot_stuffing_gives_the_librarys_result_for_any_bytes(pieces: list[bytes]) -> None:
    message = b"".join(pieces)
    assert send._DotStuffing(send._LIBRARY_PERIODS).sub(b"..", message) == send._LIBRARY_PERIODS.sub(b"..", message)


@pytest.mark.parametrize("message", [b"", b".", b"a.", b".a\r\n", b"a\r\n.b", b"a\r.b", b"a\n\n.", b"a\r\n..\r\n.\r\n"])
def test_dot_stuffing_at_the_edges(message: bytes) -> None:
    assert send._DotStuffing(send._LIBRARY_PERIODS).sub(b"..", message) == send._LIBRARY_PERIODS.sub(b"..", message)


def test_aiosmtplib_stuffs_dots_with_the_fast_test() -> None:
    stuffing = aiosmtplib.protocol.PERIOD_REGEX
    assert isinstance(stuffing, send._DotStuffing) and stuffing.library is send._LIBRARY_PERIODS
    assert stuffing.pattern == rb"(?m)^\."


@pytest.mark.parametrize(
    "message",
    [b"", b"a", b"a\r\n", b"a\n", b"a\r", b"\r\n", b"a\r\r\nb\r\n", b"a\n\rb\r\n", b"a\r\nb", b"a\r\nb\nc\r\n"],
)
def test_the_fast_path_at_the_edges(message: bytes) -> None:
    assert send._crlf_line_ends(message) == send._LIBRARY_LINE_ENDS(message)


def test_aiosmtplib_calls_the_fast_path_for_the_size_and_before_data() -> None:
    assert send._LIBRARY_LINE_ENDS is not None
    assert aiosmtplib.protocol.normalize_message_line_endings is send._crlf_line_ends
    assert aiosmtplib.smtp.normalize_message_line_endings is send._crlf_line_ends


# Addresses and what could be smuggled into a command line beside one.
address_text = st.lists(
    st.sampled_from(["a", "@", ".", "<", ">", " ", '"', "\\", "\r", "\n", "\t", ",", ":", ";", "(", ")", "é", "x.org"]),
    max_size=30,
).map("".join)


def _outcome(parse: object, address: str) -> tuple[str, str]:
    try:
        return ("ok", parse(address))  # type: ignore[operator]
    except ValueError as exc:
        return ("refused", str(exc))


@given(address_text)
def test_the_remembered_parse_address_gives_the_librarys_answer(address: str) -> None:
    # Twice: the second answer comes from the memory (or is refused again).
    for _ in range(2):
        assert _outcome(send._parse_address, address) == _outcome(send._LIBRARY_PARSE_ADDRESS, address)


@pytest.mark.parametrize("address", ["ada@example.org", "Ada <ada@example.org>", "a b@example.org", '"a b"@x.org', ""])
def test_the_remembered_parse_address_at_the_edges(address: str) -> None:
    for _ in range(2):
        assert _outcome(send._parse_address, address) == _outcome(send._LIBRARY_PARSE_ADDRESS, address)


def test_aiosmtplib_parses_addresses_with_the_remembered_function() -> None:
    assert send._LIBRARY_PARSE_ADDRESS is not None
    assert aiosmtplib.email.parse_address is send._parse_address  # quote_address calls it here
    assert aiosmtplib.smtp.parse_address is send._parse_address
