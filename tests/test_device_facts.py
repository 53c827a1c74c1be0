"""builder.stage.device_facts against fixture trees of real files from a Raspberry Pi 5, a Jetson AGX Orin and
an x86 host, and against this very machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from builder.stage.device_facts import THROTTLE_BITS, machine_facts, thermal_state

# --- real file contents ------------------------------------------------------------------------------

PI5_CORE = """\
processor\t: {n}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""
PI5_CPUINFO = "".join(PI5_CORE.format(n=n) for n in range(4)) + """\
Revision\t: d04170
Serial\t\t: 1e5b5e36016eae90
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
BOOKWORM = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""

ORIN_CORE = """\
processor\t: {n}
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat \
ilrcpc flagm paca pacg
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd42
CPU revision\t: 1

"""
ORIN_CPUINFO = "".join(ORIN_CORE.format(n=n) for n in range(12))
NV_TEGRA_RELEASE_36_3 = """\
# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, DATE: Mon May  6 17:34:21 UTC 2024
# KERNEL_VARIANT: oot
TARGET_USERSPACE_LIB_DIR=nvidia
TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia
"""
CUDA_VERSION_JSON = """\
{
   "cuda" : {
      "name" : "CUDA SDK",
      "version" : "12.2.140"
   },
   "cuda_cudart" : {
      "name" : "CUDA Runtime (cudart)",
      "version" : "12.2.140"
   }
}
"""

EPYC_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
microcode\t: 0x1000065
cpu MHz\t\t: 2596.136
cache size\t: 1024 KB
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 2
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx \
mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni \
pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor \
lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext vmmcall fsgsbase tsc_adjust bmi1 avx2 smep \
bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt \
xsavec xgetbv1 xsaves avx512_bf16 clzero xsaveerptr arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni \
avx512_bitalg avx512_vpopcntdq rdpid fsrm
bogomips\t: 5192.27

"""
EPYC_MEMINFO = "MemTotal:       24683652 kB\nMemFree:        20230908 kB\nMemAvailable:   23991740 kB\n"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def bin_dir(tmp_path, monkeypatch) -> Path:
    """An empty directory that is the whole PATH: tools exist only if a test puts them there."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


def tool(bin_dir: Path, name: str, output: str) -> None:
    """A stand-in for a board tool on PATH that prints what the real one prints."""
    script = bin_dir / name
    script.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\n")  # a builtin: PATH holds nothing else
    script.chmod(0o755)


# --- machine_facts -------------------------------------------------------------------------------------

def test_raspberry_pi_5(tmp_path, bin_dir):
    root = tree(tmp_path / "pi5", {"proc/cpuinfo": PI5_CPUINFO, "proc/meminfo": "MemTotal:        8245808 kB\n",
                                   "proc/device-tree/model": "Raspberry Pi 5 Model B Rev 1.0\x00",
                                   "etc/os-release": BOOKWORM})
    facts = machine_facts(root)
    assert facts["cpu_model"] == "Cortex-A76"
    assert facts["cpu_flags"] == ["asimd", "asimdhp", "asimddp"]
    assert facts["board_model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert facts["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert facts["memory_total_bytes"] == 8245808 * 1024
    assert not {"l4t", "jetpack", "jetson_power_mode", "cuda", "tensorrt"} & facts.keys()


def test_jetson_agx_orin(tmp_path, bin_dir, monkeypatch):
    root = tree(tmp_path / "orin", {
        "proc/cpuinfo": ORIN_CPUINFO, "proc/meminfo": "MemTotal:       31433768 kB\n",
        "sys/firmware/devicetree/base/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
        "etc/nv_tegra_release": NV_TEGRA_RELEASE_36_3, "usr/local/cuda/version.json": CUDA_VERSION_JSON,
    })
    tool(bin_dir, "nvpmodel", "NV Power Mode: MAXN\n0\n")
    site = tree(tmp_path / "site", {"tensorrt-8.6.2.dist-info/METADATA": "Metadata-Version: 2.1\nName: tensorrt\n"
                                                                          "Version: 8.6.2\n"})
    monkeypatch.syspath_prepend(str(site))
    facts = machine_facts(root)
    assert facts["cpu_model"] == "Cortex-A78AE"
    assert facts["cpu_flags"] == ["asimd", "asimdhp", "asimddp"]
    assert facts["board_model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert (facts["l4t"], facts["jetpack"]) == ("36.3.0", "6.0")
    assert (facts["jetson_power_mode"], facts["jetson_power_mode_id"]) == ("MAXN", 0)
    assert facts["cuda"] == "12.2.140"
    assert facts["tensorrt"] == "8.6.2"


def test_a_benchmark_records_the_jetsons_facts_in_the_section_of_the_backend_that_probes_them(tmp_path, bin_dir):
    from builder.records import DeviceFacts
    from builder.stage.device_facts import generic_facts, recorded_facts

    assert "extra" not in recorded_facts(tree(tmp_path / "pi", {"proc/cpuinfo": PI5_CPUINFO}))
    root = tree(tmp_path / "orin", {"proc/cpuinfo": ORIN_CPUINFO, "etc/nv_tegra_release": NV_TEGRA_RELEASE_36_3,
                                    "usr/local/cuda/version.json": CUDA_VERSION_JSON})
    tool(bin_dir, "nvpmodel", "NV Power Mode: MAXN\n0\n")
    recorded = recorded_facts(root)
    assert recorded["extra"] == {"tensorrt": {"l4t": "36.3.0", "jetpack": "6.0", "jetson_power_mode": "MAXN",
                                              "jetson_power_mode_id": 0, "cuda": "12.2.140"}}
    assert recorded.keys() - {"extra"} == generic_facts(root).keys() and "l4t" not in generic_facts(root)
    assert DeviceFacts.model_validate(recorded).extra["tensorrt"].jetpack == "6.0"


@pytest.mark.parametrize(("line", "l4t", "jetpack"), [
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025",
     "36.4.3", "6.2"),
    ("# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64, DATE: Tue Feb 20 04:46:31 UTC 2024",
     "35.5.0", "5.1.3"),
    ("# R32 (release), REVISION: 5.1, GCID: 26202423, BOARD: t186ref, EABI: aarch64, DATE: Fri Feb 19 16:50:29 UTC 2021",
     "32.5.1", None),
])
def test_l4t_release_and_the_jetpack_that_ships_it(tmp_path, bin_dir, line, l4t, jetpack):
    facts = machine_facts(tree(tmp_path, {"etc/nv_tegra_release": line + "\n"}))
    assert facts["l4t"] == l4t
    assert facts.get("jetpack") == jetpack  # an L4T outside the table names no JetPack


def test_x86_host_in_a_cgroup_v2_container(tmp_path, bin_dir):
    root = tree(tmp_path, {"proc/cpuinfo": EPYC_CPUINFO, "proc/meminfo": EPYC_MEMINFO,
                           "sys/fs/cgroup/cpu.max": "150000 100000\n", "sys/fs/cgroup/memory.max": "4294967296\n",
                           "usr/local/cuda/version.txt": "CUDA Version 10.2.300\n"})
    facts = machine_facts(root)
    assert facts["cpu_model"] == "AMD EPYC"
    assert facts["cpu_flags"] == ["avx2", "avx512f", "avx512_vnni", "avx512_bf16"]
    assert facts["memory_total_bytes"] == 24683652 * 1024
    assert facts["cgroup_cpu_quota"] == 1.5
    assert facts["cgroup_memory_limit_bytes"] == 4294967296
    assert facts["cuda"] == "10.2.300"


@pytest.mark.parametrize("files", [
    {"sys/fs/cgroup/cpu.max": "max 100000\n", "sys/fs/cgroup/memory.max": "max\n"},
    {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n", "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
     "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"},
])
def test_an_unlimited_cgroup_states_no_limit(tmp_path, bin_dir, files):
    facts = machine_facts(tree(tmp_path, {"proc/meminfo": EPYC_MEMINFO, **files}))
    assert not {"cgroup_cpu_quota", "cgroup_memory_limit_bytes"} & facts.keys()


def test_cgroup_v1_limits(tmp_path, bin_dir):
    facts = machine_facts(tree(tmp_path, {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "200000\n",
                                          "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
                                          "sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648\n"}))
    assert (facts["cgroup_cpu_quota"], facts["cgroup_memory_limit_bytes"]) == (2.0, 2147483648)


def test_big_little_soc_names_both_cores(tmp_path, bin_dir):
    little = PI5_CORE.replace("0xd0b", "0xd05")  # RK3588: four Cortex-A55 then four Cortex-A76
    cpuinfo = "".join(little.format(n=n) for n in range(4)) + "".join(PI5_CORE.format(n=n) for n in range(4, 8))
    assert machine_facts(tree(tmp_path, {"proc/cpuinfo": cpuinfo}))["cpu_model"] == "Cortex-A55 + Cortex-A76"


def test_an_empty_root_gives_only_what_the_process_knows(tmp_path, bin_dir):
    facts = machine_facts(tmp_path)
    assert facts["cpu_model"] == "unknown"
    assert set(facts) <= {"cpu_model", "logical_cores", "cpus_allowed", "kernel", "arch"}
    assert thermal_state(tmp_path) == {}


# --- thermal_state -------------------------------------------------------------------------------------

def test_raspberry_pi_5_throttled(tmp_path, bin_dir):
    root = tree(tmp_path, {
        "sys/devices/system/cpu/cpufreq/policy0/scaling_governor": "ondemand\n",
        "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq": "1500000\n",
        "sys/devices/system/cpu/cpufreq/policy0/scaling_min_freq": "1500000\n",
        "sys/devices/system/cpu/cpufreq/policy0/scaling_max_freq": "2400000\n",
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal\n", "sys/class/thermal/thermal_zone0/temp": "52650\n",
    })
    tool(bin_dir, "vcgencmd", "throttled=0x50005\n")
    state = thermal_state(root)
    assert state["cpu_governor"] == "ondemand"
    assert state["cpu_freq_mhz"] == {"policy0": {"cur": 1500, "min": 1500, "max": 2400}}
    assert state["temperatures_c"] == {"cpu-thermal": 52.65}
    assert state["throttled"] == {
        "raw": "0x50005", "under_voltage_now": True, "freq_capped_now": False, "throttled_now": True,
        "soft_temp_limit_now": False, "under_voltage_occurred": True, "freq_capped_occurred": False,
        "throttled_occurred": True, "soft_temp_limit_occurred": False}


def test_jetson_policies_and_zones(tmp_path, bin_dir):
    files = {}
    for policy, governor in (("policy0", "schedutil"), ("policy4", "schedutil"), ("policy8", "performance")):
        cpufreq = f"sys/devices/system/cpu/cpufreq/{policy}"
        files |= {f"{cpufreq}/scaling_governor": f"{governor}\n", f"{cpufreq}/scaling_cur_freq": "729600\n",
                  f"{cpufreq}/scaling_min_freq": "115200\n", f"{cpufreq}/scaling_max_freq": "2201600\n"}
    for zone, (kind, temp) in enumerate((("cpu-thermal", "47343"), ("gpu-thermal", "45281"), ("tj-thermal", "47968"),
                                         ("cpu-thermal", "48000"))):
        files |= {f"sys/class/thermal/thermal_zone{zone}/type": kind, f"sys/class/thermal/thermal_zone{zone}/temp": temp}
    files["sys/class/thermal/thermal_zone4/type"] = "cv0-thermal"
    root = tree(tmp_path, files)
    (root / "sys/class/thermal/thermal_zone4/temp").mkdir()  # a zone that cannot be read is skipped, not an error
    state = thermal_state(root)
    assert state["cpu_governor"] == {"policy0": "schedutil", "policy4": "schedutil", "policy8": "performance"}
    assert list(state["cpu_freq_mhz"]) == ["policy0", "policy4", "policy8"]
    assert state["cpu_freq_mhz"]["policy8"] == {"cur": 729, "min": 115, "max": 2201}
    assert state["temperatures_c"] == {"cpu-thermal": 47.343, "gpu-thermal": 45.281, "tj-thermal": 47.968,
                                       "cpu-thermal (thermal_zone3)": 48.0}
    assert "throttled" not in state


def test_a_failing_tool_reports_nothing(tmp_path, bin_dir):
    script = bin_dir / "vcgencmd"
    script.write_text("#!/bin/sh\necho 'VCHI initialization failed' >&2\nexit 255\n")
    script.chmod(0o755)
    assert "throttled" not in thermal_state(tmp_path)


# --- this machine --------------------------------------------------------------------------------------

def test_this_machine():
    facts = machine_facts()
    assert facts["logical_cores"] > 0 and facts["memory_total_bytes"] > 0
    assert facts["arch"] == platform.machine()
    assert isinstance(facts["cpu_model"], str) and facts["cpu_model"]
    assert isinstance(thermal_state(), dict)


def test_cli_prints_both_as_json():
    proc = subprocess.run([sys.executable, "-m", "builder.stage.device_facts"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"machine", "thermal"} and out["machine"]["arch"] == platform.machine()


def test_a_container_without_vcgencmd_reads_the_pis_throttling_from_the_firmwares_sysfs_node(tmp_path, bin_dir):
    """The device image has no vcgencmd (nor /dev/vchiq); /sys is visible in every container."""
    root = tree(tmp_path, {"sys/devices/platform/soc/soc:firmware/get_throttled": "50005\n"})
    throttled = thermal_state(root)["throttled"]
    assert throttled["raw"] == "0x50005" and throttled["under_voltage_now"] and throttled["throttled_now"]


def test_a_benchmark_is_flagged_for_throttling_now_not_for_throttling_since_boot():
    from builder.stage.device_facts import throttled_during

    def state(raw: int) -> dict:
        return {"throttled": {name: bool(raw >> bit & 1) for bit, name in THROTTLE_BITS.items()}}

    assert throttled_during(state(0x50000), state(0x50000)) == []  # occurred since boot, not during the runs
    assert throttled_during(state(0x0), state(0x8)) == ["soft_temp_limit_now"]  # reached the limit while timing
    assert throttled_during(state(0x5), {}) == ["under_voltage_now", "throttled_now"]
    assert throttled_during({}, {}) == []  # an x86 VM reports nothing
