"""JAX's persistent compilation cache as probdeconv configures it (probdeconv/compile_cache.py).

The test session itself runs with the cache off (tests/conftest.py sets
``PROBDECONV_JAX_CACHE=off`` unless the developer sets it), so that no test depends on
what an earlier run left on disk; the end-to-end check runs two fresh interpreters on a
temporary cache directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probdeconv import compile_cache as cc

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["off", "OFF", "0", "false", "no", "none", "", "  "])
def test_switched_off_by_the_environment(value):
    path, why = cc.cache_dir_from_env({cc.ENV_VAR: value, "HOME": "/nonexistent"})
    assert path is None and "switched off" in why


def test_directory_from_the_environment_default_and_jax_own_setting(tmp_path):
    assert cc.cache_dir_from_env({cc.ENV_VAR: str(tmp_path / "c")}) == (tmp_path / "c",
                                                                         cc.ENV_VAR)
    path, why = cc.cache_dir_from_env({"XDG_CACHE_HOME": str(tmp_path)})
    assert why == "default" and path.parent == tmp_path / "probdeconv" / "jax"
    assert path.name == cc.default_cache_dir({"XDG_CACHE_HOME": "/x"}).name  # one per CPU
    # JAX's own variable wins over ours: probdeconv leaves JAX's setting alone
    path, why = cc.cache_dir_from_env({"JAX_COMPILATION_CACHE_DIR": str(tmp_path),
                                       cc.ENV_VAR: str(tmp_path / "c")})
    assert path is None and "JAX_COMPILATION_CACHE_DIR" in why


def test_a_directory_that_cannot_be_used_is_refused_without_raising(tmp_path):
    ok = tmp_path / "a" / "b"
    assert cc.check_cache_dir(ok) is None and ok.is_dir()
    assert (ok.stat().st_mode & 0o777) == 0o700  # created private
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    why = cc.check_cache_dir(blocker / "cache")  # under a file: cannot be created
    assert why is not None and "cannot be used" in why
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # others could plant code in it
    why = cc.check_cache_dir(shared)
    assert why is not None and "others may write" in why


def test_configure_leaves_the_cache_off_for_an_unusable_directory(tmp_path):
    import jax

    if jax.config.jax_compilation_cache_dir is not None:
        pytest.skip("this session runs with a compilation cache (PROBDECONV_JAX_CACHE set)")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cc.configure_compilation_cache({cc.ENV_VAR: str(blocker / "c")}) is None
    directory, why = cc.compilation_cache_status()
    assert directory is None and why.startswith("off:") and "cannot be used" in why
    assert jax.config.jax_compilation_cache_dir is None


_CHILD = """
import logging, sys
import jax, jax.numpy as jnp
import probdeconv
from probdeconv.compile_cache import compilation_cache_status
print("STATUS", compilation_cache_status()[0])
hits = []
class H(logging.Handler):
    def emit(self, record):
        hits.append("cache hit" in record.getMessage())
logger = logging.getLogger("jax._src.compiler")
logger.setLevel(logging.DEBUG)
logger.addHandler(H())
f = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) ** 2))
print("VALUE", float(f(jnp.arange(5.0))[-1]))
print("HIT", any(hits))
"""


def _child(env_cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION")}
    env.update({cc.ENV_VAR: env_cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"})
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "jaxcache"
    first = _child(str(cache))
    assert first["STATUS"] == str(cache) and first["HIT"] == "False"
    written = sorted(p.name for p in cache.iterdir())
    assert written, "the first process wrote no cache entry"
    second = _child(str(cache))
    assert second["HIT"] == "True" and second["VALUE"] == first["VALUE"]
    assert sorted(p.name for p in cache.iterdir()) == written  # nothing new to store
    off = _child("off")
    assert off["STATUS"] == "None" and off["HIT"] == "False" and off["VALUE"] == first["VALUE"]
