"""``probdeconv sample``: posterior sampling from a YAML file, and reports of its output.

The YAML file has the ``model_definition`` section of a run file (``nside`` and the energy
edges are taken from the data), a ``prior:`` section
(:mod:`probdeconv.config.priors`) and a ``sampling:`` section whose
``method`` picks the sampler and whose other keys are that sampler's options (see
:func:`probdeconv.results.sampling.sample`), e.g.::

    sampling: {method: nuts, num_warmup: 500, num_samples: 1000, chains: 2, seed: 0,
               target_accept: 0.8, dense_mass: false}

Outputs in ``--out`` (a posterior directory, :mod:`probdeconv.io.posterior`): ``posterior.h5``
(maps, the marker), ``draws.h5``, ``posterior.nc`` (ArviZ DataTree),
``posterior_E<e>.fits``, ``summary.yml``, ``config.yml``, ``run.yml``, ``run.log``,
``report.md`` and ``figures/``.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from ..config import Parameters
from ..config.priors import check_prior_section
from ..errors import FileFormatError, ParameterError
from ..results.posterior import Posterior
from ..results.sampling import sample
from ..shell.point_sources import relative_catalogue
from ..shell.problem import problem_from_parameters
from ..version import __version__
from .common import (
    apply_overrides,
    check_output_directory,
    claim_output_directory,
    fit_model_to_data,
    load_data_directory,
    mark_running,
    read_run_record,
    start_run_log,
    write_text,
)
from .devices import process_out, refuse_unsplit, start_devices

__all__ = ["sample_command", "posterior_report_command", "SECTIONS"]

logger = logging.getLogger(__name__)

SECTIONS = ("model_definition", "prior", "sampling")


def sample_command(args) -> str:
    """Run the sampler of a YAML file on a data directory and write a posterior directory.

    Nothing is created before the inputs are validated; ``--out`` must be empty unless
    ``--overwrite`` (which removes an earlier run's outputs first) and is locked while the
    sampler writes into it.
    """
    mesh = start_devices(args)  # before JAX starts (--devices, several hosts)
    args.out = str(process_out(args.out))
    out = Path(args.out)
    check_output_directory(out, overwrite=args.overwrite)
    params = Parameters.open(args.config)
    apply_overrides(params, args.set, args.config, SECTIONS)
    refuse_unsplit(params, mesh, point_sources=False)  # added before the split here
    if "sampling" not in params or "sampling:method" not in params:
        raise ParameterError(f"{args.config}: sampling:method is missing; add a section like "
                             "sampling: {method: nuts, num_samples: 1000} (see models/nuts.yml).")
    check_prior_section(params.get("prior"), "prior")  # before the data are read
    data, truth = load_data_directory(args.data, dtype="float32" if args.float32 else "float64",
                                      precision=args.precision)
    if "model_definition" in params:
        fit_model_to_data(params, data, args.set)
        sources = params.get("model_definition:point_sources")
        if sources is not None:  # point sources beside the image: fluxes in bkg_norm
            data = data.with_point_sources(relative_catalogue(sources, args.config))
    if mesh is not None:
        data.shard(mesh)
    prior = params.get("prior")
    problem = problem_from_parameters([data], prior.to_dict() if prior is not None else None)
    options = params["sampling"].to_dict()
    method = str(options.pop("method"))
    if args.seed is not None:
        options["seed"] = int(args.seed)
    options.setdefault("progress_bar", not args.quiet)  # every phase: start, sampling, draws
    options.setdefault("store_path", str(out / "draws.h5"))
    with claim_output_directory(out, overwrite=args.overwrite):
        start_run_log(out)
        mark_running(out, "sample")
        params.dump(out / "config.yml")
        t0 = time.perf_counter()
        post = sample(problem, method, **options)
        elapsed = time.perf_counter() - t0
        meta = {"probdeconv_version": __version__, "python": platform.python_version(),
                "command": "sample", "config": str(args.config), "data": str(args.data),
                "overrides": list(args.set), "method": method, "seconds": round(elapsed, 3),
                "dtype": "float32" if args.float32 else "float64", "precision": args.precision}
        with tqdm(total=2, desc="saving posterior", unit="step", disable=args.quiet,
                  leave=False) as bar:
            logger.info("sample: %s done in %.1f s; writing maps, draws and diagnostics",
                        method, elapsed)
            post.save(out)
            bar.update()
            logger.info("sample: writing the report")
            post.report(out, truth=truth)
            bar.update()
        write_text(out / "run.yml", yaml.safe_dump({**meta, "status": "complete"},
                                                   sort_keys=False))
    summ = post.diagnostics().summary()
    return (f"probdeconv: {method}, {post.chains} chain(s) x {post.n_draws} draws in "
          f"{elapsed:.1f} s (max R-hat {summ['max_rhat']:.4f}, min bulk ESS "
          f"{summ['min_ess_bulk']:.0f}); posterior in {out.resolve()}")


def posterior_report_command(args) -> str:
    """Redraw the figures and report.md of a posterior directory."""

    d = Path(args.directory)
    post = Posterior.load(d)
    meta = read_run_record(d)
    truth = None
    data_dir = args.data or meta.get("data")
    if data_dir and Path(data_dir).is_dir():
        try:
            _, truth = load_data_directory(data_dir)
        except FileFormatError as exc:
            logger.warning("data directory %s not readable (%s); report without the truth",
                           data_dir, exc)
    path = post.report(d, truth=truth)
    return f"probdeconv: report written to {path.resolve()}"
