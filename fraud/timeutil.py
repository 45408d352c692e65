"""Lima time: the one place for the UTC <-> Lima local arithmetic (Peru is UTC-5 all year, no DST).

Works on Python ints, numpy arrays and pandas Series alike (plain integer arithmetic). The TensorFlow
graph (transform_module) applies the same constant, fraud.features.LIMA_UTC_OFFSET_S.
"""
from __future__ import annotations

import calendar
import datetime as dt

from fraud import features as F


def to_lima(utc_seconds):
    """Lima local seconds since the epoch (as if Lima's wall clock were UTC)."""
    return utc_seconds + F.LIMA_UTC_OFFSET_S


def from_lima(lima_seconds):
    """UTC seconds of a Lima wall-clock time given as seconds since the epoch."""
    return lima_seconds - F.LIMA_UTC_OFFSET_S


def lima_day(utc_seconds):
    """Lima calendar day number (days since 1970-01-01 in Lima)."""
    return to_lima(utc_seconds) // F.DAY_S


def lima_hour(utc_seconds):
    """Lima hour of the day, 0-23."""
    return (to_lima(utc_seconds) // 3600) % 24


def lima_midnight_utc(day: dt.date) -> int:
    """UTC seconds of 00:00 Lima time on `day`."""
    return from_lima(calendar.timegm(day.timetuple()))
