"""One bound on work, checked before work (issue 23): grid sizes, long steps, the
gDDIM factor under a strong current, overflowing scales and bad optimise_grid input
each end in a one-line ValueError naming the input, before anything large is made."""

import tracemalloc

import numpy as np
import pytest
import torch

import nonrev
from nonrev.process import stiffness
from nonrev.samplers import gaussian_error, optimise_grid

GIB = 2**30


def _one_line_naming(exc_info, name):
    msg = str(exc_info.value)
    assert "\n" not in msg and len(msg) < 600 and name in msg, msg


def _small_peak(call, limit=64 * 2**20):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"{peak / 2**20:.0f} MiB allocated before the refusal"
    return info


def _score(x, t):
    return -x


@pytest.mark.parametrize("steps", [10**9, 10**7, 2**62])
def test_sample_steps_beyond_memory_are_refused_before_the_grid(steps):
    proc = nonrev.OUProcess(np.eye(16))
    info = _small_peak(lambda: nonrev.sample(_score, proc, n=2, steps=steps))
    _one_line_naming(info, "steps")
    assert "GiB" in str(info.value)


def test_a_huge_times_grid_is_refused_naming_times():
    proc = nonrev.OUProcess(np.eye(64))
    times = np.linspace(0.01, 5.0, 2_000_000)
    with pytest.raises(ValueError) as info:
        nonrev.sample(_score, proc, n=2, times=times)
    _one_line_naming(info, "times")


@pytest.mark.parametrize("kw, name", [({"T": 1e6}, "T"), ({"times": [0.1, 1.0, 1e300]}, "times")])
@pytest.mark.parametrize("method", ["ancestral", "gddim", "ddim"])
def test_steps_over_which_the_kernel_underflows_are_refused(kw, name, method):
    proc = nonrev.OUProcess(np.diag([0.5, 1.0, 1.5]))
    with pytest.raises(ValueError) as info:
        nonrev.sample(_score, proc, n=2, method=method, **kw)
    _one_line_naming(info, name)
    assert "underflows" in str(info.value)
    x, _ = nonrev.sample(_score, proc, n=2, method=method, T=100.0)  # long but fine
    assert torch.isfinite(x).all()


def _process(scale, d=4):
    U = np.diag(np.linspace(0.5, 1.5, d))
    return nonrev.OUProcess(U, scale * nonrev.optimal_q(U))


def test_a_current_too_strong_for_the_gddim_factor_is_refused_at_once():
    proc = _process(1e6)
    with pytest.raises(ValueError) as info:
        proc.gddim_factor(np.array([1.0]))
    _one_line_naming(info, "Q")
    assert "Magnus steps" in str(info.value)
    with pytest.raises(ValueError, match="Q"):
        nonrev.sample(_score, proc, n=2, steps=10, method="dpmpp_2m")


def test_the_step_estimate_follows_the_integration():
    for scale in (1.0, 10.0):
        proc = _process(scale)
        T = 6.0 / proc.relaxation_rate()
        est = stiffness.estimated_steps(proc, 0.0, T)
        proc.gddim_factor(np.array([T]))
        done = len(proc._rot.t)
        assert 0.4 < est / done < 2.5, (scale, est, done)


def test_a_long_integration_is_named_in_a_warning_before_it_starts(monkeypatch):
    monkeypatch.setattr(stiffness, "WARN_SECONDS", 0.0)
    proc = _process(300.0)
    rot = proc.frame()
    with pytest.warns(stiffness.StiffCurrentWarning, match=r"the current Q \(\|\|Q\|\|_2"):
        progress = stiffness.MagnusProgress(proc, rot, 6.0)
    assert progress.estimate > 1000


def test_progress_is_reported_while_it_runs(monkeypatch, capsys):
    monkeypatch.setattr(stiffness, "PROGRESS_AFTER_S", 0.0)
    _process(1.0).gddim_factor(np.array([2.0]))
    err = capsys.readouterr().err
    assert "gDDIM factor, Magnus integration at t =" in err and "estimated" in err


@pytest.mark.parametrize("spec", ["gamma:1e300", "rate:1e300", "gamma:1e13"])
def test_an_overflowing_current_scale_is_refused_naming_the_option(spec):
    from nonrev.process.spec import q_from_spec

    with pytest.raises(ValueError) as info:
        q_from_spec(spec, np.diag([1.0, 2.0, 3.0]))
    _one_line_naming(info, f"--q {spec}")


def test_library_refuses_an_overflowing_current():
    U = np.diag([1.0, 2.0, 3.0])
    with pytest.raises(ValueError) as info:
        nonrev.OUProcess(U, 1e13 * nonrev.optimal_q(U))
    _one_line_naming(info, "Q")
    assert nonrev.OUProcess(U, 1e10 * nonrev.optimal_q(U)).relaxation_rate() > 0


def test_gaussian_error_refuses_a_covariance_that_overflows():
    proc = nonrev.OUProcess(np.eye(3))
    with pytest.raises(ValueError) as info:
        gaussian_error(proc, np.zeros(3), 1e300 * np.eye(3))
    _one_line_naming(info, "cov")


@pytest.fixture(scope="module")
def case():
    U = np.diag([0.25, 0.75, 1.25, 1.75])
    return nonrev.OUProcess(U, nonrev.optimal_q(U)), np.zeros(4), np.diag([4.0, 1.0, 0.2, 0.05])


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"cov": np.eye(5)}, "cov"),
        ({"cov": -np.eye(4)}, "cov"),
        ({"cov": np.full((4, 4), np.nan)}, "cov"),
        ({"method": "dpm"}, "method"),
        ({"mean": np.ones(3)}, "mean"),
        ({"steps": 0}, "steps"),
        ({"T": -1.0}, "T"),
        ({"maxiter": 0}, "maxiter"),
        ({"start": "prior"}, "start"),
        # at the default horizon 6 / rate every 5-step heun grid is unstable (with T free,
        # optimise_grid may find a short horizon where one is not)
        ({"method": "heun", "steps": 5, "T": 6.0}, "steps"),
    ],
)
def test_optimise_grid_raises_instead_of_returning_a_default(case, kw, name):
    proc, m, C = case
    args = {"mean": m, "cov": C, "method": "dpmpp_2m", "steps": 5, "maxiter": 4, **kw}
    with pytest.raises(ValueError) as info:
        optimise_grid(proc, **args)
    _one_line_naming(info, name)


def test_optimise_grid_still_optimises(case):
    proc, m, C = case
    g = optimise_grid(proc, m, C, "dpmpp_2m", 5, maxiter=10)
    base = nonrev.time_grid(g[-1], 5, g[0], "log")
    err = lambda grid: gaussian_error(proc, m, C, "dpmpp_2m", times=grid)["w2"]  # noqa: E731
    assert g.shape == (6,) and err(g) <= err(base)


def test_scheduler_tables_beyond_memory_are_refused_when_it_is_made():
    pytest.importorskip("diffusers")
    from nonrev.integrations.diffusers import NonReversibleScheduler

    info = _small_peak(lambda: NonReversibleScheduler(U=np.eye(16), num_train_timesteps=10**8))
    _one_line_naming(info, "num_train_timesteps")


def test_wide_data_is_refused_before_the_cost_estimate(tmp_path):
    from click.testing import CliRunner

    from nonrev.cli import main

    X = np.random.default_rng(0).standard_normal((10, 200_000))
    np.save(tmp_path / "wide.npy", X)
    res = CliRunner().invoke(main, ["analyze", str(tmp_path / "wide.npy")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "wide.npy" in lines[0], res.output
    assert "GiB" in lines[0]
