"""Run cosipy's own image-deconvolution tests against probdeconv, imports changed only.

Usage (from the repository root; cosipy's test files are NOT part of this repository)::

    .venv/bin/python benchmarks/run_cosipy_tests.py TESTDIR [options]

TESTDIR is a directory holding cosipy test files laid out as in cosipy's ``tests/``
folder, e.g. ``TESTDIR/image_deconvolution/{conftest.py,test_*.py}``,
``TESTDIR/spacecraftfile/test_spacecraftfile.py``,
``TESTDIR/response/test_full_detector_response.py``.  Nothing in TESTDIR is changed:
the files are copied into a temporary directory, rewritten there and run with pytest
under this interpreter (use probdeconv's venv).

What the rewrite does (only import statements are touched; line numbers are kept, so a
traceback line is the line of the original cosipy file):

* ``from cosipy import test_data`` -> an object whose ``path`` is the test-data
  directory (default ``../shared/cosipy-testdata`` beside the checkout, ``--test-data``
  to change it).
* names imported from ``cosipy.image_deconvolution[.sub.module]``, ``cosipy.response``,
  ``cosipy.spacecraftfile`` and ``cosipy`` (``FullDetectorResponse``,
  ``SpacecraftFile``, ...) -> the same name from ``probdeconv.<sub.module>`` when that
  module exists, else from top-level ``probdeconv``.  ``from cosipy import response``
  gives a proxy whose attributes resolve the same way.  Known renames are tried last
  (``SpacecraftHistory`` -> ``SpacecraftFile``, cosipy 0.4's name for the orientation
  class); ``--no-alias`` turns that off.
* a name probdeconv does not provide becomes a placeholder: the test module still
  imports, and the first use of the name raises ``HarnessMissingName`` (an
  ``ImportError``) saying which cosipy name has no counterpart.  For a real user that
  import would fail at collection; the placeholder lets every other test of the file
  run.
* third-party imports (histpy, yayc, astromodels, astropy, ...) are left as they are;
  only a top-level package that is not installed (e.g. ``scoords``) is replaced by a
  placeholder of the same kind, and reported.

Note: a test module that imports ``scoords`` at module level (cosipy's
``test_full_detector_response.py`` does) registers astropy's 'spacecraftframe' for the
whole pytest session, so spacecraft-frame files open in every other test of the run.

Scope: in ``test_spacecraftfile.py`` and ``test_full_detector_response.py`` only the
tests of features image deconvolution uses are run (see ``SCOPE``); the others are
deselected and listed as out of scope (``--all-tests`` runs them too).

Output: a pass/fail table (one row per test, with the exception type and first line of
the message), the cosipy -> probdeconv name resolution table and a summary line.
``--markdown FILE`` writes the same as Markdown, ``--json FILE`` as JSON, ``--keep``
keeps the temporary directory (rewritten files, ``junit.xml``, ``pytest.log``).
Exit status 0 when every selected test passed, 1 otherwise, 2 on a usage error.

Options::

    --test-data DIR        cosipy test-data directory (default: ../shared/cosipy-testdata)
    --probdeconv-src DIR   put DIR first on PYTHONPATH (a probdeconv source tree)
    --git-ref REF          test probdeconv as committed at REF (e.g. HEAD): the
                           package is exported with `git archive` into the temporary
                           directory (read-only for the repository); useful while the
                           working tree is being changed
    -k EXPR                passed to pytest
    --all-tests            no scope filter
    --preload MODULE       import MODULE before the tests (repeatable); e.g.
                           ``--preload scoords`` registers astropy's
                           'spacecraftframe' frame as importing cosipy does
    --no-alias             no rename aliases (SpacecraftHistory -> SpacecraftFile)
    --timeout SECONDS      wall-clock limit for the pytest run (default 1800)
    --threads N            BLAS/OpenMP threads in the test process (default 1; with 1,
                           XLA's multi-threaded Eigen is switched off too)
    --markdown FILE / --json FILE / --keep / --verbose

Examples::

    .venv/bin/python benchmarks/run_cosipy_tests.py /tmp/cosipy-tests/v0.4
    .venv/bin/python benchmarks/run_cosipy_tests.py /tmp/cosipy-tests/v0.3 \\
        --markdown /tmp/cosipy-tests/v0.3.md
    .venv/bin/python benchmarks/run_cosipy_tests.py /tmp/cosipy-tests/v0.4 --git-ref HEAD

Only pytest, this interpreter's packages and the files given are used; no network.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEST_DATA = (REPO / ".." / "shared" / "cosipy-testdata").resolve()
HELPER = "_cosipy_harness"

# Tests of these files outside the list are deselected (features image deconvolution
# does not use: ARF/RMF/PHA, point-source response, plots, interpolated response,
# spacecraft location).
SCOPE = {
    "test_spacecraftfile.py": {
        # cosipy <= 0.3 (SpacecraftFile)
        "test_get_time",
        "test_get_time_delta",
        "test_get_attitude",
        "test_get_target_in_sc_frame",
        "test_get_dwell_map",
        "test_source_interval",
        # cosipy 0.4 (SpacecraftHistory)
        "test_read_only_selected_range",
        "test_interp_attitude",
        "test_select_interval",
    },
    "test_full_detector_response.py": {"test_open", "test_get_item"},
}

HELPER_SOURCE = '''\
"""Written by probdeconv's benchmarks/run_cosipy_tests.py: cosipy -> probdeconv names."""
import importlib
import json
import os
from pathlib import Path

_LOG = os.environ.get("COSIPY_HARNESS_LOG")
_ALIAS = json.loads(os.environ.get("COSIPY_HARNESS_ALIASES", "{}"))
_SEEN = set()


class HarnessMissingName(ImportError):
    """A cosipy name the harness could not find in probdeconv (or a missing package)."""


def _log(entry):
    key = json.dumps(entry, sort_keys=True)
    if _LOG and key not in _SEEN:
        _SEEN.add(key)
        with open(_LOG, "a") as f:
            f.write(key + "\\n")


class Missing:
    """Placeholder: any use raises HarnessMissingName."""

    def __init__(self, what):
        object.__setattr__(self, "_what", what)

    def _fail(self, *args, **kwargs):
        raise HarnessMissingName(object.__getattribute__(self, "_what"))

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        self._fail()

    def __setattr__(self, name, value):
        self._fail()

    __call__ = _fail
    __getitem__ = _fail
    __iter__ = _fail

    def __repr__(self):
        return "<missing " + object.__getattribute__(self, "_what") + ">"


class _TestData:
    path = Path(os.environ["COSIPY_TEST_DATA"])


test_data = _TestData()


def _candidates(origin):
    if origin == "cosipy" or not origin.startswith("cosipy."):
        return ["probdeconv"]
    for prefix in ("cosipy.image_deconvolution", "cosipy.response", "cosipy.spacecraftfile"):
        if origin == prefix or origin.startswith(prefix + "."):
            rest = origin[len(prefix):]
            out = []
            if rest:
                out.append("probdeconv" + rest)
            out.append("probdeconv")
            return out
    return ["probdeconv"]


def resolve(origin, name):
    """The probdeconv object for cosipy's origin.name (or a Missing placeholder)."""
    if origin == "cosipy" and name == "test_data":
        return test_data
    if origin == "cosipy" and name in ("image_deconvolution", "response", "spacecraftfile"):
        _log({"cosipy": origin + "." + name, "probdeconv": "proxy module"})
        return ModuleProxy(origin + "." + name)
    tried = []
    names = [name] + ([_ALIAS[name]] if name in _ALIAS else [])
    for target in names:
        for mod in _candidates(origin):
            tried.append(mod + "." + target)
            try:
                m = importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if not (mod == e.name or mod.startswith(str(e.name) + ".")):
                    # the module exists but one of its own imports is missing
                    tried[-1] += " [import failed: " + str(e) + "]"
                continue
            except ImportError as e:
                tried[-1] += " [import failed: " + str(e) + "]"
                continue
            if hasattr(m, target):
                how = "submodule" if mod != "probdeconv" else "top-level"
                how = "alias" if target != name else how
                _log({"cosipy": origin + "." + name, "probdeconv": mod + "." + target, "how": how})
                return getattr(m, target)
    what = (origin + "." + name + ": no probdeconv counterpart (tried " + ", ".join(tried) + ")")
    _log({"cosipy": origin + "." + name, "probdeconv": None, "tried": tried})
    return Missing(what)


class ModuleProxy:
    """Stands for a cosipy module: attributes resolve like `from <module> import name`."""

    def __init__(self, origin):
        object.__setattr__(self, "_origin", origin)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return resolve(object.__getattribute__(self, "_origin"), name)


def cosipy_module(dotted):
    """`import cosipy.x.y` -> proxy of the top module `cosipy`."""
    return ModuleProxy("cosipy")


def third_party(module, name=None):
    """A not-installed third-party import: module or name placeholder."""
    try:
        m = importlib.import_module(module)
    except ImportError as e:
        _log({"third_party": module, "missing": str(e)})
        what = module + (("." + name) if name else "")
        return Missing(what + ": package not installed (" + str(e) + ")")
    return getattr(m, name) if name else m
'''


# --------------------------------------------------------------------------- rewrite


def _is_cosipy(module: str | None) -> bool:
    return module is not None and (module == "cosipy" or module.startswith("cosipy."))


def _installed(top: str) -> bool:
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _rewrite_import(node: ast.stmt) -> str | None:
    """Replacement statement (one line) for an import node, or None to keep it."""
    h = f"import {HELPER} as _H"
    if isinstance(node, ast.ImportFrom):
        if node.level:
            return None
        mod = node.module
        if _is_cosipy(mod):
            parts = []
            for a in node.names:
                if a.name == "*":
                    raise SystemExit(f"star import from {mod} is not supported")
                parts.append(f"{a.asname or a.name} = _H.resolve({mod!r}, {a.name!r})")
            return "; ".join([h] + parts)
        top = (mod or "").split(".")[0]
        if top and not _installed(top):
            parts = [
                f"{a.asname or a.name} = _H.third_party({mod!r}, {a.name!r})" for a in node.names
            ]
            return "; ".join([h] + parts)
        return None
    if isinstance(node, ast.Import):
        out = []
        changed = False
        for a in node.names:
            top = a.name.split(".")[0]
            if _is_cosipy(a.name):
                changed = True
                if a.asname:
                    parent, _, leaf = a.name.rpartition(".")
                    out.append(
                        f"{a.asname} = _H.resolve({parent!r}, {leaf!r})"
                        if parent
                        else f"{a.asname} = _H.cosipy_module({a.name!r})"
                    )
                else:
                    out.append(f"cosipy = _H.cosipy_module({a.name!r})")
            elif not _installed(top):
                changed = True
                out.append(f"{a.asname or top} = _H.third_party({(a.name if a.asname else top)!r})")
            else:
                out.append(f"import {a.name}" + (f" as {a.asname}" if a.asname else ""))
        return "; ".join([h] + out) if changed else None
    return None


def rewrite_source(src: str) -> tuple[str, list[str]]:
    """Rewrite the import statements of one test file; returns (source, notes)."""
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    edits = []
    notes = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        new = _rewrite_import(node)
        if new is None:
            continue
        first, last = node.lineno - 1, node.end_lineno - 1
        line = lines[first]
        if line[: node.col_offset].strip() or lines[last][node.end_col_offset :].strip() not in (
            "",
            "\\",
        ):
            raise SystemExit(f"import on line {node.lineno} shares its line with other code")
        indent = line[: node.col_offset]
        block = [indent + new + "\n"] + ["\n"] * (last - first)  # keep line numbers
        edits.append((first, last, block))
        notes.append(f"line {node.lineno}: {ast.unparse(node)}")
    for first, last, block in sorted(edits, reverse=True):
        lines[first : last + 1] = block
    return "".join(lines), notes


def _prepend_on_first_line(src: str, modules: list[str]) -> str:
    """``import m; `` put in front of the first line (line numbers unchanged)."""
    return "".join(f"import {m}; " for m in modules) + src


def copy_and_rewrite(src_dir: Path, dst_dir: Path, verbose: bool) -> list[Path]:
    files = sorted(
        p for p in src_dir.rglob("*.py") if p.name.startswith("test_") or p.name == "conftest.py"
    )
    if not files:
        raise SystemExit(f"no test_*.py or conftest.py under {src_dir}")
    for p in files:
        rel = p.relative_to(src_dir)
        out = dst_dir / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        new, notes = rewrite_source(p.read_text())
        out.write_text(new)
        if verbose:
            print(f"# {rel}: {len(notes)} import(s) rewritten")
            for n in notes:
                print(f"#   {n}")
    return files


def deselections(dst_dir: Path) -> list[tuple[str, str]]:
    """(node id, reason) of the tests outside SCOPE."""
    out = []
    for p in sorted(dst_dir.rglob("test_*.py")):
        allowed = SCOPE.get(p.name)
        if allowed is None:
            continue
        tree = ast.parse(p.read_text())
        for node in tree.body:
            if (
                isinstance(node, ast.FunctionDef)
                and node.name.startswith("test")
                and node.name not in allowed
            ):
                out.append((f"{p.relative_to(dst_dir).as_posix()}::{node.name}", "out of scope"))
    return out


# --------------------------------------------------------------------------- results


def _first_line(text: str | None) -> str:
    if not text:
        return ""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def parse_junit(path: Path, root_dir: Path) -> list[dict]:
    rows = []
    if not path.exists():
        return rows
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        cls = tc.get("classname", "")
        name = tc.get("name", "")
        parts = cls.split(".")
        test_id = f"{cls}::{name}"
        # classname is dir.dir.module[.Class]: the module is the longest prefix that is a file
        for i in range(len(parts), 0, -1):
            cand = "/".join(parts[:i]) + ".py"
            if (root_dir / cand).is_file():
                rel = cand[len("tests/") :] if cand.startswith("tests/") else cand
                test_id = "::".join([rel] + parts[i:] + [name])
                break
        outcome, message, detail = "passed", "", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = el.get("message") or ""
                detail = el.text or ""
                break
        rows.append(
            {
                "test": test_id,
                "outcome": outcome,
                "message": _first_line(message) or _first_line(detail),
                "detail": detail,
                "time": float(tc.get("time") or 0.0),
            }
        )
    return rows


def _exc_line(row: dict) -> str:
    """Exception type and message, taken from the traceback's 'E   ' lines."""
    e_lines = [l[1:].strip() for l in row["detail"].splitlines() if l.startswith("E ")]
    for l in e_lines:
        if l and not l.startswith("+") and not l.startswith("where") and not l.startswith("-"):
            return l
    return row["message"]


def _where(row: dict) -> str:
    """Last 'file:line: Exception' location of the traceback (the raising frame)."""
    locs = [
        l.strip()
        for l in row["detail"].splitlines()
        if ":" in l and l.strip().split(":")[0].endswith(".py")
    ]
    return locs[-1] if locs else ""


def render(rows, deselected, mapping, header, markdown=False) -> str:
    out = []
    w = max([len(r["test"]) for r in rows] + [len(d[0]) for d in deselected] + [10])
    counts = {}
    for r in rows:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    summary = ", ".join(
        f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped") if k in counts
    )
    summary += f", {len(deselected)} deselected (out of scope)" if deselected else ""
    if markdown:
        out.append(f"# cosipy tests against probdeconv\n\n{header}\n\n**{summary}**\n")
        out.append(
            "| test | outcome | exception / message | raised at |\n| --- | --- | --- | --- |"
        )
        for r in rows:
            msg = _exc_line(r).replace("|", "\\|")[:300] if r["outcome"] != "passed" else ""
            where = _where(r).replace("|", "\\|") if r["outcome"] != "passed" else ""
            out.append(f"| `{r['test']}` | {r['outcome']} | {msg} | {where} |")
        for d, why in deselected:
            out.append(f"| `{d}` | deselected | {why} | |")
        out.append(
            "\n## cosipy name -> probdeconv\n\n| cosipy | probdeconv | how |\n| --- | --- | --- |"
        )
        for m in mapping:
            if "third_party" in m:
                out.append(
                    f"| `{m['third_party']}` (package) | **not installed** | {m['missing']} |"
                )
            else:
                target = f"`{m['probdeconv']}`" if m["probdeconv"] else "**missing**"
                out.append(f"| `{m['cosipy']}` | {target} | {m.get('how', '')} |")
        return "\n".join(out) + "\n"
    out.append(header)
    out.append("")
    out.append(f"{'TEST'.ljust(w)}  OUTCOME   EXCEPTION / MESSAGE")
    for r in rows:
        msg = _exc_line(r)[:160] if r["outcome"] != "passed" else ""
        out.append(f"{r['test'].ljust(w)}  {r['outcome'].upper().ljust(8)}  {msg}")
    for d, why in deselected:
        out.append(f"{d.ljust(w)}  {'DESELECT'.ljust(8)}  {why}")
    out.append("")
    out.append("cosipy name -> probdeconv")
    for m in mapping:
        if "third_party" in m:
            out.append(f"  {m['third_party']} (package): NOT INSTALLED  ({m['missing']})")
        else:
            target = m["probdeconv"] or "MISSING"
            out.append(
                f"  {m['cosipy']} -> {target}"
                + (f"  [{m['how']}]" if m.get("how") and m["how"] != "top-level" else "")
            )
    out.append("")
    out.append(f"SUMMARY: {summary}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Run cosipy's image-deconvolution tests against probdeconv.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (python -m pydoc) for what is rewritten and why.",
    )
    ap.add_argument("testdir", type=Path, help="directory of cosipy test files")
    ap.add_argument("--test-data", type=Path, default=DEFAULT_TEST_DATA, help="test-data dir")
    ap.add_argument("--probdeconv-src", type=Path, help="probdeconv source tree to test")
    ap.add_argument("--git-ref", help="test probdeconv as committed at this ref")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression")
    ap.add_argument("--all-tests", action="store_true", help="no scope filter")
    ap.add_argument("--preload", action="append", default=[], metavar="MODULE", help="import first")
    ap.add_argument("--no-alias", action="store_true", help="no rename aliases")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds (pytest run)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads")
    ap.add_argument("--markdown", type=Path, help="write the table as Markdown")
    ap.add_argument("--json", type=Path, help="write results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--verbose", action="store_true", help="list rewritten imports")
    args = ap.parse_args(argv)

    if not args.testdir.is_dir():
        print(f"not a directory: {args.testdir}", file=sys.stderr)
        return 2
    if not args.test_data.is_dir():
        print(f"test-data directory not found: {args.test_data}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="cosipy-tests-"))
    tests = work / "tests"
    try:
        copy_and_rewrite(args.testdir.resolve(), tests, args.verbose)
        (work / f"{HELPER}.py").write_text(HELPER_SOURCE)
        (work / "pytest.ini").write_text("[pytest]\naddopts =\n")
        # a conftest above the test folders: modules to import before any test module
        # (e.g. --preload scoords registers astropy's 'spacecraftframe', as importing
        # cosipy does)
        top = tests / "conftest.py"
        pre = "".join(f"import {m}  # run_cosipy_tests.py --preload\n" for m in args.preload)
        if top.exists():  # keep line numbers of cosipy's own top-level conftest
            top.write_text(_prepend_on_first_line(top.read_text(), args.preload))
        else:
            top.write_text("# written by run_cosipy_tests.py\n" + pre)
        if args.git_ref:  # a snapshot of probdeconv at a commit (git archive: read-only)
            snap = work / "probdeconv-src"
            snap.mkdir()
            arch = subprocess.run(
                ["git", "-C", str(REPO), "archive", args.git_ref, "probdeconv"], capture_output=True
            )
            if arch.returncode != 0:
                print(
                    f"git archive {args.git_ref} failed: {arch.stderr.decode().strip()}",
                    file=sys.stderr,
                )
                return 2
            subprocess.run(["tar", "-x", "-C", str(snap)], input=arch.stdout, check=True)
            args.probdeconv_src = snap
        desel = [] if args.all_tests else deselections(tests)
        log = work / "resolution.jsonl"
        junit = work / "junit.xml"

        env = dict(os.environ)
        pp = [str(work)] + ([str(args.probdeconv_src.resolve())] if args.probdeconv_src else [])
        if env.get("PYTHONPATH"):
            pp.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(pp)
        env["COSIPY_TEST_DATA"] = str(args.test_data.resolve())
        env["COSIPY_HARNESS_LOG"] = str(log)
        env["COSIPY_HARNESS_ALIASES"] = json.dumps(
            {} if args.no_alias else {"SpacecraftHistory": "SpacecraftFile"}
        )
        env.setdefault("JAX_PLATFORMS", "cpu")
        n = str(args.threads)
        for var in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS",
        ):
            env[var] = n
        if args.threads == 1:
            env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
            env["XLA_FLAGS"] = env["XLA_FLAGS"].strip()
        env["MPLBACKEND"] = "Agg"

        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-c",
            str(work / "pytest.ini"),
            "--rootdir",
            str(work),
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            "--junitxml",
            str(junit),
            "-o",
            "junit_family=xunit2",
            "--tb=short",
            "-rN",
        ]
        for d, _ in desel:
            cmd += ["--deselect", f"tests/{d}"]
        if args.keyword:
            cmd += ["-k", args.keyword]
        cmd.append("tests")

        probe = subprocess.run(
            [sys.executable, "-c", "import probdeconv; print(probdeconv.__file__)"],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            print(
                "`import probdeconv` fails in the test environment; nothing run:", file=sys.stderr
            )
            print(probe.stderr.strip()[-3000:], file=sys.stderr)
            return 2

        t0 = time.time()
        with open(work / "pytest.log", "w") as logf:
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=work,
                    env=env,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    timeout=args.timeout,
                )
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = -1
        elapsed = time.time() - t0

        rows = parse_junit(junit, work)
        mapping = []
        if log.exists():
            mapping = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
            mapping.sort(key=lambda m: m.get("cosipy") or m.get("third_party"))

        def git(*a):
            r = subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True)
            return r.stdout.strip() if r.returncode == 0 else "?"

        if args.git_ref:
            source = f"git {args.git_ref} = {git('rev-parse', '--short', args.git_ref)} (exported)"
        elif args.probdeconv_src:
            source = f"{args.probdeconv_src}"
        else:
            dirty = len(git("status", "--porcelain", "--", "probdeconv").splitlines())
            source = f"working tree at {git('rev-parse', '--short', 'HEAD')}" + (
                f" with {dirty} changed path(s) under probdeconv/" if dirty else ""
            )
        header = (
            f"tests: {args.testdir.resolve()}\n"
            f"probdeconv source: {source}\n"
            f"test data: {args.test_data.resolve()}\n"
            f"probdeconv: {probe.stdout.strip()}\n"
            f"python: {sys.executable}\n"
            + (f"preloaded: {', '.join(args.preload)}\n" if args.preload else "")
            + f"pytest exit status: {rc}{' (timed out)' if rc == -1 else ''}; {elapsed:.0f} s"
        )
        if not rows:
            print(header)
            print((work / "pytest.log").read_text()[-4000:])
            print("no results (collection failed?)", file=sys.stderr)
            return 1
        print(render(rows, desel, mapping, header))
        if args.markdown:
            args.markdown.write_text(render(rows, desel, mapping, header, markdown=True))
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"header": header, "tests": rows, "deselected": desel, "mapping": mapping},
                    indent=1,
                )
            )
        if args.keep:
            print(f"kept: {work}")
        return 0 if all(r["outcome"] in ("passed", "skipped") for r in rows) else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
