"""The bucket's own checks name the setting that is wrong."""

from __future__ import annotations

import pytest

from fanrag.errors import ConfigError
from fanrag.limits.ratelimit import BucketConfig, LocalTokenBucket


@pytest.mark.parametrize(("rpm", "tpm", "field"), [(-1, 0, "embed.rate_limit_rpm"), (0, -1, "embed.rate_limit_tpm")])
def test_a_negative_limit_names_its_own_setting(rpm: float, tpm: float, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        BucketConfig(rpm=rpm, tpm=tpm)
    assert info.value.field == field  # a negative tpm was reported as embed.rate_limit_rpm


def test_period_and_burst_are_arguments_not_settings() -> None:
    with pytest.raises(ValueError, match="burst") as info:
        LocalTokenBucket(rpm=60, burst=2.0)
    assert not isinstance(info.value, ConfigError)
