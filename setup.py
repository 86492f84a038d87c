"""Build of fastprune._C: C++17 (+ CUDA when nvcc is found), no libtorch, driven by ninja.

Environment:
  FASTPRUNE_BUILD_CUDA   auto (default: build when nvcc is found) | 1 (required) | 0 (off)
  FASTPRUNE_CUDA_ARCHS   semicolon list of SM versions, default "80;90"; "+PTX" on the last
                         entry (default) also embeds PTX for newer GPUs
  FASTPRUNE_CPU_ISAS     ISA variants of csrc/cpu/simd/*.cpp to compile, default
                         "baseline;avx2;avx512" on x86-64, "baseline" elsewhere
  FASTPRUNE_JOBS         parallel compile jobs for ninja (default: ninja's choice)
  FASTPRUNE_DEBUG        1 compiles with -O0 -g

Sources: csrc/**/*.cpp except csrc/cpu/simd/ compile once; csrc/cpu/simd/*.cpp compile once
per ISA with -DFASTPRUNE_ISA=<isa>; csrc/cuda/*.cu compile with nvcc.
"""
from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"

ISA_FLAGS = {
    "baseline": [],
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
}


def find_nvcc() -> str | None:
    """nvcc from CUDA_HOME/CUDA_PATH, then PATH. Never asks torch whether a GPU exists."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def cuda_home(nvcc: str) -> Path:
    real = Path(os.path.realpath(nvcc))
    if real.parent.name == "bin" and (real.parent.parent / "include" / "cuda_runtime.h").exists():
        return real.parent.parent
    # a wrapper script (e.g. /usr/local/bin/nvcc): ask nvcc where it lives
    out = subprocess.run([nvcc, "--dryrun", "--version"], capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        if "TOP=" in line:
            return Path(line.split("TOP=", 1)[1].strip())
    for cand in (Path("/usr/local/cuda"),):
        if (cand / "include" / "cuda_runtime.h").exists():
            return cand
    raise RuntimeError(f"cannot locate the CUDA toolkit of {nvcc}; set CUDA_HOME")


def cuda_mode() -> tuple[bool, str | None]:
    mode = os.environ.get("FASTPRUNE_BUILD_CUDA", "auto").strip().lower()
    if mode not in ("auto", "1", "0", "on", "off", "true", "false"):
        raise RuntimeError(f"FASTPRUNE_BUILD_CUDA must be auto, 1 or 0, not {mode!r}")
    if mode in ("0", "off", "false"):
        return False, None
    nvcc = find_nvcc()
    if nvcc is None and mode != "auto":
        raise RuntimeError("FASTPRUNE_BUILD_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
    return nvcc is not None, nvcc


def cpu_isas() -> list[str]:
    default = "baseline;avx2;avx512" if platform.machine().lower() in ("x86_64", "amd64") else "baseline"
    isas = [s for s in os.environ.get("FASTPRUNE_CPU_ISAS", default).split(";") if s]
    bad = [s for s in isas if s not in ISA_FLAGS]
    if bad or "baseline" not in isas:
        raise RuntimeError(f"FASTPRUNE_CPU_ISAS must list baseline plus any of {list(ISA_FLAGS)}; got {isas}")
    return isas


def cuda_gencode() -> tuple[list[str], str]:
    archs = os.environ.get("FASTPRUNE_CUDA_ARCHS", "80;90+PTX")
    entries = [a.strip() for a in archs.split(";") if a.strip()]
    flags: list[str] = []
    for a in entries:
        ptx = a.endswith("+PTX")
        sm = a.replace("+PTX", "").replace(".", "")
        if not sm.isdigit():
            raise RuntimeError(f"bad entry {a!r} in FASTPRUNE_CUDA_ARCHS")
        flags += ["-gencode", f"arch=compute_{sm},code=sm_{sm}"]
        if ptx:
            flags += ["-gencode", f"arch=compute_{sm},code=compute_{sm}"]
    return flags, ";".join(entries)


def q(args) -> str:
    return " ".join(shlex.quote(str(a)) for a in args)


class NinjaBuildExt(build_ext):
    """Writes build.ninja for the extension and runs ninja (parallel, incremental)."""

    def build_extension(self, ext: Extension) -> None:
        import pybind11

        with_cuda, nvcc = cuda_mode()
        isas = cpu_isas()
        debug = os.environ.get("FASTPRUNE_DEBUG") == "1"
        out = Path(self.get_ext_fullpath(ext.name)).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(self.build_temp).resolve() / "fastprune_C"
        tmp.mkdir(parents=True, exist_ok=True)

        cxx = os.environ.get("CXX", "g++")
        py_inc = sysconfig.get_paths()["include"]
        defines = [f"-DFASTPRUNE_VERSION=\"{self.distribution.get_version()}\""]
        defines += [f"-DFASTPRUNE_HAVE_{isa.upper()}" for isa in isas if isa != "baseline"]
        archs = ""
        cuda_flags: list[str] = []
        cuda_inc: list[str] = []
        ldflags = ["-shared", "-fopenmp"]
        if with_cuda:
            home = cuda_home(nvcc)
            cuda_flags, archs = cuda_gencode()
            defines += ["-DFASTPRUNE_WITH_CUDA", f"-DFASTPRUNE_CUDA_ARCHS=\"{archs}\""]
            cuda_inc = [f"-isystem{home / 'include'}"]
            lib = home / "lib64" if (home / "lib64").exists() else home / "lib"
            # static cudart: the module imports on machines without a driver or GPU
            ldflags += [f"-L{lib}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
        opt = ["-O0", "-g"] if debug else ["-O3"]
        cflags = (["-std=c++17", "-fPIC", "-fvisibility=hidden", "-fopenmp", "-Wall", "-Wextra", "-Werror",
                   f"-I{CSRC / 'include'}", f"-isystem{pybind11.get_include()}", f"-isystem{py_inc}"]
                  + opt + defines + cuda_inc)

        lines = [
            "ninja_required_version = 1.3",
            f"cxx = {cxx}",
            f"cflags = {q(cflags)}",
            f"rule cxx\n  command = $cxx -MMD -MF $out.d $cflags $extra -c $in -o $out\n  depfile = $out.d\n  deps = gcc\n  description = CXX $out",
            f"rule link\n  command = $cxx $in -o $out {q(ldflags)}\n  description = LINK $out",
        ]
        objects: list[Path] = []

        def obj_for(src: Path, tag: str = "") -> Path:
            rel = src.relative_to(CSRC).with_suffix("")
            return tmp / (str(rel).replace(os.sep, "_") + (f".{tag}" if tag else "") + ".o")

        for src in sorted(CSRC.rglob("*.cpp")):
            if src.parent == CSRC / "cpu" / "simd":
                for isa in isas:
                    o = obj_for(src, isa)
                    lines.append(f"build {q([o])}: cxx {q([src])}\n  extra = {q(ISA_FLAGS[isa] + [f'-DFASTPRUNE_ISA={isa}'])}")
                    objects.append(o)
            else:
                o = obj_for(src)
                lines.append(f"build {q([o])}: cxx {q([src])}")
                objects.append(o)
        if with_cuda:
            nvflags = (["-std=c++17", "-Xcompiler", "-fPIC,-fvisibility=hidden,-Wall,-Wextra,-Werror",
                        "-Werror", "all-warnings", "--expt-relaxed-constexpr", "-lineinfo",
                        f"-I{CSRC / 'include'}"] + (["-O0", "-g"] if debug else ["-O3"])
                       + defines + cuda_flags)
            lines.append(f"nvcc = {nvcc}\nnvflags = {q(nvflags)}")
            lines.append("rule nvcc\n  command = $nvcc -MD -MF $out.d $nvflags -c $in -o $out\n  depfile = $out.d\n"
                         "  deps = gcc\n  description = NVCC $out")
            for src in sorted(CSRC.rglob("*.cu")):
                o = obj_for(src, "cu")
                lines.append(f"build {q([o])}: nvcc {q([src])}")
                objects.append(o)
        lines.append(f"build {q([out])}: link {q(objects)}")
        (tmp / "build.ninja").write_text("\n".join(lines) + "\n")

        ninja = shutil.which("ninja")
        if ninja is None:
            import ninja as ninja_pkg  # the PyPI package ships the binary
            ninja = str(Path(ninja_pkg.BIN_DIR) / "ninja")
        cmd = [ninja, "-C", str(tmp)]
        if os.environ.get("FASTPRUNE_JOBS"):
            cmd += ["-j", os.environ["FASTPRUNE_JOBS"]]
        print(f"fastprune: building _C (cuda={'on, sm ' + archs if with_cuda else 'off'}, "
              f"cpu isas={','.join(isas)})", file=sys.stderr)
        subprocess.run(cmd, check=True)


setup(
    ext_modules=[Extension("fastprune._C", sources=[])],
    cmdclass={"build_ext": NinjaBuildExt},
)
