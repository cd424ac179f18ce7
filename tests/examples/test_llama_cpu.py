"""The AMX guard of the llama-chat worker: when models skip llama.cpp's extra buffer types."""

from __future__ import annotations

import importlib.util

import pytest

from tests.examples.llama_fakes import import_llama_module

llama_cpu = import_llama_module("llama_cpu")

FLAGS = "flags\t\t: fpu vme sse avx512f avx512_vnni {extra}\n"


@pytest.mark.parametrize(("extra", "amx"), [("amx_bf16 amx_tile amx_int8", True), ("", False),
                                            ("amx_tilex", False)])
def test_cpu_has_amx_reads_the_flags_line(tmp_path, extra, amx):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: amx_tile in a name is not a flag\n"
                       + FLAGS.format(extra=extra))
    assert llama_cpu.cpu_has_amx(cpuinfo) is amx


def test_cpu_has_amx_is_false_without_cpuinfo(tmp_path):
    assert llama_cpu.cpu_has_amx(tmp_path / "missing") is False


@pytest.mark.parametrize(("setting", "amx", "wanted"), [
    ("auto", True, False), ("auto", False, True), ("1", True, True), ("on", True, True),
    ("0", False, False), ("off", False, False), (None, True, False)])
def test_extra_buffer_types_follow_the_setting_then_the_cpu(monkeypatch, setting, amx, wanted):
    if setting is None:
        monkeypatch.delenv("LLAMA_EXTRA_BUFTS", raising=False)
    else:
        monkeypatch.setenv("LLAMA_EXTRA_BUFTS", setting)
    monkeypatch.setattr(llama_cpu, "cpu_has_amx", lambda: amx)
    assert llama_cpu.extra_buffer_types_wanted() is wanted


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_apply_makes_default_params_skip_extra_buffer_types(monkeypatch):
    import llama_cpp.llama_cpp as lib

    original = lib.llama_model_default_params
    monkeypatch.setattr(lib, "llama_model_default_params", original)  # restored after the test
    monkeypatch.setenv("LLAMA_EXTRA_BUFTS", "1")
    assert llama_cpu.apply() is False and lib.llama_model_default_params is original
    monkeypatch.setenv("LLAMA_EXTRA_BUFTS", "0")
    assert llama_cpu.apply() is True
    patched = lib.llama_model_default_params
    assert patched().use_extra_bufts is False and original().use_extra_bufts is True
    assert llama_cpu.apply() is True and lib.llama_model_default_params is patched  # not wrapped twice
