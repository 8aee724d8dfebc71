"""The machine facts stored beside every benchmark table name the CPU's int8 instructions."""

from torchslim.pipelines.common import cpu_meta, machine_meta

VNNI = """processor : 0
model name : AMD EPYC 9R14
flags : fpu sse2 avx2 avx512f avx512_vnni avx_vnni
processor : 1
model name : AMD EPYC 9R14
flags : fpu sse2 avx2 avx512f avx512_vnni avx_vnni
"""
AVX2 = "model name : AMD EPYC 7R13\nflags : fpu sse2 avx2 fma\n"
ARM = "processor : 0\nFeatures : fp asimd asimddp\n"


def test_vnni_flags_found_once_per_flag():
    meta = cpu_meta(VNNI)
    assert meta["cpu"] == "AMD EPYC 9R14"
    assert meta["int8_dot"] == ["avx512_vnni", "avx_vnni"]


def test_avx2_alone_has_no_int8_dot_product():
    assert cpu_meta(AVX2)["int8_dot"] == []
    assert cpu_meta(AVX2)["cpu"] == "AMD EPYC 7R13"


def test_arm_features_line():
    assert cpu_meta(ARM)["int8_dot"] == ["asimddp"]


def test_unreadable_cpuinfo_still_names_something():
    meta = cpu_meta("")
    assert meta["cpu"] and meta["int8_dot"] == []


def test_machine_meta_carries_cpu_facts():
    meta = machine_meta()
    assert {"cpu", "cpu_capability", "int8_dot", "torch", "threads", "date"} <= set(meta)
    assert isinstance(meta["int8_dot"], list)
