"""Build the C extension vuemantics_pubsub._native against the system's hiredis.

hiredis is found with `pkg-config hiredis`; when it is missing the build stops with one line
saying what to install. Extra compiler flags come from $VPS_CFLAGS (CI sets -Werror; the
sanitizer job sets -fsanitize=...).
"""

import ctypes.util
import os
import shlex
import subprocess
import sys
from glob import glob

from setuptools import Extension, setup


def pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(
            ["pkg-config", *args, "hiredis"], check=True, capture_output=True, text=True
        ).stdout
    except FileNotFoundError:
        sys.exit("error: pkg-config not found; install it (Debian/Ubuntu: apt-get install pkg-config libhiredis-dev)")
    except subprocess.CalledProcessError:
        sys.exit("error: hiredis not found by pkg-config; install it (Debian/Ubuntu: apt-get install libhiredis-dev)")
    return shlex.split(out)


def hiredis_flags() -> tuple[list[str], list[str], list[str], list[str]]:
    cflags = pkg_config("--cflags")
    libs = pkg_config("--libs")
    include_dirs = [f[2:] for f in cflags if f.startswith("-I")]
    # pkg-config's include dir may be <prefix>/include/hiredis (0.14) or <prefix>/include (1.x);
    # the sources include <hiredis/hiredis.h>, so add the parent of a .../hiredis dir
    include_dirs += [os.path.dirname(d.rstrip("/")) for d in include_dirs if d.rstrip("/").endswith("/hiredis")]
    macros = [f for f in cflags if f.startswith("-D")]
    library_dirs = [f[2:] for f in libs if f.startswith("-L")]
    libraries = [f[2:] for f in libs if f.startswith("-l")]
    return include_dirs, macros, library_dirs, libraries


include_dirs, macros, library_dirs, libraries = hiredis_flags()
# glibc before 2.34 keeps getaddrinfo_a (the cancellable DNS lookup) in libanl
if sys.platform.startswith("linux") and ctypes.util.find_library("anl"):
    libraries.append("anl")
extra = ["-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-fvisibility=hidden", *macros]
extra += shlex.split(os.environ.get("VPS_CFLAGS", ""))
link_extra = shlex.split(os.environ.get("VPS_LDFLAGS", ""))

setup(
    ext_modules=[
        Extension(
            "vuemantics_pubsub._native",
            sources=sorted(glob("src/*.c")),
            depends=sorted(glob("src/*.h")),
            include_dirs=include_dirs,
            library_dirs=library_dirs,
            libraries=libraries + ["pthread"],
            extra_compile_args=extra,
            extra_link_args=link_extra,
        )
    ],
)
