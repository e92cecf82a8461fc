"""The manager's board tables (control/platforms.frequency_tables): which power model a frequency list gets.

Pure: the node only reads its parameters into this function and logs the warning it returns.
"""

from __future__ import annotations

import pytest

from dynofa_ros.control.platforms import BOARDS, GENERIC_BOARD, ORIN, XAVIER_NX, frequency_tables
from dynofa_ros.problems import ConfigError


def test_unset_lists_take_the_board_table_and_its_power_models() -> None:
    cpu, gpu = frequency_tables("xavier_nx", None, None)
    assert cpu.freqs == XAVIER_NX.cpu_khz and cpu.power is XAVIER_NX.cpu and cpu.warning is None
    assert gpu.freqs == XAVIER_NX.gpu_hz and gpu.power is XAVIER_NX.gpu and gpu.warning is None


def test_a_list_equal_to_the_table_keeps_the_board_model_in_any_order() -> None:
    cpu, gpu = frequency_tables("orin", list(reversed(ORIN.cpu_khz)), list(ORIN.gpu_hz))
    assert cpu.power is ORIN.cpu and gpu.power is ORIN.gpu
    assert cpu.warning is None and gpu.warning is None
    assert cpu.freqs == ORIN.cpu_khz


def test_a_list_one_entry_off_plans_with_the_generic_model_and_says_so() -> None:
    short = list(XAVIER_NX.cpu_khz[:-1])
    cpu, gpu = frequency_tables("xavier_nx", short, None)
    assert cpu.freqs == tuple(short)
    assert cpu.power is None  # the policy's generic model, as before
    assert cpu.warning is not None
    assert "parameter cpu_frequencies_khz" in cpu.warning and "'xavier_nx'" in cpu.warning
    assert f"missing {XAVIER_NX.cpu_khz[-1]}" in cpu.warning
    assert gpu.power is XAVIER_NX.gpu and gpu.warning is None


def test_an_entry_not_in_the_table_is_named() -> None:
    freqs = [*XAVIER_NX.gpu_hz, 1200000000]
    _, gpu = frequency_tables("xavier_nx", None, freqs)
    assert gpu.power is None
    assert gpu.warning is not None and "parameter gpu_frequencies_hz" in gpu.warning
    assert "not in the table: 1200000000" in gpu.warning


def test_generic_board_and_uncontrolled_domains_are_quiet() -> None:
    cpu, gpu = frequency_tables(GENERIC_BOARD, [0], [100, 200])
    assert (cpu.freqs, cpu.power, cpu.warning) == ((), None, None)
    assert (gpu.freqs, gpu.power, gpu.warning) == ((100, 200), None, None)
    cpu, _ = frequency_tables("xavier_nx", [0], None)  # [0]: CPU not controlled, no model to miss
    assert (cpu.freqs, cpu.power, cpu.warning) == ((), None, None)
    assert frequency_tables(GENERIC_BOARD, None, None)[0].freqs == ()


def test_unknown_board_fails_naming_the_key_and_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        frequency_tables("xavier", None, None)
    text = str(err.value)
    assert "parameter board" in text and "'xavier'" in text
    for name in (*BOARDS, GENERIC_BOARD):
        assert repr(name) in text


def test_negative_frequency_fails_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="gpu_frequencies_hz: frequencies must be positive"):
        frequency_tables("orin", None, [-1])
