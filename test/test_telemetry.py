"""Telemetry against a Jetson Xavier NX sysfs tree in a temporary directory (real files), and this machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from jetson_sysfs import INA3221, make_xavier_nx, put

from dynofa_ros.control.telemetry import Telemetry


@pytest.fixture
def nx(tmp_path: Path) -> Path:
    return make_xavier_nx(tmp_path / "root", cpu_temp_mc=51500, gpu_temp_mc=49000, gpu_load_permille=437)


def test_xavier_nx_sample(nx):
    t = Telemetry(nx, use_nvml=False)
    s = t.sample()
    assert 0.0 <= s.cpu_load_pct <= 100.0  # psutil on this machine
    assert s.gpu_load_pct == pytest.approx(43.7)
    assert (s.cpu_zone, s.cpu_temp_c) == ("CPU-therm", 51.5)
    assert (s.gpu_zone, s.gpu_temp_c) == ("GPU-therm", 49.0)
    assert "pwm-fan" not in s.zones and len(s.zones) == 8
    assert t.missing == []


def test_rails_by_label_and_a_total_only_from_the_total_rail(nx):
    s = Telemetry(nx, use_nvml=False).sample()
    rails = {r.label: r for r in s.rails}
    assert set(rails) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}  # "sum of shunt voltages" is not a rail
    assert rails["VDD_CPU_GPU_CV"].power_mw == pytest.approx(2600.0)
    assert (s.total_rail, s.total_power_mw) == ("VDD_IN", pytest.approx(7000.0))
    assert s.total_power_mw != pytest.approx(sum(r.power_mw for r in s.rails))  # never the sum


def test_a_board_without_a_total_rail_reports_none(nx):
    put(nx, f"{INA3221}/in1_label", "VIN_SYS_5V0")  # AGX Orin style: no rail is the total
    t = Telemetry(nx, use_nvml=False)
    s = t.sample()
    assert s.total_power_mw is None and len(s.rails) == 3
    assert any(m.startswith("total power") for m in t.missing)


def test_legacy_iio_ina3221x(tmp_path):
    root = make_xavier_nx(tmp_path / "root", with_power=False)
    dev = "sys/bus/i2c/drivers/ina3221x/7-0040/iio:device0"
    for ch, (label, mw) in enumerate((("VDD_IN", 6100), ("VDD_CPU_GPU_CV", 1900), ("VDD_SOC", 1300))):
        put(root, f"{dev}/rail_name_{ch}", label)
        put(root, f"{dev}/in_power{ch}_input", mw)
    s = Telemetry(root, use_nvml=False).sample()
    assert [(r.label, r.power_mw) for r in s.rails] == [("VDD_IN", 6100), ("VDD_CPU_GPU_CV", 1900),
                                                          ("VDD_SOC", 1300)]
    assert s.total_power_mw == 6100


def test_orin_zone_names_and_repeated_types(tmp_path):
    for i, (name, mc) in enumerate((("cpu-thermal", 60250), ("gpu-thermal", 58000), ("gpu-thermal", 1000),
                                    ("soc0-thermal", -40000))):
        put(tmp_path, f"sys/class/thermal/thermal_zone{i}/type", name)
        put(tmp_path, f"sys/class/thermal/thermal_zone{i}/temp", mc)
    s = Telemetry(tmp_path, use_nvml=False).sample()
    assert (s.cpu_temp_c, s.gpu_temp_c) == (60.25, 58.0)
    assert s.zones["gpu-thermal#2"] == 1.0
    assert "soc0-thermal" not in s.zones  # disabled sensor reading -40 °C


def test_what_the_machine_lacks_is_listed_once_and_not_invented(tmp_path):
    t = Telemetry(tmp_path, use_nvml=False)
    s = t.sample()
    assert (s.gpu_load_pct, s.cpu_temp_c, s.gpu_temp_c, s.total_power_mw) == (None, None, None, None)
    assert s.rails == [] and s.zones == {}
    kinds = [m.split(":")[0] for m in t.missing]
    assert kinds == ["GPU load", "CPU temperature", "GPU temperature", "power"]


def test_a_symlink_escaping_the_root_is_not_read(nx, tmp_path):
    outside = put(tmp_path, "outside/temp", 99000)
    zone_temp = nx / "sys/class/thermal/thermal_zone1/temp"  # CPU-therm
    zone_temp.unlink()
    zone_temp.symlink_to(outside)
    s = Telemetry(nx, use_nvml=False).sample()
    assert s.cpu_temp_c is None and "CPU-therm" not in s.zones


def test_values_follow_the_files(nx):
    t = Telemetry(nx, use_nvml=False)
    put(nx, "sys/class/thermal/thermal_zone2/temp", 91000)
    put(nx, "sys/devices/gpu.0/load", 1000)
    s = t.sample()
    assert s.gpu_temp_c == 91.0 and s.gpu_load_pct == 100.0


def test_total_power_key_and_its_inverse() -> None:
    from dynofa_ros.control.telemetry import total_power_key, total_power_rail

    assert total_power_key("VDD_IN") == "power total (VDD_IN) mW"  # the key bags recorded so far hold
    for rail in ("VDD_IN", "POM_5V_IN", "a (b) c"):
        assert total_power_rail(total_power_key(rail)) == rail
    for other in ("power VDD_IN mW", "power total () mW", "power total (VDD_IN) W", "Power total (VDD_IN) mW"):
        assert total_power_rail(other) is None, other
