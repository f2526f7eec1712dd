"""When pending mail goes out: digest slots at the reader's local hour across time zones and DST
changes, and quiet hours for instant mail. Time is injected; nothing waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from alerts.deliver import is_due, last_slot
from paperwire.models import Delivery, Profile


def profile(**delivery: object) -> Profile:
    return Profile(id="u", email="u@example.org", topics=[{"name": "t", "description": "d"}], delivery=delivery)


def hourly_sends(p: Profile, start: datetime, hours: int) -> list[datetime]:
    """Simulate the hourly DAG (at :05 UTC) with an item always waiting: when does mail go out?"""
    sends, since = [], (start - timedelta(minutes=1)).timestamp()
    for h in range(hours):
        now = start + timedelta(hours=h, minutes=5)
        if is_due(p, since, now):
            sends.append(now)
            since = now.timestamp()  # the next item arrives right after this send
    return sends


@pytest.mark.parametrize(
    ("tz", "hour"),
    [("Europe/London", 8), ("America/Sao_Paulo", 7), ("Asia/Kolkata", 8), ("America/New_York", 1), ("UTC", 0)],
)
def test_daily_digest_goes_out_once_a_day_in_the_first_run_after_the_local_hour(tz, hour):
    p = profile(mode="daily", hour=hour, timezone=tz)
    # 20 Oct -> 10 Nov 2026 spans the end of summer time in Europe (25 Oct) and the US (1 Nov).
    sends = hourly_sends(p, datetime(2026, 10, 20, tzinfo=UTC), 24 * 21)
    assert len(sends) == 21
    local = [s.astimezone(ZoneInfo(tz)) for s in sends]
    assert len({d.date() for d in local}) == 21  # one per local day, none skipped or doubled
    # The first hourly run at or after HH:00 local: within the hour (Kolkata's :30 offset included).
    for d in local:
        slot = d.replace(hour=hour, minute=0)
        assert timedelta(0) <= d - slot < timedelta(hours=1), d


def test_london_across_the_october_change_keeps_8am_local():
    p = profile(mode="daily", hour=8, timezone="Europe/London")
    sends = hourly_sends(p, datetime(2026, 10, 24, tzinfo=UTC), 72)
    assert [s.isoformat() for s in sends] == [
        "2026-10-24T07:05:00+00:00",  # BST: 08:05 local
        "2026-10-25T08:05:00+00:00",  # GMT from 25 Oct 02:00: 08:05 local
        "2026-10-26T08:05:00+00:00",
    ]


def test_the_repeated_hour_at_the_change_sends_once():
    # 01:00-02:00 happens twice in London on 25 Oct 2026; a 1 am digest must go out once.
    p = profile(mode="daily", hour=1, timezone="Europe/London")
    sends = hourly_sends(p, datetime(2026, 10, 24, 12, tzinfo=UTC), 24)
    assert [s.isoformat() for s in sends] == ["2026-10-25T00:05:00+00:00"]


def test_the_missing_hour_in_spring_still_sends():
    # 29 Mar 2026: London jumps 01:00 -> 02:00; a 1 am digest goes at the first existing moment.
    p = profile(mode="daily", hour=1, timezone="Europe/London")
    sends = hourly_sends(p, datetime(2026, 3, 28, 12, tzinfo=UTC), 24)
    assert [s.isoformat() for s in sends] == ["2026-03-29T01:05:00+00:00"]


def test_weekly_digest_on_the_local_weekday():
    p = profile(mode="weekly", hour=9, weekday="mon", timezone="Asia/Kolkata")
    sends = hourly_sends(p, datetime(2026, 11, 1, tzinfo=UTC), 24 * 21)
    local = [s.astimezone(ZoneInfo("Asia/Kolkata")) for s in sends]
    assert [d.strftime("%a %d %H:%M") for d in local] == ["Mon 02 09:35", "Mon 09 09:35", "Mon 16 09:35"]


def test_last_slot_is_local():
    p = profile(mode="daily", hour=8, timezone="America/Sao_Paulo")  # UTC-3, no DST since 2019
    assert last_slot(p, datetime(2026, 11, 27, 10, 59, tzinfo=UTC)).isoformat() == "2026-11-26T08:00:00-03:00"
    assert last_slot(p, datetime(2026, 11, 27, 11, 0, tzinfo=UTC)).isoformat() == "2026-11-27T08:00:00-03:00"


@pytest.mark.parametrize(
    ("quiet", "local_hour", "held"),
    [("22-07", 23, True), ("22-07", 3, True), ("22-07", 7, False), ("22-07", 21, False), ("13-14", 13, True)],
)
def test_quiet_hours_wrap_midnight(quiet, local_hour, held):
    d = Delivery(mode="instant", timezone="Asia/Kolkata", quiet_hours=quiet)
    now = datetime(2026, 11, 27, local_hour, 10, tzinfo=ZoneInfo("Asia/Kolkata")).astimezone(UTC)
    assert d.is_quiet(now) is held
    assert is_due(profile(mode="instant", timezone="Asia/Kolkata", quiet_hours=quiet), 0.0, now) is not held


@pytest.mark.parametrize("bad", ["22", "22-22", "25-07", "ten-seven", "7-"])
def test_bad_quiet_hours_are_refused(bad):
    with pytest.raises(ValidationError, match="quiet_hours"):
        Delivery(quiet_hours=bad)
