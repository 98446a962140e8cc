"""The hardware a record names: the processor's model where the system gives one."""

import platform

import torch

from l2rw.tracking.record import cpu_name, device_description

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu vme
processor\t: 1
model name\t: Intel(R) Xeon(R) Processor
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd
"""


def test_cpu_name_reads_the_model_name_without_trademarks(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(INTEL)
    assert cpu_name(info) == f"Intel Xeon Processor ({platform.machine()})"


def test_cpu_name_is_the_architecture_without_a_model_name_or_a_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(ARM)
    assert cpu_name(info) == platform.machine()
    assert cpu_name(tmp_path / "absent") == platform.machine()


def test_cpu_device_description_names_the_processor_and_threads():
    description = device_description(torch.device("cpu"))
    assert description == f"cpu:{cpu_name()} x{torch.get_num_threads()} threads"
