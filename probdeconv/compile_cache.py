"""JAX's persistent compilation cache for probdeconv: compiled iterations outlive the process.

Compiling the jitted iteration of a problem (expectation, back projection, accelerator)
takes seconds at the start of every run.  XLA's result depends on the program and on the
shapes and dtypes of its arrays, not on their values, so a later run on data of the same
shapes (another data set, other parameter values) can load it from disk instead of
compiling again.  Importing probdeconv switches JAX's persistent compilation cache on
(:func:`configure_compilation_cache`), in

- ``$PROBDECONV_JAX_CACHE`` when it names a directory, else
- ``$XDG_CACHE_HOME/probdeconv/jax/<cpu>`` (``~/.cache/probdeconv/jax/<cpu>``), where
  ``<cpu>`` names the processor (architecture and a hash of its feature flags), so that a
  home directory shared by different machines keeps one cache per kind of processor.

The cache stays off (everything compiles as without it) when

- ``PROBDECONV_JAX_CACHE`` is ``off``, ``0``, ``false``, ``no``, ``none`` or empty;
- JAX's own cache is configured (``JAX_COMPILATION_CACHE_DIR`` or
  ``jax.config.jax_compilation_cache_dir``): that setting is left as it is;
- the directory cannot be created or written (read-only home, full disk);
- the directory belongs to another user or others may write to it: compiled programs in
  the cache are run, so only a directory of one's own is used (JAX's documentation calls
  the cache trusted).

Programs that compile in less than :data:`MIN_COMPILE_S` are not stored (JAX's own
``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` overrides it).  The cache grows by about
one file per compiled program and problem shape; delete the directory to clear it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

import jax

__all__ = ["ENV_VAR", "MIN_COMPILE_S", "OFF_VALUES", "default_cache_dir", "cache_dir_from_env",
           "check_cache_dir", "configure_compilation_cache", "compilation_cache_status"]

logger = logging.getLogger(__name__)

ENV_VAR = "PROBDECONV_JAX_CACHE"
OFF_VALUES = ("", "0", "off", "false", "no", "none")
MIN_COMPILE_S = 0.2  # seconds; JAX's default (1 s) would skip most of probdeconv's programs
_STATUS = {"dir": None, "why": "not configured yet (import probdeconv configures it)"}


def _cpu_tag() -> str:
    """``<architecture>-<hash of the CPU feature flags>``: one cache per kind of processor."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
                    break
    except OSError:
        flags = platform.processor()
    digest = hashlib.sha256(flags.encode()).hexdigest()[:12]
    return f"{platform.machine() or 'cpu'}-{digest}"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/probdeconv/jax/<cpu>``, ``~/.cache/...`` without XDG_CACHE_HOME.

    Examples
    --------
    >>> p = default_cache_dir({"XDG_CACHE_HOME": "/scratch/me/.cache"})
    >>> p.parent
    PosixPath('/scratch/me/.cache/probdeconv/jax')
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "probdeconv" / "jax" / _cpu_tag()


def cache_dir_from_env(environ: Mapping[str, str] | None = None) -> tuple[Path | None, str]:
    """The cache directory the environment asks for, and why (``None``: leave the cache off).

    Examples
    --------
    >>> cache_dir_from_env({"PROBDECONV_JAX_CACHE": "off"})
    (None, 'switched off by PROBDECONV_JAX_CACHE=off')
    >>> cache_dir_from_env({"PROBDECONV_JAX_CACHE": "/data/jaxcache"})
    (PosixPath('/data/jaxcache'), 'PROBDECONV_JAX_CACHE')
    >>> cache_dir_from_env({"JAX_COMPILATION_CACHE_DIR": "/x"})[0] is None
    True
    """
    env = os.environ if environ is None else environ
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return None, ("JAX_COMPILATION_CACHE_DIR is set: JAX's own cache setting is kept")
    if ENV_VAR in env:
        value = env[ENV_VAR].strip()
        if value.lower() in OFF_VALUES:
            return None, f"switched off by {ENV_VAR}={env[ENV_VAR]}"
        return Path(value).expanduser(), ENV_VAR
    return default_cache_dir(env), "default"


def check_cache_dir(path: Path) -> str | None:
    """Create ``path`` (mode 0700) if needed; None when usable, else why it is not.

    Usable: a directory this user owns, that neither group nor others may write to,
    and in which a file can be created.  Never raises.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
        if not stat.S_ISDIR(info.st_mode):
            return f"{path} is not a directory"
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            return f"{path} belongs to another user (uid {info.st_uid})"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return (f"others may write to {path} (mode {stat.filemode(info.st_mode)}); "
                    f"chmod go-w it or choose another {ENV_VAR}")
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"{path} cannot be used ({type(exc).__name__}: {exc})"
    return None


def configure_compilation_cache(environ: Mapping[str, str] | None = None) -> Path | None:
    """Point JAX's persistent compilation cache at probdeconv's directory; return it.

    Called on ``import probdeconv``; call it again (before anything is compiled) after
    changing ``PROBDECONV_JAX_CACHE`` in ``os.environ``.  Returns None when the cache is
    left off (see the module documentation); :func:`compilation_cache_status` says why.
    """
    env = os.environ if environ is None else environ
    path, why = cache_dir_from_env(env)
    if path is None or jax.config.jax_compilation_cache_dir:
        _STATUS.update(dir=None, why=why if path is None else
                       "jax_compilation_cache_dir was set already: JAX's setting is kept")
        logger.debug("JAX compilation cache: %s", _STATUS["why"])
        return None
    problem = check_cache_dir(path)
    if problem is not None:
        _STATUS.update(dir=None, why=f"off: {problem}")
        logger.debug("JAX compilation cache: %s", _STATUS["why"])
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in env:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    _STATUS.update(dir=path, why=f"on ({why})")
    logger.debug("JAX compilation cache in %s", path)
    return path


def compilation_cache_status() -> tuple[Path | None, str]:
    """``(directory or None, explanation)`` of the persistent compilation cache.

    Examples
    --------
    >>> import probdeconv
    >>> directory, why = compilation_cache_status()
    >>> why.startswith(("on", "off", "switched off", "JAX", "jax"))
    True
    """
    return _STATUS["dir"], _STATUS["why"]
