"""The build step of the fleetprov Python package (the rest is in pyproject.toml).

``build_py`` first builds the C library with the repository's Makefile
(``make -C <repo> target/release/libfleetprov.so``: cargo, so Rust is needed) and copies it
into the package as ``fleetprov/_lib/libfleetprov.so``, and regenerates ``fleetprov/_codes.py``
from ``libfleetprov/include/fleetprov.h`` so the bundled library and its codes agree.

The repository is found from this file's directory (pip 23 builds a local directory in place,
so that is ``bindings/python`` of the checkout) or from ``FLEETPROV_SOURCE_DIR``.
``FLEETPROV_LIBRARY=/path/libfleetprov.so`` bundles an already built library instead of
running make.

The wheel is tagged for the platform but not for a Python ABI (``py3-none-<platform>``):
the package is pure Python plus a shared library loaded with ctypes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1 (pyproject.toml asks for 77 or later)
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent


def repo_root() -> Path:
    env = os.environ.get("FLEETPROV_SOURCE_DIR")
    candidates = [Path(env)] if env else [HERE.parent.parent, *HERE.parents]
    for c in candidates:
        if (c / "Makefile").is_file() and (c / "libfleetprov" / "include" / "fleetprov.h").is_file() and (c / "Cargo.toml").is_file():
            return c.resolve()
    raise SystemExit(
        "fleetprov: cannot find the fleetprov repository (Makefile, Cargo.toml, "
        f"libfleetprov/include/fleetprov.h) above {HERE}; build from a checkout "
        "(`pip install ./bindings/python`) or set FLEETPROV_SOURCE_DIR to it"
    )


class BuildWithLibrary(build_py):
    def run(self) -> None:
        out_pkg = Path(self.build_lib) / "fleetprov"
        # pip builds in place: drop what an earlier build left (a module since removed would
        # otherwise end up in the wheel).
        shutil.rmtree(out_pkg, ignore_errors=True)
        super().run()
        prebuilt = os.environ.get("FLEETPROV_LIBRARY")
        root = None
        if prebuilt:
            lib = Path(prebuilt)
            if not lib.is_file():
                raise SystemExit(f"fleetprov: FLEETPROV_LIBRARY={prebuilt} is not a file")
        else:
            root = repo_root()
            make = os.environ.get("MAKE", "make")
            print(f"fleetprov: building the C library: {make} -C {root} target/release/libfleetprov.so", flush=True)
            try:
                subprocess.run([make, "-C", str(root), "target/release/libfleetprov.so"], check=True)
            except FileNotFoundError:
                raise SystemExit(f"fleetprov: `{make}` is not installed; it and Rust (cargo) are needed to build the library") from None
            except subprocess.CalledProcessError as e:
                raise SystemExit(f"fleetprov: building libfleetprov.so failed (make exited {e.returncode}); see the output above") from None
            lib = root / "target" / "release" / "libfleetprov.so"
        (out_pkg / "_lib").mkdir(parents=True, exist_ok=True)
        # Resolve the symlink chain: the wheel holds the file itself.
        shutil.copyfile(lib.resolve(), out_pkg / "_lib" / "libfleetprov.so")
        header = (root or repo_root_or_none() or HERE) / "libfleetprov" / "include" / "fleetprov.h"
        if header.is_file():
            sys.path.insert(0, str(HERE))
            try:
                import gen_codes
            finally:
                sys.path.pop(0)
            (out_pkg / "_codes.py").write_text(
                gen_codes.generate(header.read_text(encoding="utf-8")), encoding="utf-8"
            )


def repo_root_or_none() -> "Path | None":
    try:
        return repo_root()
    except SystemExit:
        return None


class PlatformWheel(bdist_wheel):
    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _python, _abi, plat = super().get_tag()
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel})
