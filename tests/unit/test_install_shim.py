"""The pure parts of `cloud-cni install-shim`: the plugin file's text, path checks, ELF reading.

tests/integration/test_install_shim.py installs and execs the plugin.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path, PurePosixPath

import pytest

from ipamd import elf
from ipamd.errors import InstallError
from ipamd.install_shim import SHEBANG_MAX, install, plugin_text

TREE = PurePosixPath("/opt/cni/cloud-cni/3.11.7-0123456789ab")
INTERPRETER = Path(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))


def test_sh_plugin_points_the_loader_at_the_tree() -> None:
    text = plugin_text("sh", TREE, "3.11")
    assert text.startswith("#!/bin/sh\n")
    assert text.splitlines()[-1] == (
        f"LD_LIBRARY_PATH={TREE}/lib exec {TREE}/bin/python3.11 -I -S -X utf8 {TREE}/cloud-cni.py " + '"$@"'
    )


def test_shebang_plugin_is_the_entry_run_by_the_trees_interpreter() -> None:
    text = plugin_text("shebang", TREE, "3.11")
    lines = text.splitlines()
    assert lines[0] == f"#!{TREE}/bin/python3.11 -ISXutf8"
    code = "\n".join(lines[1:])
    assert f"sys.path.insert(0, '{TREE}/lib/site')" in code
    assert code.rstrip().endswith("from shim.main import main\n\nsys.exit(main())")
    compile(text, "cloud-cni", "exec")


def test_a_shebang_line_the_kernel_would_cut_is_refused() -> None:
    deep = PurePosixPath("/" + "d" * SHEBANG_MAX)
    with pytest.raises(InstallError, match="#! line"):
        plugin_text("shebang", deep, "3.11")


@pytest.mark.parametrize(
    "host",
    ["opt/cni/cloud-cni", "/opt/cni/cloud cni", "/opt/cni/$(reboot)", "/opt/cni/a'b", "/"],
    ids=["relative", "space", "subst", "quote", "root"],
)
def test_host_runtime_dir_must_be_a_plain_absolute_path(tmp_path: Path, host: str) -> None:
    with pytest.raises(InstallError, match="host runtime dir"):
        install(runtime_dir=tmp_path / "rt", cni_bin_dir=tmp_path, host_runtime_dir=host)
    assert not (tmp_path / "rt").exists(), "refused before touching anything"


def test_conflist_and_conf_dir_go_together(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="go together"):
        install(runtime_dir=tmp_path / "rt", cni_bin_dir=tmp_path, conflist=tmp_path / "x.conflist")


def test_elf_reads_what_this_interpreter_needs() -> None:
    data = INTERPRETER.read_bytes()
    dynamic = elf.dynamic(data)
    assert any(n.startswith("libc.so") for n in dynamic.needed), dynamic
    floor = elf.glibc_floor(data)
    assert floor is not None and floor >= (2, 2)


def test_loadable_image_keeps_everything_the_loader_reads() -> None:
    data = INTERPRETER.read_bytes()
    image = elf.loadable_image(data)
    assert len(image) <= len(data)
    assert elf.dynamic(image) == elf.dynamic(data)
    assert elf.glibc_floor(image) == elf.glibc_floor(data)
    assert elf.loadable_image(image) == image, "cutting twice changes nothing"


def test_not_elf_is_refused() -> None:
    with pytest.raises(elf.ElfError):
        elf.dynamic(b"#!/bin/sh\n")
